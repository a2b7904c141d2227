"""Unit tests: apnsd.Client against a fake daemon (tests/fake_daemon.py)."""

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import apnsd  # noqa: E402
from apnsd import (  # noqa: E402
    ApnsdError, Client, ConnectionLost, DaemonUnreachable, ProtocolError, Result, Timeout,
)
from tests.fake_daemon import FakeDaemon  # noqa: E402

OK_TOKEN = "a1b2c3d4" * 8


class FakeDaemonCase(unittest.TestCase):
    timeout = 5.0

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apnsd-ut-")
        self.path = os.path.join(self.tmp, "apnsd.sock")
        self.daemon = FakeDaemon(self.path).start()
        self.client = Client(self.path, timeout=self.timeout)

    def tearDown(self):
        self.client.close()
        self.daemon.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class TestSendAndResults(FakeDaemonCase):
    def test_success(self):
        r = self.client.send(OK_TOKEN, alert="Hello", badge=3, sound="default")
        self.assertIsInstance(r, Result)
        self.assertTrue(r.ok)
        self.assertEqual(r.status, 200)
        uuid.UUID(r.apns_id)
        self.assertFalse(r.unregistered)
        self.assertFalse(r.retryable)
        self.assertFalse(r.queued)
        self.assertIsNone(r.error)
        self.assertEqual(r.raw["echo_token"], OK_TOKEN)
        req = self.daemon.requests[-1]
        self.assertEqual(req["op"], "send")
        self.assertEqual(req["token"], OK_TOKEN)
        self.assertEqual((req["alert"], req["badge"], req["sound"]), ("Hello", 3, "default"))
        self.assertNotIn("wait", req)     # default left to apnsd
        self.assertNotIn("app", req)      # None fields are left out
        self.assertNotIn("payload", req)

    def test_unregistered(self):
        r = self.client.send("0410" + "00" * 30)
        self.assertFalse(r.ok)
        self.assertEqual((r.status, r.reason, r.timestamp), (410, "Unregistered", 1700000000000))
        self.assertTrue(r.unregistered)
        self.assertFalse(r.retryable)

    def test_expired_token_reason_is_unregistered(self):
        r = Result({"ok": False, "status": 400, "reason": "ExpiredToken"})
        self.assertTrue(r.unregistered)

    def test_bad_device_token(self):
        r = self.client.send("0400" + "00" * 30)
        self.assertEqual((r.ok, r.status, r.reason), (False, 400, "BadDeviceToken"))
        self.assertFalse(r.unregistered)

    def test_retryable(self):
        r = self.client.send("0429" + "00" * 30)
        self.assertEqual(r.status, 429)
        self.assertTrue(r.retryable)
        # apnsd's own field wins over the inference
        self.assertFalse(Result({"ok": False, "status": 503, "retryable": False}).retryable)
        self.assertTrue(Result({"ok": False, "error": "queue_full", "retryable": True}).retryable)

    def test_daemon_errors_are_results(self):
        r = self.client.send("xyz")
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "invalid_token")
        self.assertTrue(r.message)
        self.assertIsNone(r.status)
        r = self.client.send(OK_TOKEN, app="nope")
        self.assertEqual(r.error, "unknown_app")

    def test_queued(self):
        r = self.client.send(OK_TOKEN, alert="x", wait=False)
        self.assertTrue(r.ok)
        self.assertTrue(r.queued)
        self.assertIs(self.daemon.requests[-1]["wait"], False)

    def test_ios_token_format_passed_through(self):
        logged = "<a1b2c3d4 e5f6a7b8 a1b2c3d4 e5f6a7b8 A1B2C3D4 e5f6a7b8 a1b2c3d4 e5f6a7b8>"
        r = self.client.send(logged, alert="hi")
        self.assertTrue(r.ok)
        self.assertEqual(self.daemon.requests[-1]["token"], logged)  # untouched

    def test_bytes_token_hex_encoded(self):
        self.client.send(bytes.fromhex(OK_TOKEN))
        self.assertEqual(self.daemon.requests[-1]["token"], OK_TOKEN)

    def test_options_and_payload(self):
        exp = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
        payload = {"aps": {"content-available": 1}, "k": "v"}
        self.client.send(OK_TOKEN, payload=payload, app="demo", env="production", badge=0,
                         topic="com.example.demo", push_type="background", priority=5,
                         expiration=exp, collapse_id="c1",
                         apns_id="123e4567-e89b-12d3-a456-426614174000")
        req = self.daemon.requests[-1]
        self.assertEqual(req["payload"], payload)
        self.assertEqual(req["app"], "demo")
        self.assertEqual(req["env"], "production")
        self.assertEqual(req["badge"], 0)         # 0 is sent (clears the badge)
        self.assertEqual(req["topic"], "com.example.demo")
        self.assertEqual(req["push_type"], "background")
        self.assertEqual(req["priority"], 5)
        self.assertEqual(req["expiration"], int(exp.timestamp()))
        self.assertEqual(req["collapse_id"], "c1")
        self.assertEqual(req["apns_id"], "123e4567-e89b-12d3-a456-426614174000")

    def test_unknown_option_is_type_error(self):
        with self.assertRaises(TypeError):
            self.client.send(OK_TOKEN, colapse_id="typo")
        with self.assertRaises(TypeError):
            self.client.send(12345)

    def test_ping_status_reload(self):
        self.assertEqual(self.client.ping()["pong"], True)
        self.assertIn("apps", self.client.status())
        self.assertTrue(self.client.reload()["ok"])
        ops = [r["op"] for r in self.daemon.requests]
        self.assertEqual(ops, ["ping", "status", "reload"])

    def test_result_repr_and_dict(self):
        r = self.client.send("0410" + "00" * 30)
        self.assertIn("410", repr(r))
        d = r.to_dict()
        self.assertTrue(d["unregistered"])
        json.dumps(d)


class TestFraming(FakeDaemonCase):
    def test_one_line_per_request_utf8(self):
        self.client.send(OK_TOKEN, alert="h\u00e9llo\nworld \u2603 \U0001F600",
                         payload={"aps": {}, "x": "a\r\nb"})
        self.client.ping()
        lines = [l for l in self.daemon.raw_lines]
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertTrue(line.endswith(b"\n"))
            self.assertEqual(line.count(b"\n"), 1)
            json.loads(line.decode("utf-8"))
        self.assertEqual(self.daemon.requests[0]["alert"], "h\u00e9llo\nworld \u2603 \U0001F600")
        self.assertIn("h\u00e9llo".encode("utf-8"), lines[0])  # UTF-8, not \\u escapes

    def test_crlf_and_blank_lines_tolerated(self):
        self.daemon.crlf = True
        self.daemon.blank_lines = True
        results = self.client.send_many([OK_TOKEN] * 5)
        self.assertTrue(all(r.ok for r in results))
        self.assertTrue(self.client.ping()["pong"])

    def test_ids_unique_and_echoed(self):
        self.client.send_many([OK_TOKEN] * 10)
        self.client.ping()
        ids = [r["id"] for r in self.daemon.requests]
        self.assertEqual(len(set(ids)), 11)

    def test_id_less_error_accepted(self):
        r = self.client.send("ff10" + "00" * 30)
        self.assertEqual(r.error, "line_too_long")
        self.assertTrue(self.client.ping()["pong"])


class TestPipelining(FakeDaemonCase):
    def test_order_and_mixed_verdicts(self):
        items = []
        for i in range(300):
            kind = i % 4
            if kind == 0:
                items.append({"token": "%064x" % i, "alert": "n%d" % i})
            elif kind == 1:
                items.append(("0410" + "%060x" % i, {"badge": i}))
            elif kind == 2:
                items.append({"token": "bad-%d" % i})
            else:
                items.append("0400" + "%060x" % i)
        results = self.client.send_many(items)
        self.assertEqual(len(results), 300)
        for i, r in enumerate(results):
            kind = i % 4
            if kind == 0:
                self.assertTrue(r.ok)
                self.assertEqual(r.raw["echo_token"], "%064x" % i)
            elif kind == 1:
                self.assertEqual(r.status, 410)
                self.assertEqual(r.raw["echo_token"], "0410" + "%060x" % i)
            elif kind == 2:
                self.assertEqual(r.error, "invalid_token")
            else:
                self.assertEqual(r.reason, "BadDeviceToken")
        # pipelined: one connection
        self.assertEqual(self.daemon.connections, 1)

    def test_no_deadlock_with_big_requests_and_answers(self):
        # ~3000 x 2 KiB each way: far more than the socket buffers hold, and
        # the fake answers each line before reading the next.  A client that
        # writes everything before reading would deadlock.
        blob = "x" * 2000
        n = 3000
        items = [{"token": "ffe0%060x" % i, "payload": {"aps": {}, "blob": blob, "i": i}}
                 for i in range(n)]
        t0 = time.monotonic()
        results = self.client.send_many(items)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual([r.raw["echo_payload"]["i"] for r in results], list(range(n)))

    def test_empty(self):
        self.assertEqual(self.client.send_many([]), [])
        self.assertEqual(self.daemon.connections, 0)

    def test_bad_items(self):
        with self.assertRaises(ValueError):
            self.client.send_many([{"alert": "no token"}])
        with self.assertRaises(TypeError):
            self.client.send_many([42])
        self.assertEqual(self.daemon.requests, [])   # nothing sent at all

    def test_generator_input(self):
        results = self.client.send_many(({"token": "%064x" % i} for i in range(7)))
        self.assertEqual(len(results), 7)


class TestTimeouts(FakeDaemonCase):
    timeout = 0.3

    def test_timeout_then_recovers(self):
        self.daemon.slow_seconds = 1.5
        t0 = time.monotonic()
        with self.assertRaises(Timeout) as cm:
            self.client.send("ff51" + "00" * 30)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 1.2)
        self.assertIsInstance(cm.exception, ApnsdError)
        self.assertIsInstance(cm.exception, TimeoutError)
        # the connection was dropped; the late answer cannot be mistaken for this one
        r = self.client.send(OK_TOKEN)
        self.assertTrue(r.ok)
        self.assertEqual(r.raw["echo_token"], OK_TOKEN)
        self.assertEqual(self.daemon.connections, 2)

    def test_send_many_timeout_keeps_prefix(self):
        self.daemon.slow_seconds = 1.5
        items = [OK_TOKEN, OK_TOKEN, "ff51" + "00" * 30, OK_TOKEN]
        with self.assertRaises(Timeout) as cm:
            self.client.send_many(items)
        self.assertEqual(len(cm.exception.results), 2)
        self.assertTrue(all(r.ok for r in cm.exception.results))


class TestUnreachable(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apnsd-ut-")
        self.path = os.path.join(self.tmp, "apnsd.sock")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_missing_socket(self):
        with self.assertRaises(DaemonUnreachable) as cm:
            Client(self.path, timeout=1).send(OK_TOKEN)
        self.assertEqual(cm.exception.reason, "missing")
        self.assertIn("does not exist", str(cm.exception))
        self.assertIn(self.path, str(cm.exception))

    def test_refused(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)   # bound but never listening: a stale socket file
        s.close()
        with self.assertRaises(DaemonUnreachable) as cm:
            Client(self.path, timeout=1).ping()
        self.assertEqual(cm.exception.reason, "refused")
        self.assertIn("not listening", str(cm.exception))

    def test_permission_denied(self):
        with FakeDaemon(self.path) as daemon:
            if os.geteuid() != 0:
                os.chmod(self.path, 0)
                with self.assertRaises(DaemonUnreachable) as cm:
                    Client(self.path, timeout=1).ping()
                reason, message = cm.exception.reason, str(cm.exception)
            else:
                # root ignores permissions: try as "nobody" in a child process
                os.chmod(self.tmp, 0o755)
                os.chmod(self.path, 0o660)
                # "nobody" may not be able to read this checkout (a clone in
                # a 0700 temp dir): give it a world-readable copy.
                readable = tempfile.mkdtemp(prefix="apnsd-py-client-")
                self.addCleanup(shutil.rmtree, readable, True)
                shutil.copytree(os.path.join(ROOT, "apnsd"), os.path.join(readable, "apnsd"))
                for d, dirs, files in os.walk(readable):
                    os.chmod(d, 0o755)
                    for f in files:
                        os.chmod(os.path.join(d, f), 0o644)
                code = (
                    "import json, sys; sys.path.insert(0, %r)\n"
                    "import apnsd\n"
                    "try:\n"
                    "    apnsd.Client(%r, timeout=1).ping(); print(json.dumps(['connected', '']))\n"
                    "except apnsd.DaemonUnreachable as e:\n"
                    "    print(json.dumps([e.reason, str(e)]))\n" % (readable, self.path))

                def demote():
                    os.setgid(65534)
                    os.setgroups([])
                    os.setuid(65534)
                out, failures = None, []
                # sys.executable may live where "nobody" cannot read (pyenv
                # under /root): fall back to the system python.
                for exe in (sys.executable, "/usr/bin/python3"):
                    try:
                        out = subprocess.run([exe, "-c", code], preexec_fn=demote,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             timeout=30, cwd="/")
                    except OSError as e:
                        failures.append(str(e))
                        continue
                    if out.returncode == 0:
                        break
                    failures.append(out.stderr.decode(errors="replace")[-300:])
                    out = None
                if out is None:
                    self.skipTest("cannot run a child as nobody: %s" % failures)
                reason, message = json.loads(out.stdout.decode())
            self.assertEqual(daemon.requests, [])
        self.assertEqual(reason, "permission", message)
        self.assertIn("permission denied", message)
        self.assertIn("usermod -aG", message)   # the group membership hint


class TestConnectionRefusedByDaemon(FakeDaemonCase):
    def test_forbidden_line_without_id(self):
        self.daemon.refuse_connections = "forbidden"
        with self.assertRaises(DaemonUnreachable) as cm:
            self.client.send(OK_TOKEN, alert="x")
        self.assertEqual(cm.exception.reason, "forbidden")
        self.assertIn("peer not allowed", str(cm.exception))
        self.daemon.refuse_connections = None
        self.assertTrue(self.client.send(OK_TOKEN).ok)


class TestReconnect(FakeDaemonCase):
    def test_idle_connection_closed_by_daemon(self):
        # The daemon hangs up each connection after one answer.  (Waiting for
        # the hang-up avoids the inherent race of a send written just as the
        # daemon closes: that one correctly raises ConnectionLost.)
        self.daemon.close_after = 1
        for _ in range(3):
            self.assertTrue(self.client.send(OK_TOKEN).ok)
            self.assertTrue(self.daemon.wait_closed())
        self.assertEqual(self.daemon.count("send"), 3)   # no duplicates
        self.assertEqual(self.daemon.connections, 3)

    def test_daemon_restarted(self):
        self.assertTrue(self.client.send(OK_TOKEN).ok)
        self.daemon.stop()
        self.daemon = FakeDaemon(self.path).start()
        self.assertTrue(self.client.send(OK_TOKEN).ok)
        self.assertEqual(self.daemon.count("send"), 1)

    def test_send_not_resent_when_resend_is_off(self):
        client = Client(self.path, timeout=self.timeout, resend_unanswered=False)
        self.addCleanup(client.close)
        with self.assertRaises(ConnectionLost) as cm:
            client.send("ffd0" + "00" * 30)
        self.assertIsInstance(cm.exception, DaemonUnreachable)
        self.assertIn("not resent", str(cm.exception))
        self.assertEqual(cm.exception.written, 1)
        self.assertEqual(self.daemon.count("send", "ffd0"), 1)
        self.assertTrue(client.send(OK_TOKEN).ok)

    def test_send_resent_until_attempts_run_out(self):
        # The fake reads the notification and hangs up, every time.
        client = Client(self.path, timeout=self.timeout, max_attempts=3)
        self.addCleanup(client.close)
        with self.assertRaises(ConnectionLost) as cm:
            client.send("ffd0" + "00" * 30)
        self.assertIn("could not be resent (3 attempt(s)", str(cm.exception))
        self.assertEqual(self.daemon.count("send", "ffd0"), 3)
        self.assertEqual(cm.exception.all_results, [None])
        self.assertTrue(client.send(OK_TOKEN).ok)

    def test_ping_retried_after_written(self):
        self.daemon.drop_first_ping = True
        self.assertTrue(self.client.ping()["pong"])
        self.assertEqual(self.daemon.count("ping"), 2)

    def test_send_many_broken_midway(self):
        items = [OK_TOKEN] * 3 + ["ffd0" + "00" * 30] + [OK_TOKEN] * 3
        client = Client(self.path, timeout=self.timeout, resend_unanswered=False)
        self.addCleanup(client.close)
        with self.assertRaises(ConnectionLost) as cm:
            client.send_many(items)
        self.assertEqual(len(cm.exception.results), 3)
        self.assertEqual(cm.exception.written, 7)
        self.assertEqual(len(cm.exception.all_results), 7)
        self.assertEqual(cm.exception.all_results[3:], [None] * 4)
        self.assertEqual(self.daemon.count("send", "ffd0"), 1)

    def test_daemon_gone_for_good(self):
        self.assertTrue(self.client.ping()["pong"])
        self.daemon.stop()
        with self.assertRaises(DaemonUnreachable) as cm:
            self.client.send(OK_TOKEN)
        self.assertEqual(cm.exception.reason, "missing")


class TestProtocolErrors(FakeDaemonCase):
    def check(self, token):
        with self.assertRaises(ProtocolError):
            self.client.send(token)
        # a fresh connection is used afterwards
        self.assertTrue(self.client.send(OK_TOKEN).ok)

    def test_garbage(self):
        self.check("ff6a" + "00" * 30)

    def test_not_an_object(self):
        self.check("ffa7" + "00" * 30)

    def test_wrong_id(self):
        self.check("ff1d" + "00" * 30)

    def test_missing_id(self):
        self.check("ff0d" + "00" * 30)

    def test_garbage_inside_send_many(self):
        with self.assertRaises(ProtocolError):
            self.client.send_many([OK_TOKEN, "ff6a" + "00" * 30, OK_TOKEN])
        self.assertTrue(self.client.ping()["pong"])


class TestThreads(FakeDaemonCase):
    def test_many_threads_one_client(self):
        errors = []
        mismatches = []

        def worker(n):
            try:
                for i in range(40):
                    token = "%08x%056x" % (n, i)
                    if i % 10 == 0:
                        res = self.client.send_many([token, token])
                    else:
                        res = [self.client.send(token, alert="t%d" % n)]
                    for r in res:
                        if r.raw.get("echo_token") != token:
                            mismatches.append((token, r.raw))
                    if i % 13 == 0:
                        self.client.ping()
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(mismatches, [])
        self.assertEqual(self.daemon.count("send"), 16 * 44)
        self.assertEqual(self.daemon.connections, 1)


class TestFork(FakeDaemonCase):
    @unittest.skipUnless(hasattr(os, "fork"), "needs fork")
    def test_child_gets_own_connection(self):
        self.assertTrue(self.client.ping()["pong"])
        pid = os.fork()
        if pid == 0:  # child
            try:
                ok = self.client.send(OK_TOKEN).ok
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.WEXITSTATUS(status), 0)
        self.assertTrue(self.client.ping()["pong"])
        self.assertEqual(self.daemon.connections, 2)


if __name__ == "__main__":
    unittest.main()
