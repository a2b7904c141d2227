"""Integration tests: apnsd.Client against the REAL daemon in demo mode.

``apnsd -demo -socket PATH`` runs local APNs stand-ins (sandbox and
production) with throwaway certificates and one app "demo" (topic
"com.example.demo", default env sandbox).  The stand-in answers by device
token prefix: 0410 -> 410 Unregistered (+timestamp), 0400 -> 400
BadDeviceToken, 0403 -> 403 Forbidden, 0429 -> 429, 0500 -> 500,
0503 -> 503, anything else 200.

The binary is $APNSD_BIN, default <repo>/bin/apnsd.  When it is missing,
these tests FAIL (setUpModule raises): they are not optional.
"""

import json
import os
import socket
import sys
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import apnsd  # noqa: E402
from apnsd.testing import DemoDaemon  # noqa: E402

daemon = None


def setUpModule():
    global daemon
    d = DemoDaemon(start_timeout=20.0)
    d.start()   # raises (-> every test here errors) if the binary is missing
    daemon = d


def tearDownModule():
    global daemon
    if daemon is not None:
        status = daemon.stop()
        daemon = None
        # SIGTERM is a graceful stop: it should not die of the signal.
        if status not in (0, None):
            raise AssertionError("apnsd exited with status %r on SIGTERM" % status)


def tok(prefix, n=0):
    """A 32-byte hex token starting with ``prefix``."""
    body = "%x" % n
    return prefix + body.rjust(64 - len(prefix), "0")


OK = tok("a1b2")


class DemoCase(unittest.TestCase):
    def setUp(self):
        self.client = apnsd.Client(daemon.socket_path, timeout=15)

    def tearDown(self):
        self.client.close()

    def assertUUID(self, value):
        self.assertIsInstance(value, str)
        uuid.UUID(value)


class TestSend(DemoCase):
    def test_success(self):
        r = self.client.send(OK, alert="Hello from apnsd-py", badge=1, sound="default")
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(r.status, 200)
        self.assertUUID(r.apns_id)
        self.assertFalse(r.unregistered)
        self.assertIsNone(r.error)

    def test_explicit_app_env_and_options(self):
        for env in ("sandbox", "production"):
            r = self.client.send(OK, alert="hi", app="demo", env=env,
                                 topic="com.example.demo", push_type="alert",
                                 priority=10, collapse_id="c1")
            self.assertTrue(r.ok, (env, r.raw))
            self.assertEqual(r.status, 200)

    def test_apns_id_passed_through(self):
        want = str(uuid.uuid4())
        r = self.client.send(OK, alert="hi", apns_id=want)
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(r.apns_id.lower(), want)

    def test_unregistered_410(self):
        r = self.client.send(tok("0410"), alert="hi")
        self.assertFalse(r.ok)
        self.assertEqual(r.status, 410, r.raw)
        self.assertEqual(r.reason, "Unregistered")
        self.assertIsInstance(r.timestamp, int)
        self.assertGreater(r.timestamp, 0)
        self.assertTrue(r.unregistered)
        self.assertFalse(r.retryable)

    def test_bad_device_token_400(self):
        r = self.client.send(tok("0400"), alert="hi")
        self.assertFalse(r.ok)
        self.assertEqual((r.status, r.reason), (400, "BadDeviceToken"), r.raw)
        self.assertFalse(r.unregistered)

    def test_forbidden_403(self):
        r = self.client.send(tok("0403"), alert="hi")
        self.assertFalse(r.ok)
        self.assertEqual(r.status, 403, r.raw)
        self.assertTrue(r.reason)

    def test_transient_statuses(self):
        # apnsd may retry these itself; either way the verdict is a refusal
        # that is worth retrying later.
        for prefix, status in (("0429", 429), ("0500", 500), ("0503", 503)):
            r = self.client.send(tok(prefix), alert="hi")
            self.assertFalse(r.ok, r.raw)
            if r.status is not None:
                self.assertEqual(r.status, status, r.raw)
            else:
                self.assertTrue(r.error, r.raw)

    def test_invalid_token(self):
        for bad in ("zz", "abc", "<0x12 34>", "a1b2-c3d4"):
            r = self.client.send(bad, alert="hi")
            self.assertFalse(r.ok)
            self.assertEqual(r.error, "invalid_token", (bad, r.raw))
            self.assertFalse(r.retryable)
            self.assertTrue(r.message)

    def test_empty_token_refused(self):
        r = self.client.send("", alert="hi")
        self.assertFalse(r.ok)
        self.assertIn(r.error, ("invalid_token", "bad_request"), r.raw)

    def test_nothing_to_send_is_refused(self):
        # PROTOCOL.md leaves this open; apnsd refuses a send without payload
        # or shorthand.  Only require a refusal by apnsd itself.
        r = self.client.send(OK)
        self.assertFalse(r.ok)
        self.assertTrue(r.error, r.raw)

    def test_unknown_app(self):
        r = self.client.send(OK, alert="hi", app="no-such-app")
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "unknown_app", r.raw)

    def test_payload_too_large(self):
        r = self.client.send(OK, payload={"aps": {"alert": "x" * 5000}})
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "payload_too_large", r.raw)

    def test_shorthand_conflict_is_bad_request(self):
        r = self.client.send(OK, alert="b", payload={"aps": {"alert": "a"}})
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "bad_request", r.raw)

    def test_full_payload(self):
        r = self.client.send(OK, payload={"aps": {"alert": {"title": "T", "body": "B"},
                                                  "badge": 2}, "order": 42})
        self.assertTrue(r.ok, r.raw)

    def test_ios_logged_token_format(self):
        raw = "a1b2c3d4e5f6a7b8" * 4
        logged = "<" + " ".join(raw[i:i + 8] for i in range(0, 64, 8)).upper() + ">"
        r = self.client.send(logged, alert="hi")
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(r.status, 200)
        r = self.client.send("<" + tok("0410")[:8] + " " + tok("0410")[8:] + ">", alert="x")
        self.assertEqual(r.status, 410, r.raw)

    def test_wait_false_is_queued(self):
        r = self.client.send(OK, alert="fire and forget", wait=False)
        self.assertTrue(r.ok, r.raw)
        self.assertTrue(r.queued)

    def test_line_too_long_keeps_connection(self):
        r = self.client.send(OK, alert="y" * (140 * 1024))  # over the default max_line_bytes (128 KiB)
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "line_too_long", r.raw)
        self.assertTrue(self.client.send(OK, alert="after").ok)


class TestSendMany(DemoCase):
    def test_200_mixed_in_order(self):
        kinds = ["ok", "410", "400", "invalid", "ok", "403", "unknown_app", "queued"]
        items = []
        for i in range(200):
            kind = kinds[i % len(kinds)]
            if kind == "ok":
                items.append({"token": tok("a1", i), "alert": "n%d" % i})
            elif kind == "410":
                items.append((tok("0410", i), {"alert": "n%d" % i}))
            elif kind == "400":
                items.append({"token": tok("0400", i), "badge": i})
            elif kind == "403":
                items.append({"token": tok("0403", i), "alert": "x"})
            elif kind == "invalid":
                items.append({"token": "not-a-token-%d" % i, "alert": "x"})
            elif kind == "unknown_app":
                items.append({"token": tok("a1", i), "alert": "x", "app": "nope"})
            else:
                items.append({"token": tok("a1", i), "alert": "x", "wait": False})
        results = self.client.send_many(items)
        self.assertEqual(len(results), 200)
        for i, r in enumerate(results):
            kind = kinds[i % len(kinds)]
            msg = (i, kind, r.raw)
            if kind == "ok":
                self.assertTrue(r.ok, msg)
                self.assertEqual(r.status, 200, msg)
                self.assertUUID(r.apns_id)
            elif kind == "410":
                self.assertEqual(r.status, 410, msg)
                self.assertTrue(r.unregistered, msg)
            elif kind == "400":
                self.assertEqual(r.reason, "BadDeviceToken", msg)
            elif kind == "403":
                self.assertEqual(r.status, 403, msg)
            elif kind == "invalid":
                self.assertEqual(r.error, "invalid_token", msg)
            elif kind == "unknown_app":
                self.assertEqual(r.error, "unknown_app", msg)
            else:
                self.assertTrue(r.queued, msg)
        ids = [r.apns_id for r in results if r.status == 200]
        self.assertEqual(len(ids), len(set(ids)))   # distinct notifications


class TestConcurrency(unittest.TestCase):
    """Load tests, on a daemon of their own so that a daemon hang here does
    not turn every other test into a timeout."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = DemoDaemon()
        cls.daemon.start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def setUp(self):
        self.client = apnsd.Client(self.daemon.socket_path, timeout=15)

    def tearDown(self):
        self.client.close()

    def test_big_pipeline(self):
        # more than the daemon's pending-request cap and the socket buffers
        n = 1500
        items = [{"token": tok("a1", i), "alert": "bulk %d " % i + "z" * 300} for i in range(n)]
        results = self.client.send_many(items)
        self.assertEqual(len(results), n)
        self.assertTrue(all(r.ok for r in results), [r.raw for r in results if not r.ok][:3])

    def test_threads_share_one_client(self):
        import threading
        errors = []

        def worker(k):
            try:
                for i in range(20):
                    prefix = "0410" if i % 5 == 0 else "a1"
                    r = self.client.send(tok(prefix, k * 100 + i), alert="t")
                    want = 410 if prefix == "0410" else 200
                    if r.status != want:
                        errors.append((k, i, r.raw))
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [])


class TestRestart(unittest.TestCase):
    """A second daemon on its own socket, restarted under a live Client."""

    def test_transparent_reconnect_after_restart(self):
        first = DemoDaemon()
        first.start()
        path = first.socket_path
        tmpdir, first._tmpdir = first._tmpdir, None   # keep the directory
        try:
            client = apnsd.Client(path, timeout=15)
            self.assertTrue(client.send(OK, alert="before").ok)
            self.assertEqual(first.stop(), 0)
            with self.assertRaises(apnsd.DaemonUnreachable) as cm:
                client.send(OK, alert="while down")
            self.assertIn(cm.exception.reason, ("missing", "refused"))
            second = DemoDaemon(socket_path=path)
            second.start()
            try:
                r = client.send(OK, alert="after")
                self.assertTrue(r.ok, r.raw)
                # and with a connection kept across the restart:
                self.assertTrue(client.ping()["pong"])
                second.stop()
                third = DemoDaemon(socket_path=path)
                third.start()
                try:
                    self.assertTrue(client.send(OK, alert="again").ok)
                finally:
                    third.stop()
            finally:
                second.stop()
            client.close()
        finally:
            import shutil
            shutil.rmtree(tmpdir, ignore_errors=True)


class TestRestartsUnderLoad(unittest.TestCase):
    """Zero failed sends across restarts, with the listening socket held as
    systemd's apnsd.socket holds it: this test binds and listens, and hands
    the socket to each apnsd it starts (LISTEN_FDS=1).  Connections made
    while no apnsd runs wait in the backlog; the client retries
    shutting_down at once on a fresh connection and resends what a stopping
    apnsd left unanswered.  (APNSD_TEST_MAX_ATTEMPTS=1 turns the client's
    retries off: the test then fails most runs with shutting_down.)"""

    THREADS = 4
    RESTARTS = 3
    PER_PHASE = 40      # successful sends to see before and after each restart

    def test_persistent_client_four_threads_three_restarts(self):
        import shutil
        import tempfile
        import threading
        import time

        tmp = tempfile.mkdtemp(prefix="apnsd-rs-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "apnsd.sock")
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(held.close)
        held.bind(path)
        held.listen(128)
        daemon = DemoDaemon(socket_path=path, listener=held).start()
        self.addCleanup(lambda: daemon.stop())
        client = apnsd.Client(path, timeout=30,
                              max_attempts=int(os.environ.get("APNSD_TEST_MAX_ATTEMPTS", "5")))
        self.addCleanup(client.close)

        stop = threading.Event()
        lock = threading.Lock()
        ok = [0]
        failures = []

        def worker(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if k % 2:
                        results = client.send_many(
                            [{"token": tok("a1", k * 10 ** 6 + i * 100 + j), "alert": "r"}
                             for j in range(32)])
                    else:
                        results = [client.send(tok("a1", k * 10 ** 6 + i), alert="r")]
                except apnsd.ApnsdError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    for r in results:
                        if r.ok:
                            ok[0] += 1
                        else:
                            failures.append(r.raw)

        def wait_for(n):
            deadline = time.monotonic() + 60
            with lock:
                target = ok[0] + n
            while time.monotonic() < deadline:
                with lock:
                    if ok[0] >= target or failures:
                        return
                time.sleep(0.02)
            self.fail("no progress: %d sends ok; apnsd log:\n%s" % (ok[0], daemon.log_tail()))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(self.THREADS)]
        for th in threads:
            th.start()
        try:
            for _ in range(self.RESTARTS):
                wait_for(self.PER_PHASE)
                self.assertEqual(daemon.stop(), 0, "apnsd did not stop cleanly on SIGTERM")
                daemon = DemoDaemon(socket_path=path, listener=held).start()
            wait_for(self.PER_PHASE)
        finally:
            stop.set()
            for th in threads:
                th.join(60)
        self.assertEqual(failures[:5], [])
        self.assertGreaterEqual(ok[0], (self.RESTARTS + 1) * self.PER_PHASE)
        # The one connection died at each restart: the client reconnected.
        self.assertGreaterEqual(client.stats["connects"], self.RESTARTS + 1)
        sys.stderr.write("\n  restarts under load: %d sends ok, 0 failed, client stats %r\n"
                         % (ok[0], client.stats))


class TestOps(DemoCase):
    def test_ping(self):
        p = self.client.ping()
        self.assertIs(p.get("ok"), True)
        self.assertIs(p.get("pong"), True)
        self.assertIsInstance(p.get("version"), str)

    def test_status(self):
        s = self.client.status()
        self.assertIs(s.get("ok"), True, s)
        self.assertIn("apps", s)
        self.assertIn("demo", json.dumps(s["apps"]))

    def test_reload(self):
        r = self.client.reload()
        self.assertIn("ok", r)
        self.assertIs(r["ok"], True, r)
        self.assertTrue(self.client.send(OK, alert="after reload").ok)


class TestRawProtocol(unittest.TestCase):
    """A few framing rules checked with a bare socket, as socat would."""

    def roundtrip(self, data, nlines):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        try:
            s.connect(daemon.socket_path)
            s.sendall(data)
            buf = b""
            while buf.count(b"\n") < nlines:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return [json.loads(l) for l in buf.split(b"\n") if l.strip()]
        finally:
            s.close()

    def test_bad_json_keeps_connection_and_order(self):
        out = self.roundtrip(b'this is not json\n\n{"op":"ping","id":"p1"}\r\n'
                             b'{"id":7,"token":"zz"}\n', 3)
        self.assertEqual(len(out), 3, out)
        self.assertEqual(out[0].get("error"), "bad_json", out)
        self.assertEqual(out[1].get("id"), "p1")
        self.assertIs(out[1].get("pong"), True)
        self.assertEqual(out[2].get("id"), 7)
        self.assertEqual(out[2].get("error"), "invalid_token")

    def test_unknown_op(self):
        out = self.roundtrip(b'{"op":"frobnicate","id":"x"}\n', 1)
        self.assertEqual(out[0].get("error"), "unknown_op", out)
        self.assertEqual(out[0].get("id"), "x")


if __name__ == "__main__":
    unittest.main()


class TestMulticastIntegration(DemoCase):
    """send_multicast against the real daemon (protocol 1.1 multicast)."""

    def test_mixed_results_in_order_with_counts(self):
        bad = "not-a-token"
        tokens = [OK, tok("0410", 1), tok("0400", 2), bad, tok("a1b2", 3)]
        r = self.client.send_multicast(tokens, alert="hi")
        self.assertFalse(r.ok)
        self.assertEqual((r.sent, r.failed), (2, 3), [x.raw for x in r.results])
        self.assertEqual(len(r.results), 5)
        self.assertEqual(r.results[0].status, 200)
        self.assertUUID(r.results[0].apns_id)
        self.assertEqual((r.results[1].status, r.results[1].reason), (410, "Unregistered"))
        self.assertTrue(r.results[1].unregistered)
        self.assertIsInstance(r.results[1].timestamp, int)
        self.assertEqual((r.results[2].status, r.results[2].reason), (400, "BadDeviceToken"))
        self.assertEqual(r.results[3].error, "invalid_token")
        self.assertTrue(r.results[4].ok)
        self.assertEqual(r.unregistered_tokens, [tokens[1]])
        self.assertEqual(r.failed_tokens, [tokens[1], tokens[2], bad])
        # One request line for the five: the daemon answered with counts.
        self.assertEqual(len(r.raw), 1)
        self.assertEqual((r.raw[0]["sent"], r.raw[0]["failed"]), (2, 3))

    def test_2500_tokens_through_the_real_line_limit(self):
        # apnsd's default max_line_bytes (128 KiB) takes 1000 tokens of 64
        # hex digits, and so does the client's default: three lines.
        tokens = [tok("a1b2", i) for i in range(2500)]
        r = self.client.send_multicast(tokens, alert="many")
        self.assertTrue(r.ok, [x.raw for x in r.results if not x.ok][:3])
        self.assertEqual((r.sent, r.failed), (2500, 0))
        for raw in r.raw:
            self.assertTrue(raw["ok"], raw.get("message"))
        self.assertEqual([len(raw["results"]) for raw in r.raw], [1000, 1000, 500])
        self.assertEqual([x.raw["token"] for x in r.results], tokens)

    def test_long_tokens_are_split_by_bytes(self):
        # 1000 tokens of 200 hex digits would make a line over apnsd's
        # 128 KiB: the client splits by bytes and apnsd takes every line.
        tokens = ["a1b2%0196x" % i for i in range(1500)]
        r = self.client.send_multicast(tokens, alert="long")
        self.assertTrue(r.ok, [x.raw for x in r.results if not x.ok][:3])
        self.assertEqual((r.sent, r.failed), (1500, 0))
        self.assertGreaterEqual(len(r.raw), 3)   # 2 would do by count alone
        self.assertEqual([x.raw["token"] for x in r.results], tokens)

    def test_wait_false_queued_count(self):
        r = self.client.send_multicast([tok("a1b2", i) for i in range(7)], alert="q", wait=False)
        self.assertTrue(r.ok)
        self.assertEqual(r.queued, 7)
        self.assertEqual((r.sent, r.failed), (0, 0))
        self.assertEqual(r.raw[0].get("queued"), 7)

    def test_wait_false_with_an_invalid_token(self):
        # apnsd queues the good tokens and refuses the bad one in its own
        # entry: {"ok":false,"queued":2,"failed":1,"results":[..]}.
        tokens = ["aa", "zz", OK]
        r = self.client.send_multicast(tokens, alert="x", wait=False)
        raw = r.raw[0]
        self.assertIs(raw["ok"], False, raw)
        self.assertEqual((raw["queued"], raw["failed"], len(raw["results"])), (2, 1, 3), raw)
        self.assertFalse(r.ok)
        self.assertEqual((r.queued, r.sent, r.failed), (2, 0, 1))
        self.assertEqual([x.ok for x in r], [True, False, True])
        self.assertEqual([x.queued for x in r], [True, False, True])
        self.assertEqual(r[1].error, "invalid_token")
        self.assertFalse(r[1].retryable)
        self.assertIn("tokens[1]", r[1].message)
        self.assertEqual(r.failed_tokens, ["zz"])
        self.assertEqual(r.succeeded_tokens, ["aa", OK])
        self.assertEqual(r[2].token, OK)
        self.assertIsNone(r.error)

    def test_wait_false_only_invalid_tokens(self):
        r = self.client.send_multicast(["zz", "abc"], alert="x", wait=False)
        self.assertFalse(r.ok)
        self.assertEqual((r.queued, r.failed), (0, 2), r.raw)
        self.assertEqual([x.error for x in r], ["invalid_token", "invalid_token"])


class TestChannelsIntegration(DemoCase):
    """Broadcast channels against the real daemon and the demo's management
    stand-in."""

    def test_create_get_list_delete_and_broadcast(self):
        created = self.client.channel_create(storage="latest")
        self.assertTrue(created.ok, created.raw)
        cid = created.channel_id
        self.assertTrue(cid)
        got = self.client.channel_get(cid)
        self.assertTrue(got.ok, got.raw)
        self.assertEqual(got.channel_id, cid)
        self.assertEqual(got.storage, "latest")
        self.assertEqual(got.push_type.lower(), "liveactivity")
        listed = self.client.channel_list()
        self.assertTrue(listed.ok, listed.raw)
        self.assertIn(cid, listed.channels)
        import time
        payload = {"aps": {"event": "update", "timestamp": int(time.time()),
                           "content-state": {"score": "1-0"}}}
        sent = self.client.send_broadcast(cid, payload=payload, priority=5)
        self.assertTrue(sent.ok, sent.raw)
        self.assertEqual(sent.status, 200)
        deleted = self.client.channel_delete(cid)
        self.assertTrue(deleted.ok, deleted.raw)
        self.assertNotIn(cid, self.client.channel_list().channels)
        again = self.client.send_broadcast(cid, payload=payload)
        self.assertFalse(again.ok)
        self.assertEqual((again.status, again.reason), (400, "ChannelNotRegistered"), again.raw)
        bad = self.client.channel_create(storage="forever")
        self.assertFalse(bad.ok)
        self.assertEqual(bad.error, "bad_request")
