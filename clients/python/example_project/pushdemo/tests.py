"""Tests of the example project and of apnsd.django, against the REAL
daemon in demo mode (``apnsd -demo``), started here for the whole module.

run-tests.sh exports APNSD_SOCKET (read by settings.py) pointing into a
temporary directory; the daemon is started on that path.  Without it, a
temporary socket is used and the setting overridden.  A missing daemon
binary ($APNSD_BIN, default <repo>/bin/apnsd) makes these tests fail.
"""

import io
import json
import os
import subprocess
import sys

from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, override_settings

import apnsd
import apnsd.django as apnsd_django

# tests/fake_daemon.py lives in clients/python/tests/
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from apnsd.testing import DemoDaemon

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)

OK = "a1b2c3d4" * 8
GONE = "0410" + "0" * 60

_daemon = None
_override = None


def setUpModule():
    global _daemon, _override
    if os.environ.get("APNSD_SOCKET"):
        d = DemoDaemon(socket_path=settings.APNSD_SOCKET)
    else:
        d = DemoDaemon()
        _override = override_settings(APNSD_SOCKET=d.socket_path)
        _override.enable()
    d.start()
    _daemon = d


def tearDownModule():
    global _daemon, _override
    apnsd_django.reset_client()
    if _override is not None:
        _override.disable()
        _override = None
    if _daemon is not None:
        _daemon.stop()
        _daemon = None


class PushViewTests(SimpleTestCase):
    def post(self, data, json_body=False):
        if json_body:
            return self.client.post("/push/", json.dumps(data), content_type="application/json")
        return self.client.post("/push/", data)

    def test_delivered(self):
        resp = self.post({"token": OK, "alert": "Hello"})
        self.assertEqual(resp.status_code, 200)
        body = resp.json()
        self.assertIs(body["ok"], True, body)
        self.assertEqual(body["status"], 200)
        self.assertTrue(body["apns_id"])
        self.assertIs(body["unregistered"], False)

    def test_json_body_and_ios_token(self):
        logged = "<" + " ".join(OK[i:i + 8] for i in range(0, 64, 8)) + ">"
        resp = self.post({"token": logged, "alert": "Hi"}, json_body=True)
        self.assertEqual(resp.status_code, 200)
        self.assertIs(resp.json()["ok"], True, resp.json())

    def test_unregistered(self):
        body = self.post({"token": GONE, "alert": "Hello"}).json()
        self.assertIs(body["ok"], False)
        self.assertEqual(body["status"], 410)
        self.assertIs(body["unregistered"], True)
        self.assertTrue(body["timestamp"])

    def test_invalid_token(self):
        body = self.post({"token": "nope", "alert": "Hello"}).json()
        self.assertEqual(body["error"], "invalid_token")

    def test_missing_token(self):
        resp = self.post({"alert": "Hello"})
        self.assertEqual(resp.status_code, 400)

    def test_get_not_allowed(self):
        self.assertEqual(self.client.get("/push/").status_code, 405)

    def test_daemon_unreachable(self):
        with override_settings(APNSD_SOCKET="/nonexistent/apnsd.sock"):
            resp = self.post({"token": OK, "alert": "Hello"})
        self.assertEqual(resp.status_code, 503)
        self.assertIn("does not exist", resp.json()["message"])
        # the setting change was undone: the real daemon is used again
        self.assertEqual(self.post({"token": OK, "alert": "x"}).status_code, 200)


class SendPushTests(SimpleTestCase):
    def test_shared_lazy_client(self):
        apnsd_django.reset_client()
        self.assertIsNone(apnsd_django._client)
        c1 = apnsd_django.get_client()
        self.assertIs(c1, apnsd_django.get_client())
        self.assertEqual(c1.socket_path, settings.APNSD_SOCKET)

    def test_send_push(self):
        r = apnsd_django.send_push(OK, alert="Hello", badge=2)
        self.assertIsInstance(r, apnsd.Result)
        self.assertTrue(r.ok, r.raw)

    def test_default_app_setting(self):
        with override_settings(APNSD_APP="demo"):
            self.assertTrue(apnsd_django.send_push(OK, alert="x").ok)
        with override_settings(APNSD_APP="no-such-app"):
            self.assertEqual(apnsd_django.send_push(OK, alert="x").error, "unknown_app")
            # an explicit app wins over the setting
            self.assertTrue(apnsd_django.send_push(OK, alert="x", app="demo").ok)

    def test_timeout_setting(self):
        with override_settings(APNSD_TIMEOUT=3):
            self.assertEqual(apnsd_django.get_client().timeout, 3.0)

    def test_send_many(self):
        with override_settings(APNSD_APP="demo"):
            results = apnsd_django.send_many([(OK, {"badge": 1}), (GONE, {"alert": "x"}),
                                              {"token": OK, "sound": "default"}])
        self.assertEqual([r.status for r in results], [200, 410, 200])


class Device(object):
    """Stands in for a model instance with a token field."""

    def __init__(self, push_token):
        self.push_token = push_token


class SendPushMulticastTests(SimpleTestCase):
    """send_push_multicast against the fake daemon (tests/fake_daemon.py):
    the real daemon in this branch's base does not take "tokens" yet."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import shutil
        import tempfile
        from tests.fake_daemon import FakeDaemon
        cls.tmp = tempfile.mkdtemp(prefix="apnsd-dj-fake-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.fake = FakeDaemon(os.path.join(cls.tmp, "apnsd.sock")).start()
        cls.addClassCleanup(cls.fake.stop)

    def setUp(self):
        self.override = override_settings(APNSD_SOCKET=self.fake.path, APNSD_APP="demo")
        self.override.enable()
        self.addCleanup(self.override.disable)

    def test_tokens_and_instances(self):
        r = apnsd_django.send_push_multicast([OK, GONE], alert="Sale")
        self.assertIsInstance(r, apnsd.MulticastResult)
        self.assertEqual((r.sent, r.failed), (1, 1))
        self.assertEqual(r.unregistered_tokens, [GONE])
        self.assertEqual(self.fake.requests[-1]["app"], "demo")
        self.assertEqual(self.fake.requests[-1]["tokens"], [OK, GONE])
        devices = [Device(OK), Device(GONE), Device(OK)]
        r = apnsd_django.send_push_multicast(devices, token_field="push_token", alert="x",
                                             app="demo", env="production")
        self.assertEqual([x.ok for x in r], [True, False, True])
        self.assertEqual(self.fake.requests[-1]["env"], "production")
        with self.assertRaises(TypeError):
            apnsd_django.send_push_multicast(devices, alert="x")   # no .token

    def test_max_attempts_setting(self):
        with override_settings(APNSD_MAX_ATTEMPTS=1):
            self.assertEqual(apnsd_django.get_client().max_attempts, 1)
        self.assertEqual(apnsd_django.get_client().max_attempts, 5)


class ApnsdSendCommandTests(SimpleTestCase):
    def run_command(self, *args, **kwargs):
        out = io.StringIO()
        call_command("apnsd_send", *args, stdout=out, **kwargs)
        return json.loads(out.getvalue())

    def test_delivered(self):
        body = self.run_command(OK, alert="Hello", badge=1, sound="default", app="demo",
                                env="sandbox")
        self.assertIs(body["ok"], True, body)
        self.assertEqual(body["status"], 200)

    def test_payload_option(self):
        body = self.run_command(OK, "--payload", json.dumps({"aps": {"alert": "P"}, "k": 1}))
        self.assertIs(body["ok"], True, body)

    def test_bad_payload(self):
        with self.assertRaises(CommandError):
            self.run_command(OK, "--payload", "{not json")

    def test_not_delivered_is_error(self):
        with self.assertRaises(CommandError) as cm:
            self.run_command(GONE, alert="Hello")
        self.assertIn("410", str(cm.exception))
        with self.assertRaises(CommandError) as cm:
            self.run_command("zz", alert="Hello")
        self.assertIn("invalid_token", str(cm.exception))

    def test_no_wait(self):
        body = self.run_command(OK, "--no-wait", alert="Hello")
        self.assertIs(body["queued"], True, body)

    def test_unreachable(self):
        with override_settings(APNSD_SOCKET="/nonexistent/apnsd.sock"):
            with self.assertRaises(CommandError):
                self.run_command(OK, alert="Hello")

    def test_exit_codes_of_manage_py(self):
        env = dict(os.environ, APNSD_SOCKET=settings.APNSD_SOCKET)
        manage = os.path.join(PROJECT, "manage.py")
        ok = subprocess.run([sys.executable, manage, "apnsd_send", OK, "--alert", "hi"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=60)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIs(json.loads(ok.stdout.decode())["ok"], True)
        bad = subprocess.run([sys.executable, manage, "apnsd_send", GONE, "--alert", "hi"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(b"not delivered", bad.stderr)


class MulticastHelperTests(SimpleTestCase):
    """apnsd.django.send_push_multicast against the real daemon."""

    class Device:
        def __init__(self, token):
            self.token = token

    def test_send_push_multicast(self):
        devices = [self.Device(OK), self.Device(GONE), self.Device("a1b2" * 16)]
        r = apnsd_django.send_push_multicast(devices, alert="Hi all")
        self.assertFalse(r.ok)
        self.assertEqual((r.sent, r.failed), (2, 1))
        self.assertEqual(r.unregistered_tokens, [GONE])
        self.assertEqual(len(r.raw), 1)   # one multicast line
