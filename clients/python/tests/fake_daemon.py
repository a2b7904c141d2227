"""A fake apnsd for unit tests: a threaded Unix-socket server speaking the
line protocol with canned answers.

Canned behaviour (by op, then by the cleaned device token):
  ping / status / reload         -> ok answers
  token not even-length hex      -> error invalid_token
  app not in {None, "demo"}      -> error unknown_app
  wait == false                  -> {"ok":true,"queued":true}
  token 0410...                  -> 410 Unregistered (+timestamp)
  token 0400...                  -> 400 BadDeviceToken
  token 0403 / 0429 / 0500 / 0503 -> 403 / 429 / 500 / 503
  payload (with shorthands) > 4096 bytes -> error payload_too_large
  line > 128 KiB                 -> error line_too_long (no id)
  anything else                  -> 200 with a fresh apns_id

Test hooks, selected by the token of a send:
  ffd0...  read the request, then close the connection without answering
  ff51...  sleep `slow_seconds` before answering
  ff6a...  answer a line that is not JSON
  ffa7...  answer a JSON array
  ff1d...  answer with a wrong id
  ff0d...  answer without an id
  ff10...  answer like a too-long line (error line_too_long, no id)
  ffe0...  echo the request payload back in the answer (makes answers big)

Retry hooks (counted per exact cleaned token, over the fake's life):
  ee5d<k>...  answer shutting_down (retryable) the first k times, then as usual
  ee9f<k>...  answer queue_full (retryable) the first k times
  ee0a<k>...  answer unavailable (retryable) the first k times
  ee70...     answer timeout (retryable:true, but not a code the client retries)
They work for single sends and for each token of a multicast.

Protocol 1.1:
  deadline        recorded; a request read after it is answered expired
  tokens          multicast: one answer with per-token results (the token
                  logic above), sent/failed counts; wait false ->
                  {"ok":true,"queued":N} when every token is taken, else
                  (an invalid token, a retry hook) as apnsd does
                  {"ok":false,"queued":N,"sent":0,"failed":M,"results":[..]}
                  with {"token":..,"ok":true,"queued":true} for the queued
  channel_id      broadcast send: 200 when the channel exists, else 400
                  BadChannelId
  channel_create / channel_get / channel_list / channel_delete, per (app, env)

Server-wide knobs (attributes): close_after (close each connection after
that many answers), drop_first_ping, crlf (answer with \\r\\n), blank_lines
(send an empty line before each answer), hangup_after_reading (for the
first connection only: read that many lines, answer none of them, close --
a daemon going away mid-pipeline; with vanish_on_hangup, the fake also
stops listening and removes its socket then), line_limit (bytes, default
128 KiB, as apnsd), close_on_shutting_down (close a
connection right after answering shutting_down, as apnsd does when it
stops), no_deadline_field (answer any request with "deadline" like an
apnsd older than 1.1: bad_request unknown field "deadline"), and
answer_delay (seconds to sleep before each send answer).
"""

import json
import os
import socket
import threading
import time
import uuid

HEX = set("0123456789abcdefABCDEF")


def clean_token(token):
    if not isinstance(token, str):
        return None
    t = "".join(ch for ch in token if ch not in "<> \t\r\n")
    if not t or len(t) % 2 or any(ch not in HEX for ch in t):
        return None
    return t.lower()


class FakeDaemon(object):
    def __init__(self, path):
        self.path = path
        self.requests = []          # every parsed request, in arrival order
        self.raw_lines = []         # every raw line (bytes, including "\n")
        self.connections = 0
        self.close_after = None
        self.refuse_connections = None   # e.g. "forbidden": error line, then hang up
        self.drop_first_ping = False
        self.crlf = False
        self.blank_lines = False
        self.slow_seconds = 1.0
        self.require_content = False   # like apnsd: a send needs payload or a shorthand
        self.hangup_after_reading = None
        self.vanish_on_hangup = False
        self.line_limit = 128 * 1024
        self.close_on_shutting_down = False
        self.no_deadline_field = False
        self.answer_delay = 0.0
        self.read_times = []        # time.time() at which each request line was read
        self.hook_counts = {}       # cleaned token -> times a retry hook saw it
        self.channels = {}          # (app, env) -> {channel_id: storage}
        self._pings = 0
        self._lock = threading.Lock()
        self._listener = None
        self._threads = []
        self._conns = []
        self._stopping = False

    # -------------------------------------------------------------- control

    def start(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(64)
        self._listener = s
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_closed(self, timeout=5.0):
        """Wait until the fake has closed every connection it accepted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    return True
            time.sleep(0.005)
        return False

    def count(self, op="send", token_prefix=""):
        with self._lock:
            return sum(1 for r in self.requests
                       if isinstance(r, dict) and r.get("op", "send") == op
                       and str(r.get("token", "")).startswith(token_prefix))

    # ------------------------------------------------------------- internals

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn):
        f = conn.makefile("rb")
        answered = 0
        with self._lock:
            first = self.connections == 1
        hangup = self.hangup_after_reading if first else None
        read = 0
        try:
            if self.refuse_connections:
                conn.sendall(self._line({"ok": False, "error": self.refuse_connections,
                                         "message": "peer not allowed", "retryable": False}))
                return
            while True:
                line = f.readline()
                if not line:
                    return
                with self._lock:
                    self.raw_lines.append(line)
                    self.read_times.append(time.time())
                if not line.strip():
                    continue
                read += 1
                if hangup is not None:
                    # read, never answer; hang up after the hangup-th line
                    with self._lock:
                        self.requests.append(json.loads(line.decode("utf-8")))
                    if read >= hangup:
                        if self.vanish_on_hangup:
                            # like apnsd stopping without a held socket
                            self._stopping = True
                            try:
                                self._listener.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass
                            self._listener.close()
                            os.unlink(self.path)
                        return
                    continue
                out = self._answer(line)
                if out is None:       # hook: hang up without answering
                    return
                if self.blank_lines:
                    out = b"\n" + out
                if self.crlf:
                    out = out[:-1] + b"\r\n"
                conn.sendall(out)
                answered += 1
                if self.close_on_shutting_down and b'"shutting_down"' in out:
                    return
                if self.close_after is not None and answered >= self.close_after:
                    return
        except OSError:
            return
        finally:
            f.close()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    @staticmethod
    def _line(obj):
        return json.dumps(obj).encode("utf-8") + b"\n"

    def _answer(self, line):
        if len(line) > self.line_limit:
            with self._lock:
                self.requests.append(None)
            return self._line({"ok": False, "error": "line_too_long",
                               "message": "line too long", "retryable": False})
        try:
            req = json.loads(line.decode("utf-8"))
        except ValueError:
            with self._lock:
                self.requests.append(None)
            return self._line({"ok": False, "error": "bad_json", "message": "bad JSON",
                               "retryable": False})
        with self._lock:
            self.requests.append(req)
        if not isinstance(req, dict):
            return self._line({"ok": False, "error": "bad_request",
                               "message": "not an object", "retryable": False})
        rid = req.get("id")
        base = {"id": rid} if "id" in req else {}
        op = req.get("op", "send")
        if "deadline" in req:
            if self.no_deadline_field:
                return self._line(dict(base, ok=False, error="bad_request",
                                       message='unknown field "deadline"', retryable=False))
            if not isinstance(req["deadline"], int) or req["deadline"] < time.time() * 1000:
                return self._line(dict(base, ok=False, error="expired",
                                       message="read after its deadline; not sent",
                                       retryable=False))
        if op.startswith("channel_"):
            return self._line(self._channel_op(base, op, req))
        if op == "ping":
            with self._lock:
                self._pings += 1
                drop = self.drop_first_ping and self._pings == 1
            if drop:
                return None
            return self._line(dict(base, ok=True, pong=True, version="fake-1"))
        if op == "status":
            return self._line(dict(base, ok=True, apps={"demo": {"sandbox": {"state": "up"}}}))
        if op == "reload":
            return self._line(dict(base, ok=True))
        if op != "send":
            return self._line(dict(base, ok=False, error="unknown_op", message=op,
                                   retryable=False))
        if self.answer_delay:
            time.sleep(self.answer_delay)
        if "tokens" in req:
            return self._line(self._multicast(base, req))
        if "channel_id" in req:
            key = (req.get("app"), req.get("env"))
            if req["channel_id"] in self.channels.get(key, {}):
                return self._line(dict(base, ok=True, status=200, apns_id=str(uuid.uuid4())))
            return self._line(dict(base, ok=False, status=400, reason="BadChannelId",
                                   apns_id=str(uuid.uuid4())))
        raw_token = req.get("token")
        token = clean_token(raw_token)
        hooked = self._retry_hook(token)
        if hooked is not None:
            return self._line(dict(base, **hooked))
        hook = token[:4] if token else ""
        if hook == "ffd0":
            return None
        if hook == "ff51":
            time.sleep(self.slow_seconds)
        if hook == "ff6a":
            return b"this is not json\n"
        if hook == "ffa7":
            return b"[1,2,3]\n"
        if hook == "ff1d":
            return self._line(dict(base, id="not-" + str(rid), ok=True, status=200))
        if hook == "ff0d":
            return self._line({"ok": True, "status": 200})
        if hook == "ff10":
            return self._line({"ok": False, "error": "line_too_long",
                               "message": "line too long", "retryable": False})
        if token is None:
            return self._line(dict(base, ok=False, error="invalid_token",
                                   message="bad token %r" % raw_token, retryable=False))
        if req.get("app") not in (None, "demo"):
            return self._line(dict(base, ok=False, error="unknown_app",
                                   message="no app %r" % req.get("app"), retryable=False))
        payload = req.get("payload")
        if payload is not None and not isinstance(payload, dict):
            return self._line(dict(base, ok=False, error="bad_request",
                                   message="payload must be an object", retryable=False))
        if self.require_content and payload is None and not any(
                k in req for k in ("alert", "badge", "sound")):
            return self._line(dict(base, ok=False, error="bad_request",
                                   message="nothing to send", retryable=False))
        aps = dict((payload or {}).get("aps") or {})
        for key in ("alert", "badge", "sound"):
            if key in req:
                if key in aps:
                    return self._line(dict(base, ok=False, error="bad_request",
                                           message="%s given twice" % key, retryable=False))
                aps[key] = req[key]
        full = dict(payload or {}, aps=aps)
        if len(json.dumps(full, separators=(",", ":"))) > 4096:
            return self._line(dict(base, ok=False, error="payload_too_large",
                                   message="too big", retryable=False))
        if req.get("wait") is False:
            return self._line(dict(base, ok=True, queued=True))
        resp = dict(base, echo_token=token)
        if hook == "ffe0":
            resp["echo_payload"] = req.get("payload")
        apns_id = req.get("apns_id") or str(uuid.uuid4())
        if token.startswith("0410"):
            resp.update(ok=False, status=410, reason="Unregistered", apns_id=apns_id,
                        timestamp=1700000000000)
        elif token.startswith("0400"):
            resp.update(ok=False, status=400, reason="BadDeviceToken", apns_id=apns_id)
        elif token.startswith("0403"):
            resp.update(ok=False, status=403, reason="Forbidden", apns_id=apns_id)
        elif token.startswith("0429"):
            resp.update(ok=False, status=429, reason="TooManyRequests", apns_id=apns_id)
        elif token.startswith("0500"):
            resp.update(ok=False, status=500, reason="InternalServerError", apns_id=apns_id)
        elif token.startswith("0503"):
            resp.update(ok=False, status=503, reason="ServiceUnavailable", apns_id=apns_id)
        else:
            resp.update(ok=True, status=200, apns_id=apns_id)
        return self._line(resp)

    # ------------------------------------------------------------ 1.1 ops

    def _retry_hook(self, token):
        """The retry hooks: an error dict while the hook lasts, else None."""
        if not token or token[:4] not in ("ee5d", "ee9f", "ee0a", "ee70"):
            return None
        if token[:4] == "ee70":
            return {"ok": False, "error": "timeout", "message": "no answer from APNs",
                    "retryable": True}
        times = int(token[4], 16)
        with self._lock:
            seen = self.hook_counts.get(token, 0)
            self.hook_counts[token] = seen + 1
        if seen >= times:
            return None
        code = {"ee5d": "shutting_down", "ee9f": "queue_full", "ee0a": "unavailable"}[token[:4]]
        return {"ok": False, "error": code, "message": "fake " + code, "retryable": True}

    def _token_entry(self, raw_token):
        token = clean_token(raw_token)
        if token is None:
            return {"token": raw_token, "ok": False, "error": "invalid_token",
                    "message": "bad token", "retryable": False}
        hooked = self._retry_hook(token)
        if hooked is not None:
            return dict(hooked, token=token)
        apns_id = str(uuid.uuid4())
        if token.startswith("0410"):
            return {"token": token, "ok": False, "status": 410, "reason": "Unregistered",
                    "apns_id": apns_id, "timestamp": 1700000000000}
        if token.startswith("0400"):
            return {"token": token, "ok": False, "status": 400, "reason": "BadDeviceToken",
                    "apns_id": apns_id}
        return {"token": token, "ok": True, "status": 200, "apns_id": apns_id}

    def _multicast(self, base, req):
        tokens = req.get("tokens")
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= 1000:
            return dict(base, ok=False, error="bad_request",
                        message="tokens must be a list of 1 to 1000 tokens", retryable=False)
        if req.get("app") not in (None, "demo"):
            return dict(base, ok=False, error="unknown_app", message="no app %r" % req.get("app"),
                        retryable=False)
        if req.get("wait") is False:
            return self._queued_multicast(base, tokens)
        results = [self._token_entry(t) for t in tokens]
        sent = sum(1 for r in results if r["ok"])
        return dict(base, ok=sent == len(results), sent=sent, failed=len(results) - sent,
                    results=results)

    def _queued_multicast(self, base, tokens):
        """A wait:false multicast, answered as apnsd does (daemon
        multicast.go, queuedAnswer): invalid tokens and retry hooks refuse
        their own entry, every other token is queued."""
        results = []
        for raw_token in tokens:
            token = clean_token(raw_token)
            if token is None:
                results.append({"token": raw_token, "ok": False, "error": "invalid_token",
                                "message": "bad token", "retryable": False})
                continue
            hooked = self._retry_hook(token)
            if hooked is not None:
                results.append(dict(hooked, token=token))
            else:
                results.append({"token": token, "ok": True, "queued": True})
        queued = sum(1 for r in results if r["ok"])
        if queued == len(results):
            return dict(base, ok=True, queued=queued)
        return dict(base, ok=False, queued=queued, sent=0, failed=len(results) - queued,
                    results=results)

    def _channel_op(self, base, op, req):
        key = (req.get("app"), req.get("env"))
        with self._lock:
            chans = self.channels.setdefault(key, {})
            if op == "channel_create":
                storage = req.get("storage")
                if storage not in ("none", "latest"):
                    return dict(base, ok=False, error="bad_request",
                                message="storage must be none or latest", retryable=False)
                cid = "ch-%d" % (len(chans) + 1)
                chans[cid] = storage
                return dict(base, ok=True, channel_id=cid)
            if op == "channel_list":
                return dict(base, ok=True, channels=sorted(chans))
            cid = req.get("channel_id")
            if cid not in chans:
                return dict(base, ok=False, status=404, reason="ChannelNotFound")
            if op == "channel_get":
                return dict(base, ok=True, channel_id=cid, storage=chans[cid],
                            push_type="liveactivity")
            if op == "channel_delete":
                del chans[cid]
                return dict(base, ok=True)
        return dict(base, ok=False, error="unknown_op", message=op, retryable=False)
