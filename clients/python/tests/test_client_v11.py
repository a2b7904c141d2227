"""Unit tests of the protocol 1.1 client features against the fake daemon:
retries of retryable answers, reconnect-and-resend, deadlines, multicast,
broadcast channels."""

import os
import shutil
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import apnsd  # noqa: E402
import apnsd.client as client_module  # noqa: E402
from apnsd import (  # noqa: E402
    ChannelResult, Client, ConnectionLost, MulticastResult, Result, Timeout,
)
from tests.fake_daemon import FakeDaemon  # noqa: E402

OK_TOKEN = "a1b2c3d4" * 8


def hook(prefix, times, n=0):
    """A 32-byte token for the fake's retry hooks: prefix, count, filler."""
    head = "%s%x" % (prefix, times)
    return head + ("%x" % n).rjust(64 - len(head), "0")


class Sleeps(object):
    """Records the client's backoff sleeps (and still sleeps, briefly)."""

    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)
        time.sleep(min(seconds, 0.01))


class Case(unittest.TestCase):
    timeout = 5.0

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="apnsd-ut-")
        self.path = os.path.join(self.tmp, "apnsd.sock")
        self.daemon = FakeDaemon(self.path).start()
        self.sleeps = Sleeps()
        patcher = mock.patch.object(client_module, "_sleep", self.sleeps)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.client = self.make()

    def make(self, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        c = Client(self.path, **kwargs)
        self.addCleanup(c.close)
        return c

    def tearDown(self):
        self.daemon.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sends(self, token):
        return [r for r in self.daemon.requests
                if isinstance(r, dict) and r.get("token") == token]


class TestRetries(Case):
    def test_shutting_down_is_retried_at_once_on_a_fresh_connection(self):
        t = hook("ee5d", 1)
        r = self.client.send(t, alert="x")
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(len(self.sends(t)), 2)
        self.assertEqual(self.daemon.connections, 2)    # a fresh connection
        self.assertEqual(self.sleeps.calls, [])         # at once: no backoff

    def test_shutting_down_then_the_connection_closes(self):
        self.daemon.close_on_shutting_down = True
        t = hook("ee5d", 2)
        self.assertTrue(self.client.send(t, alert="x").ok)
        self.assertEqual(len(self.sends(t)), 3)
        self.assertEqual(self.daemon.connections, 3)

    def test_queue_full_backs_off_with_jitter_on_the_same_connection(self):
        client = self.make(retry_backoff=0.2)
        t = hook("ee9f", 3)
        r = client.send(t, alert="x")
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(len(self.sends(t)), 4)
        self.assertEqual(self.daemon.connections, 1)
        self.assertEqual(len(self.sleeps.calls), 3)
        for n, slept in enumerate(self.sleeps.calls):
            base = min(1.0, 0.2 * 2 ** n)      # doubling, capped at 1 s
            self.assertGreaterEqual(slept, base * 0.5 - 1e-9)
            self.assertLessEqual(slept, base + 1e-9)

    def test_unavailable_backs_off(self):
        t = hook("ee0a", 2)
        self.assertTrue(self.client.send(t, alert="x").ok)
        self.assertEqual(len(self.sends(t)), 3)
        self.assertEqual(len(self.sleeps.calls), 2)

    def test_gives_up_after_max_attempts_with_the_last_answer(self):
        client = self.make(max_attempts=3)
        t = hook("ee9f", 9)
        r = client.send(t, alert="x")
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "queue_full")
        self.assertTrue(r.retryable)
        self.assertEqual(len(self.sends(t)), 3)

    def test_retries_off(self):
        client = self.make(max_attempts=1)
        t = hook("ee5d", 1)
        r = client.send(t, alert="x")
        self.assertEqual(r.error, "shutting_down")
        self.assertEqual(len(self.sends(t)), 1)

    def test_other_retryable_codes_are_not_retried(self):
        # "timeout" is retryable for the caller, but APNs may have it: the
        # client does not resend it on its own.
        t = "ee70" + "0" * 60
        r = self.client.send(t, alert="x")
        self.assertEqual(r.error, "timeout")
        self.assertEqual(len(self.sends(t)), 1)

    def test_apns_statuses_are_not_retried(self):
        r = self.client.send("0429" + "00" * 30)
        self.assertEqual(r.status, 429)
        self.assertEqual(self.daemon.count("send"), 1)

    def test_retries_never_outlive_the_timeout(self):
        # Real sleeps here: backoff 0.2 s doubling, timeout 0.8 s, a token
        # refused 15 times: the client must stop retrying at the deadline.
        self.sleeps.calls = None
        client_module._sleep = time.sleep
        client = self.make(timeout=0.8, retry_backoff=0.2, max_attempts=100)
        t = hook("ee9f", 15)
        r = client.send(t, alert="x")
        self.assertEqual(r.error, "queue_full")
        sends = self.sends(t)
        self.assertGreater(len(sends), 1)
        self.assertLess(len(sends), 15)
        deadlines = set(s["deadline"] for s in sends)
        self.assertEqual(len(deadlines), 1, "every resend carries the first deadline")
        deadline = deadlines.pop()
        reads = [t_read for t_read, req in zip(self.daemon.read_times, self.daemon.requests)
                 if isinstance(req, dict) and req.get("token") == t]
        for t_read in reads:
            # (slack: the fake may read a line late on a loaded machine; a
            # client ignoring the deadline would write seconds after it)
            self.assertLessEqual(t_read * 1000, deadline + 300,
                                 "a retry was written after the caller's deadline")

    def test_send_many_mixes_retries_and_keeps_order(self):
        items = []
        for i in range(40):
            kind = i % 4
            if kind == 0:
                items.append({"token": "%064x" % (i + 1), "alert": "x"})
            elif kind == 1:
                items.append({"token": hook("ee5d", 1, i), "alert": "x"})
            elif kind == 2:
                items.append({"token": hook("ee9f", 2, i), "alert": "x"})
            else:
                items.append({"token": "0410" + "%060x" % i, "alert": "x"})
        results = self.client.send_many(items)
        self.assertEqual(len(results), 40)
        for item, r in zip(items, results):
            self.assertEqual(r.raw.get("echo_token"), item["token"], r.raw)
            if item["token"].startswith("0410"):
                self.assertEqual(r.status, 410)
            else:
                self.assertTrue(r.ok, r.raw)


class TestResend(Case):
    def test_hangup_mid_pipeline_resends_what_was_not_answered(self):
        # The first connection reads 5 of the 10 lines, answers none, and
        # closes: as apnsd does when it stops reading during a shutdown.
        self.daemon.hangup_after_reading = 5
        tokens = ["%064x" % (i + 1) for i in range(10)]
        results = self.client.send_many([{"token": t, "alert": "x"} for t in tokens])
        self.assertEqual([r.raw["echo_token"] for r in results], tokens)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(self.daemon.connections, 2)
        # at least once: the 5 read on the first connection went again
        for t in tokens[:5]:
            sends = self.sends(t)
            self.assertEqual(len(sends), 2)
            self.assertEqual(sends[0]["deadline"], sends[1]["deadline"])
            self.assertNotEqual(sends[0]["id"], sends[1]["id"])

    def test_single_send_resent_after_hangup(self):
        self.daemon.hangup_after_reading = 1
        self.assertTrue(self.client.send(OK_TOKEN, alert="x").ok)
        self.assertEqual(len(self.sends(OK_TOKEN)), 2)

    def test_resend_off_raises_connection_lost(self):
        self.daemon.hangup_after_reading = 3
        client = self.make(resend_unanswered=False)
        with self.assertRaises(ConnectionLost) as cm:
            client.send_many([OK_TOKEN] * 6)
        self.assertIn("not resent", str(cm.exception))
        self.assertEqual(cm.exception.results, [])
        self.assertEqual(cm.exception.all_results, [None] * 6)

    def test_channel_create_is_not_resent(self):
        self.daemon.hangup_after_reading = 1
        with self.assertRaises(ConnectionLost):
            self.client.channel_create("latest", app="demo", env="sandbox")
        creates = [r for r in self.daemon.requests if r.get("op") == "channel_create"]
        self.assertEqual(len(creates), 1)
        # channel_list is resent; it works on the next connection
        self.assertEqual(self.client.channel_list(app="demo", env="sandbox").channels, [])

    def test_daemon_gone_during_a_resend_is_retried_until_the_deadline(self):
        # The fake hangs up mid-send and its socket disappears for a while
        # (a restart without a held socket); the client keeps trying to
        # connect until the request's deadline, and succeeds.
        self.daemon.hangup_after_reading = 1
        self.daemon.vanish_on_hangup = True
        path = self.path
        old = self.daemon

        def restart():
            while old.count("send") == 0:
                time.sleep(0.005)
            time.sleep(0.3)
            old.stop()
            self.daemon = FakeDaemon(path).start()

        client_module._sleep = time.sleep
        th = threading.Thread(target=restart)
        th.start()
        try:
            r = self.client.send(OK_TOKEN, alert="x")
        finally:
            th.join()
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(len(self.sends(OK_TOKEN)), 1)   # on the new fake

    def test_first_connect_failure_is_not_retried(self):
        self.daemon.stop()
        with self.assertRaises(apnsd.DaemonUnreachable) as cm:
            self.client.send(OK_TOKEN)
        self.assertEqual(cm.exception.reason, "missing")
        self.assertEqual(self.sleeps.calls, [])     # failed at once, no backoff


class TestDeadline(Case):
    def test_every_request_carries_the_deadline(self):
        before = time.time()
        self.client.send(OK_TOKEN, alert="x")
        self.client.send_many([OK_TOKEN, OK_TOKEN])
        self.client.send_multicast([OK_TOKEN, OK_TOKEN], alert="x")
        self.client.ping()
        self.client.status()
        self.client.channel_create("none")
        self.client.channel_list()
        after = time.time()
        self.assertEqual(len(self.daemon.requests), 8)
        for req in self.daemon.requests:
            self.assertIsInstance(req["deadline"], int, req)
            self.assertGreaterEqual(req["deadline"], int((before + self.timeout) * 1000))
            self.assertLessEqual(req["deadline"], int((after + self.timeout) * 1000) + 1)

    def test_no_deadline_without_timeout_or_when_off(self):
        self.make(timeout=None).send(OK_TOKEN)
        self.make(send_deadline=False).ping()
        for req in self.daemon.requests:
            self.assertNotIn("deadline", req)

    def test_expired_is_final(self):
        r = Result(self.client.request({"op": "send", "token": OK_TOKEN, "deadline": 1}))
        self.assertEqual(r.error, "expired")
        self.assertFalse(r.retryable)
        self.assertEqual(self.daemon.count("send"), 1)

    def test_timeout_means_past_the_deadline(self):
        client = self.make(timeout=0.3)
        self.daemon.slow_seconds = 1.0
        t0 = time.time()
        with self.assertRaises(Timeout):
            client.send("ff51" + "00" * 30)
        gave_up = time.time()
        deadline = self.daemon.requests[-1]["deadline"]
        self.assertGreaterEqual(gave_up * 1000, deadline - 1,
                                "the client gave up before the request's deadline")
        self.assertGreaterEqual(deadline, (t0 + 0.3) * 1000 - 1)

    def test_older_daemon_without_deadline_field(self):
        self.daemon.no_deadline_field = True
        with self.assertLogs("apnsd", "WARNING") as logs:
            r = self.client.send(OK_TOKEN, alert="x")
        self.assertTrue(r.ok, r.raw)
        self.assertIn("deadline", logs.output[0])
        self.assertTrue(self.client.send_many([OK_TOKEN] * 3)[2].ok)
        reqs = self.daemon.requests
        self.assertIn("deadline", reqs[0])                 # refused, not sent
        self.assertTrue(all("deadline" not in r for r in reqs[1:]))
        self.assertEqual(len(reqs), 5)
        self.assertEqual(self.daemon.connections, 1)
        # a new connection tries the field again (apnsd may have been upgraded)
        self.client.close()
        self.daemon.no_deadline_field = False
        self.client.ping()
        self.assertIn("deadline", self.daemon.requests[-1])


class TestMulticast(Case):
    def test_results_in_order_with_counts_and_helpers(self):
        gone = "0410" + "ab" * 30
        logged = "<" + OK_TOKEN[:8] + " " + OK_TOKEN[8:].upper() + ">"
        tokens = [OK_TOKEN, gone, "not-hex", bytes.fromhex("0400" + "cd" * 30), logged]
        r = self.client.send_multicast(tokens, alert="Sale", badge=1, app="demo",
                                       collapse_id="c")
        self.assertIsInstance(r, MulticastResult)
        self.assertFalse(r.ok)
        self.assertEqual((r.sent, r.failed, r.queued), (2, 3, 0))
        self.assertEqual(len(r), 5)
        self.assertEqual([x.ok for x in r], [True, False, False, False, True])
        self.assertEqual(r[1].status, 410)
        self.assertTrue(r[1].unregistered)
        self.assertEqual(r[1].token, gone)
        self.assertEqual(r[2].error, "invalid_token")
        self.assertEqual(r[3].reason, "BadDeviceToken")
        self.assertEqual(r[4].token, OK_TOKEN)               # cleaned by apnsd
        self.assertEqual(r.unregistered_tokens, [gone])      # as passed
        self.assertEqual(r.failed_tokens, tokens[1:4])
        self.assertEqual(r.succeeded_tokens, [OK_TOKEN, logged])
        self.assertEqual(r.items()[4], (logged, r[4]))
        self.assertIsNone(r.error)
        req = self.daemon.requests[0]
        self.assertEqual(req["tokens"], [OK_TOKEN, gone, "not-hex", "0400" + "cd" * 30, logged])
        self.assertNotIn("token", req)
        self.assertEqual((req["alert"], req["badge"], req["app"], req["collapse_id"]),
                         ("Sale", 1, "demo", "c"))
        self.assertEqual(len(self.daemon.requests), 1)
        self.assertIn("sent=2", repr(r))
        self.assertEqual(r.to_dict()["failed"], 3)

    def test_all_ok(self):
        r = self.client.send_multicast(("%064x" % i for i in range(1, 4)), alert="x")
        self.assertTrue(r.ok)
        self.assertEqual((r.sent, r.failed), (3, 0))
        self.assertEqual(r.unregistered_tokens, [])

    def test_more_than_1000_tokens_are_split(self):
        self.daemon.line_limit = 1 << 20
        client = self.make(max_line_bytes=1 << 20)
        tokens = ["%064x" % (i + 1) if i % 7 else "0410%060x" % i for i in range(2500)]
        r = client.send_multicast(tokens, alert="x")
        sizes = [len(q["tokens"]) for q in self.daemon.requests]
        self.assertEqual(sizes, [1000, 1000, 500])
        self.assertEqual(self.daemon.connections, 1)
        self.assertEqual([x.token for x in r], tokens)
        self.assertEqual(r.failed, len([t for t in tokens if t.startswith("0410")]))
        self.assertEqual(r.unregistered_tokens, [t for t in tokens if t.startswith("0410")])
        self.assertEqual(len(r.raw), 3)

    def test_default_line_limit_is_apnsds(self):
        self.assertEqual(apnsd.client.DEFAULT_LINE_LIMIT, 131072)
        self.assertEqual(self.client.max_line_bytes, 131072)

    def test_a_full_batch_of_64_hex_tokens_is_one_line(self):
        # 1000 tokens of 64 hex digits make a line of about 67 KB: apnsd's
        # default 128 KiB limit takes it, so the default client sends the
        # 1000 in one line.
        tokens = ["%064x" % (i + 1) for i in range(2500)]
        payload = {"aps": {"alert": "y" * 3000}}
        r = self.client.send_multicast(tokens, payload=payload)
        self.assertTrue(r.ok, [x.raw for x in r if not x.ok][:2])
        self.assertEqual([len(q["tokens"]) for q in self.daemon.requests], [1000, 1000, 500])
        self.assertGreater(len(self.daemon.raw_lines[0]), 64 * 1024)
        for line in self.daemon.raw_lines:
            self.assertLessEqual(len(line), 128 * 1024)

    def test_lines_stay_within_the_line_limit(self):
        # 1000 tokens of 200 hex digits (longer tokens than Apple's today)
        # would make a line of about 200 KB: the client splits by bytes.
        tokens = ["%0200x" % (i + 1) for i in range(2500)]
        payload = {"aps": {"alert": "y" * 3000}}
        r = self.client.send_multicast(tokens, payload=payload)
        self.assertTrue(r.ok, [x.raw for x in r if not x.ok][:2])
        self.assertEqual([x.token for x in r], tokens)
        self.assertEqual(sum(len(q["tokens"]) for q in self.daemon.requests), 2500)
        self.assertGreaterEqual(len(self.daemon.requests), 4)   # 3 would do by count alone
        for line in self.daemon.raw_lines:
            self.assertLessEqual(len(line), 128 * 1024)
        self.assertGreater(len(self.daemon.raw_lines[0]), 100 * 1024)   # no smaller than needed

    def test_a_smaller_max_line_bytes_splits_a_full_batch(self):
        # An apnsd set to the old 64 KiB limit: Client(max_line_bytes=65536).
        self.daemon.line_limit = 64 * 1024
        client = self.make(max_line_bytes=65536)
        tokens = ["%064x" % (i + 1) for i in range(1000)]
        r = client.send_multicast(tokens, alert="x")
        self.assertTrue(r.ok, [x.raw for x in r if not x.ok][:2])
        self.assertEqual(len(self.daemon.requests), 2)
        self.assertEqual(sum(len(q["tokens"]) for q in self.daemon.requests), 1000)
        for line in self.daemon.raw_lines:
            self.assertLessEqual(len(line), 64 * 1024)

    def test_wait_false_returns_the_queued_count(self):
        tokens = ["%064x" % (i + 1) for i in range(1200)]
        r = self.client.send_multicast(tokens, alert="x", wait=False)
        self.assertTrue(r.ok)
        self.assertEqual(r.queued, 1200)
        self.assertEqual((r.sent, r.failed), (0, 0))
        self.assertTrue(all(x.queued for x in r))
        self.assertEqual([q["wait"] for q in self.daemon.requests], [False, False])

    def test_wait_false_with_refused_tokens_reads_the_results(self):
        # apnsd answers {"ok":false,"queued":N,"results":[..]} when it
        # refused some tokens of a wait:false multicast.
        tokens = [OK_TOKEN, "zz", "%064x" % 7, "not-hex"]
        r = self.client.send_multicast(tokens, alert="x", wait=False)
        self.assertFalse(r.ok)
        self.assertEqual((r.queued, r.sent, r.failed), (2, 0, 2))
        self.assertEqual([x.ok for x in r], [True, False, True, False])
        self.assertEqual([x.queued for x in r], [True, False, True, False])
        self.assertEqual([x.error for x in r], [None, "invalid_token", None, "invalid_token"])
        self.assertEqual(r.failed_tokens, ["zz", "not-hex"])
        self.assertEqual(r.succeeded_tokens, [OK_TOKEN, "%064x" % 7])
        self.assertEqual(r.retryable_tokens, [])
        self.assertIsNone(r.error)            # no whole-line refusal
        self.assertEqual(len(self.daemon.requests), 1)   # nothing resent
        self.assertEqual(r.raw[0]["queued"], 2)
        self.assertIn("queued=2", repr(r))
        self.assertEqual(r.to_dict()["failed"], 2)

    def test_wait_false_counts_across_lines(self):
        # 2500 tokens in three lines; every 100th of the first 1500 is
        # invalid: two answers with results, one {"ok":true,"queued":500}.
        tokens = ["xx%062x" % i if i % 100 == 0 and i < 1500 else "%064x" % (i + 1)
                  for i in range(2500)]
        r = self.client.send_multicast(tokens, alert="x", wait=False)
        bad = [t for t in tokens if t.startswith("xx")]
        self.assertEqual(len(bad), 15)
        self.assertEqual((r.queued, r.failed, r.sent), (2485, 15, 0))
        self.assertEqual(r.failed_tokens, bad)
        self.assertEqual([("results" in raw, raw["queued"]) for raw in r.raw],
                         [(True, 990), (True, 995), (False, 500)])

    def test_wait_false_retries_the_retryable_tokens_alone(self):
        full = hook("ee9f", 1)
        r = self.client.send_multicast([OK_TOKEN, full, "zz"], alert="x", wait=False)
        self.assertEqual([x.ok for x in r], [True, True, False])
        self.assertEqual([x.queued for x in r], [True, True, False])
        self.assertEqual((r.queued, r.failed), (2, 1))
        first, second = self.daemon.requests
        self.assertEqual(second["tokens"], [full])
        self.assertIs(second["wait"], False)
        self.assertEqual(self.client.stats["retries"], 1)

    def test_retryable_tokens_are_retried_alone(self):
        slow = hook("ee9f", 1)
        going = hook("ee5d", 1, 1)
        gone = "0410" + "00" * 30
        r = self.client.send_multicast([OK_TOKEN, slow, going, gone], alert="x")
        self.assertEqual([x.ok for x in r], [True, True, True, False])
        self.assertEqual(r.sent, 3)
        first, second = self.daemon.requests
        self.assertEqual(second["tokens"], [slow, going])
        self.assertEqual(first["deadline"], second["deadline"])
        self.assertEqual(self.daemon.connections, 2)      # shutting_down: fresh connection

    def test_retryable_tokens_give_up_with_their_last_answer(self):
        client = self.make(max_attempts=2)
        stuck = hook("ee9f", 9)
        r = client.send_multicast([OK_TOKEN, stuck], alert="x")
        self.assertEqual(r[1].error, "queue_full")
        self.assertEqual(r.retryable_tokens, [stuck])
        self.assertEqual(len(self.daemon.requests), 2)

    def test_whole_line_refused(self):
        r = self.client.send_multicast([OK_TOKEN, OK_TOKEN], alert="x", app="nope")
        self.assertFalse(r.ok)
        self.assertEqual(r.error, "unknown_app")
        self.assertTrue(r.message)
        self.assertEqual([x.error for x in r], ["unknown_app"] * 2)
        self.assertEqual(r.failed, 2)

    def test_empty_does_not_ask_apnsd(self):
        r = self.client.send_multicast([], alert="x")
        self.assertTrue(r.ok)
        self.assertEqual(len(r), 0)
        self.assertEqual(self.daemon.connections, 0)

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            self.client.send_multicast([OK_TOKEN, 42], alert="x")
        with self.assertRaises(TypeError):
            self.client.send_multicast([OK_TOKEN], colapse_id="typo")
        self.assertEqual(self.daemon.requests, [])

    def test_older_daemon_message(self):
        entries = client_module._batch_failure(
            {"id": 1, "ok": False, "error": "bad_request", "message": 'unknown field "tokens"',
             "retryable": False}, ["aa", "bb"])
        self.assertEqual([e["token"] for e in entries], ["aa", "bb"])
        self.assertIn("predates multicast", entries[0]["message"])


class TestChannels(Case):
    def test_create_get_list_send_delete(self):
        c = self.client.channel_create("latest", app="demo", env="sandbox")
        self.assertIsInstance(c, ChannelResult)
        self.assertTrue(c.ok)
        cid = c.channel_id
        self.assertTrue(cid)
        req = self.daemon.requests[-1]
        self.assertEqual((req["op"], req["storage"], req["app"], req["env"]),
                         ("channel_create", "latest", "demo", "sandbox"))
        g = self.client.channel_get(cid, app="demo", env="sandbox")
        self.assertEqual((g.channel_id, g.storage, g.push_type), (cid, "latest", "liveactivity"))
        self.assertEqual(self.client.channel_list(app="demo", env="sandbox").channels, [cid])
        s = self.client.send_broadcast(cid, app="demo", env="sandbox", push_type="liveactivity",
                                       payload={"aps": {"event": "update", "timestamp": 1,
                                                        "content-state": {}}})
        self.assertTrue(s.ok, s.raw)
        req = self.daemon.requests[-1]
        self.assertEqual(req["channel_id"], cid)
        self.assertNotIn("token", req)
        d = self.client.channel_delete(cid, app="demo", env="sandbox")
        self.assertTrue(d.ok)
        self.assertEqual(self.client.channel_list(app="demo", env="sandbox").channels, [])
        self.assertIn("ChannelResult(ok=True", repr(d))

    def test_refusals_are_results(self):
        g = self.client.channel_get("nope")
        self.assertFalse(g.ok)
        self.assertEqual((g.status, g.reason), (404, "ChannelNotFound"))
        s = self.client.send_broadcast("nope", alert="x")
        self.assertEqual(s.reason, "BadChannelId")
        bad = self.client.channel_create("forever")
        self.assertEqual(bad.error, "bad_request")

    def test_bad_arguments(self):
        for call in (lambda: self.client.channel_get(""),
                     lambda: self.client.channel_delete(None),
                     lambda: self.client.send_broadcast("", alert="x")):
            with self.assertRaises(TypeError):
                call()
        self.assertEqual(self.daemon.requests, [])


class TestOptions(unittest.TestCase):
    def test_validation(self):
        with self.assertRaises(ValueError):
            Client("/x", max_attempts=0)
        with self.assertRaises(ValueError):
            Client("/x", timeout=0)
        with self.assertRaises(ValueError):
            Client("/x", retry_backoff=-1)
        self.assertIn("max_attempts=5", repr(Client("/x")))


if __name__ == "__main__":
    unittest.main()
