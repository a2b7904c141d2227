"""Client for the apnsd local socket protocol (version 1).

See clients/python/README.md for the user documentation and PROTOCOL.md for
the wire contract.  Standard library only; Python 3.8+.
"""

import bisect
import datetime
import errno
import itertools
import json
import logging
import os
import selectors
import socket
import stat
import threading

from .exceptions import (
    ConnectionLost,
    DaemonUnreachable,
    ProtocolError,
    Timeout,
)
from .result import Result

__all__ = ["Client", "DEFAULT_SOCKET", "APNS_OPTIONS"]

log = logging.getLogger("apnsd")

#: Where the packaged daemon listens by default.
DEFAULT_SOCKET = "/run/apnsd/apnsd.sock"

#: Keyword options of :meth:`Client.send` that map 1:1 to protocol fields
#: (and, in the daemon, to the ``apns-*`` request headers).
APNS_OPTIONS = ("topic", "push_type", "priority", "expiration", "collapse_id", "apns_id")

# Ops that are safe to resend after the connection broke mid-request.
_IDEMPOTENT_OPS = frozenset(["ping", "status", "reload"])

# Responses to lines the daemon could not parse cannot echo the id.
_ID_LESS_ERRORS = frozenset(["bad_json", "line_too_long"])

_WRITE_CHUNK = 64 * 1024
_READ_CHUNK = 64 * 1024
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_BROKEN_ERRNOS = frozenset(
    e for e in (
        errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNABORTED,
        getattr(errno, "ESHUTDOWN", None),
    ) if e is not None
)


class _Broken(Exception):
    """Internal: the connection broke while a batch was in progress."""

    def __init__(self, sent, responses, cause):
        Exception.__init__(self, cause)
        self.sent = sent              # bytes handed to the kernel
        self.responses = responses    # responses read so far
        self.cause = cause


def _describe_cause(cause):
    if isinstance(cause, OSError):
        return os.strerror(cause.errno) if cause.errno else str(cause)
    return str(cause)


def _encode(obj):
    # ensure_ascii=False: the protocol is UTF-8; json.dumps never emits a raw
    # newline, so one object is always exactly one line.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _normalize_token(token):
    if isinstance(token, str):
        # Passed through untouched: apnsd strips "<", ">" and whitespace and
        # accepts either case, and it is the one to say "invalid_token".
        return token
    if isinstance(token, (bytes, bytearray, memoryview)):
        # The raw 32 (or more) bytes an app got from
        # didRegisterForRemoteNotificationsWithDeviceToken.
        return bytes(token).hex()
    raise TypeError("token must be a str (hex) or bytes, not %s" % type(token).__name__)


def _normalize_expiration(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("expiration datetime must be timezone-aware")
        return int(value.timestamp())
    if isinstance(value, datetime.timedelta):
        raise TypeError("expiration is an absolute time (datetime or UNIX seconds), not a timedelta")
    return value


def build_send_request(token, alert=None, badge=None, sound=None, payload=None,
                       app=None, env=None, wait=True, **apns_options):
    """The protocol object for one ``send`` (without ``id``).

    Fields whose value is None are left out so that apnsd applies its own
    defaults (the app's topic and environment, push type "alert"...).
    """
    unknown = sorted(set(apns_options) - set(APNS_OPTIONS))
    if unknown:
        raise TypeError("unknown send option(s): %s (known: %s)"
                        % (", ".join(unknown), ", ".join(APNS_OPTIONS)))
    req = {"op": "send", "token": _normalize_token(token)}
    for name, value in (("app", app), ("env", env), ("payload", payload),
                        ("alert", alert), ("badge", badge), ("sound", sound)):
        if value is not None:
            req[name] = value
    for name in APNS_OPTIONS:
        value = apns_options.get(name)
        if value is None:
            continue
        if name == "expiration":
            value = _normalize_expiration(value)
        req[name] = value
    if not wait:
        req["wait"] = False
    return req


class Client(object):
    """A connection to apnsd's Unix socket.

    ``socket_path``: the daemon's socket.  ``timeout``: seconds to wait for
    the daemon to make progress -- accept our bytes or answer -- before
    raising :class:`Timeout` (None: wait forever).  For ``send`` with
    ``wait=True`` this includes the time APNs takes to answer.

    The client connects lazily and keeps one connection open.

    Thread safety: one ``Client`` may be shared by any number of threads.  A
    lock serializes the requests on its single connection (each call holds
    it from writing its request(s) until it has read its response(s)), so
    concurrent ``send`` calls from many threads are correct but wait for each
    other.  For throughput use :meth:`send_many` (pipelined), or one
    ``Client`` per thread.  After ``os.fork()`` the child transparently opens
    its own connection.
    """

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=10.0):
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock = None
        self._ids = itertools.count(1)
        self._pid = os.getpid()

    # ------------------------------------------------------------------ API

    def send(self, token, alert=None, badge=None, sound=None, payload=None,
             app=None, env=None, wait=True, **apns_options):
        """Send one notification and return its :class:`Result`.

        ``token`` is the device token in hex; the form an iOS app logs,
        ``"<a1b2c3d4 e5f6...>"``, is fine as is (apnsd cleans it).  Raw token
        bytes are hex-encoded.  ``payload`` is the full APNs payload dict;
        ``alert``/``badge``/``sound`` are shorthands merged by apnsd into
        ``payload["aps"]``.  ``app``/``env`` select the configured app and
        ``"sandbox"``/``"production"``.  ``apns_options``: ``topic``,
        ``push_type``, ``priority``, ``expiration`` (UNIX seconds or an aware
        datetime), ``collapse_id``, ``apns_id``.

        ``wait=False`` returns as soon as apnsd has queued the notification
        (``result.queued``).

        A refused notification is a Result with ``ok == False``, not an
        exception.  Raises :class:`DaemonUnreachable`, :class:`Timeout`,
        :class:`ProtocolError`, or :class:`ConnectionLost` when the connection
        broke after the request was written (the notification is then NOT
        resent: it may already have been delivered).
        """
        req = build_send_request(token, alert=alert, badge=badge, sound=sound,
                                 payload=payload, app=app, env=env, wait=wait,
                                 **apns_options)
        return Result(self._call([req], idempotent=False)[0])

    def send_many(self, notifications):
        """Send many notifications pipelined on one connection.

        ``notifications``: an iterable whose items are dicts of
        :meth:`send` arguments (``{"token": ..., "alert": ...}``),
        ``(token, kwargs)`` pairs, or bare tokens.  Returns a list of
        :class:`Result` in the same order.

        All requests are written without waiting for answers (reading the
        answers while writing, so that neither side blocks on a full
        buffer), then matched to the responses by order; the echoed ids are
        checked.  On :class:`Timeout` or :class:`ConnectionLost` the
        exception's ``results`` holds the results read so far (a prefix); the
        remaining notifications may or may not have been delivered and are
        not resent.
        """
        reqs = []
        for index, item in enumerate(notifications):
            if isinstance(item, dict):
                kwargs = dict(item)
                try:
                    token = kwargs.pop("token")
                except KeyError:
                    raise ValueError("notification #%d has no 'token'" % index)
            elif isinstance(item, (str, bytes, bytearray)):
                token, kwargs = item, {}
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                token, kwargs = item[0], dict(item[1] or {})
            else:
                raise TypeError("notification #%d: expected a dict, a (token, kwargs) pair "
                                "or a token, got %r" % (index, item))
            reqs.append(build_send_request(token, **kwargs))
        if not reqs:
            return []
        return [Result(raw) for raw in self._call(reqs, idempotent=False)]

    def ping(self):
        """``{"ok": true, "pong": true, "version": ...}`` from the daemon."""
        return self.request({"op": "ping"})

    def status(self):
        """The daemon's status object (apps, environments, queues...)."""
        return self.request({"op": "status"})

    def reload(self):
        """Ask apnsd to re-read credentials now; returns its answer
        (``ok`` plus any ``error``/``message``).  A failed reload is reported
        in the returned dict, not raised."""
        return self.request({"op": "reload"})

    def request(self, obj):
        """Send one raw protocol object and return the raw response dict.

        The ``id`` field is always set by the client.  Only ``ping``,
        ``status`` and ``reload`` are resent after a broken connection.
        """
        req = dict(obj)
        op = req.get("op", "send")
        return self._call([req], idempotent=op in _IDEMPOTENT_OPS)[0]

    def close(self):
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "Client(socket_path=%r, timeout=%r)" % (self.socket_path, self.timeout)

    # ------------------------------------------------------------ internals

    def _check_fork(self):
        if os.getpid() != self._pid:
            # The child must not share the parent's connection (responses
            # would go to whichever process reads first).  Closing the child's
            # copy of the descriptor leaves the parent's connection intact
            # (no shutdown()).
            self._pid = os.getpid()
            self._lock = threading.Lock()
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()

    def _call(self, reqs, idempotent):
        """Write ``reqs`` and return their responses, in order.

        Reconnect policy: when the kept connection turns out to be broken and
        not one byte of the batch reached the socket, reconnect once and write
        the batch on the new connection.  When bytes were written the batch is
        only resent if it is idempotent (ping/status/reload); a ``send`` raises
        :class:`ConnectionLost` instead, because apnsd may have delivered it.
        """
        self._check_fork()
        with self._lock:
            for req in reqs:
                req["id"] = next(self._ids)
            lines = [_encode(req) for req in reqs]
            starts = [0] + list(itertools.accumulate(len(line) for line in lines))[:-1]
            data = b"".join(lines)
            attempt = 0
            while True:
                attempt += 1
                try:
                    sock = self._connection()
                    return self._pump(sock, data, reqs)
                except _Broken as broken:
                    self._drop()
                    nothing_written = broken.sent == 0 and not broken.responses
                    if attempt == 1 and (nothing_written or idempotent):
                        log.debug("apnsd connection broken (%s); reconnecting",
                                  _describe_cause(broken.cause))
                        continue
                    # requests at least partly handed to the socket
                    written = bisect.bisect_left(starts, broken.sent)
                    raise ConnectionLost(
                        "connection to apnsd at %s was lost (%s) after %d of %d request(s) "
                        "had been written and %d answered; the unanswered ones may or may "
                        "not have been delivered and were not resent"
                        % (self.socket_path, _describe_cause(broken.cause), written,
                           len(reqs), len(broken.responses)),
                        socket_path=self.socket_path,
                        results=[Result(r) for r in broken.responses],
                        written=written)
                except BaseException:
                    # Timeout, ProtocolError, KeyboardInterrupt...: the state
                    # of the connection is unknown, never reuse it.
                    self._drop()
                    raise

    def _drop(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _connection(self):
        sock = self._sock
        if sock is not None:
            # Is the kept connection still alive?  (apnsd may have been
            # restarted since the last call.)  Nothing has been written yet,
            # so reconnecting here is always safe.
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return sock  # alive, nothing pending: the normal case
            except OSError:
                data = b""
            if data:
                log.warning("apnsd sent unsolicited data on an idle connection; "
                            "reconnecting")
            self._drop()
        self._sock = self._connect()
        return self._sock

    def _connect(self):
        path = self.socket_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(path)
            sock.setblocking(False)
            return sock
        except BaseException as exc:
            sock.close()
            if isinstance(exc, socket.timeout):
                raise Timeout("timed out connecting to apnsd at %s (daemon overloaded?)" % path)
            if isinstance(exc, OSError):
                raise _unreachable(path, exc) from exc
            raise

    def _pump(self, sock, data, reqs):
        """Write ``data`` and read ``len(reqs)`` response lines, interleaved."""
        total = len(data)
        view = memoryview(data)
        sent = 0
        responses = []
        buf = bytearray()
        sel = selectors.DefaultSelector()
        try:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            writing = True
            while len(responses) < len(reqs):
                events = sel.select(self.timeout)
                if not events:
                    raise Timeout(
                        "no answer from apnsd at %s within %ss (%d of %d request(s) answered)"
                        % (self.socket_path, self.timeout, len(responses), len(reqs)),
                        results=[Result(r) for r in responses])
                mask = events[0][1]
                if writing and mask & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(view[sent:sent + _WRITE_CHUNK], _MSG_NOSIGNAL)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as exc:
                        if exc.errno in _BROKEN_ERRNOS:
                            raise _Broken(sent, responses, exc)
                        raise
                    if sent >= total:
                        writing = False
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(_READ_CHUNK)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno in _BROKEN_ERRNOS:
                            raise _Broken(sent, responses, exc)
                        raise
                    if not chunk:
                        raise _Broken(sent, responses, "apnsd closed the connection")
                    buf += chunk
                    self._parse(buf, reqs, responses)
            if buf.strip():
                # More than one line per request: the daemon broke the
                # protocol.  Our answers are complete, but the connection is
                # out of step: close it.
                log.warning("apnsd sent more response lines than requests; reconnecting")
                self._drop()
            return responses
        finally:
            sel.close()

    def _parse(self, buf, reqs, responses):
        start = 0
        while len(responses) < len(reqs):
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if not line.strip():
                continue  # empty lines are ignored (a trailing \r is tolerated)
            responses.append(self._decode(line, reqs[len(responses)]["id"]))
        del buf[:start]  # anything left over is checked by _pump

    def _decode(self, line, expected_id):
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError("apnsd sent a line that is not JSON: %r" % _clip(line))
        if not isinstance(obj, dict):
            raise ProtocolError("apnsd sent JSON that is not an object: %r" % _clip(line))
        if "id" in obj:
            got = obj["id"]
            if isinstance(got, bool) or got != expected_id:
                raise ProtocolError("response out of step: expected id %r, got %r (%r)"
                                    % (expected_id, got, _clip(line)))
        elif obj.get("error") in _ID_LESS_ERRORS:
            pass  # apnsd could not read the id from that line
        elif obj.get("ok") is False and isinstance(obj.get("error"), str):
            # A refusal of the connection itself (e.g. apnsd vetting the peer
            # before reading anything), written without an id.  Nothing of
            # ours was processed.
            code = obj["error"]
            raise DaemonUnreachable(
                "apnsd at %s refused this connection: %s: %s"
                % (self.socket_path, code, obj.get("message") or ""),
                reason="forbidden" if code == "forbidden" else "rejected",
                socket_path=self.socket_path)
        else:
            raise ProtocolError("response without the echoed id %r: %r"
                                % (expected_id, _clip(line)))
        return obj


def _clip(line, limit=200):
    return line if len(line) <= limit else line[:limit] + b"..."


def _unreachable(path, exc):
    """A DaemonUnreachable saying which of missing/refused/permission it is."""
    if isinstance(exc, FileNotFoundError):
        return DaemonUnreachable(
            "apnsd socket %s does not exist: is apnsd running, and is this the socket "
            "path it was configured with?" % path, reason="missing", socket_path=path)
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnreachable(
            "connection refused on %s: the socket file exists but apnsd is not listening "
            "on it (stopped or crashed, or this is not its socket)" % path,
            reason="refused", socket_path=path)
    if isinstance(exc, PermissionError):
        return DaemonUnreachable(_permission_message(path), reason="permission",
                                 socket_path=path)
    return DaemonUnreachable("cannot connect to apnsd at %s: %s" % (path, exc),
                             reason="other", socket_path=path)


def _permission_message(path):
    user = _user_name()
    try:
        st = os.stat(path)
    except OSError:
        return ("permission denied on apnsd socket %s: user %s cannot reach it (a parent "
                "directory is not accessible). apnsd's socket directory must be "
                "traversable by the group allowed to send pushes; add %s to that group "
                "(e.g. `sudo usermod -aG apnsd %s`) and restart this process"
                % (path, user, user, user))
    group = _group_name(st.st_gid)
    return ("permission denied on apnsd socket %s (mode %s, group %s): user %s is not "
            "allowed to connect. Add the user to the socket's group: "
            "`sudo usermod -aG %s %s`, then restart this process (group membership is only "
            "picked up by new logins/processes)"
            % (path, stat.filemode(st.st_mode), group, user, group, user))


def _user_name():
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def _group_name(gid):
    try:
        import grp
        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)
