"""Client for the apnsd local socket protocol (version 1.1).

See clients/python/README.md for the user documentation and PROTOCOL.md for
the wire contract.  Standard library only; Python 3.8+.
"""

import datetime
import errno
import itertools
import json
import logging
import os
import random
import selectors
import socket
import stat
import threading
import time

from .exceptions import (
    ConnectionLost,
    DaemonUnreachable,
    ProtocolError,
    Timeout,
)
from .result import ChannelResult, MulticastResult, Result

__all__ = ["Client", "DEFAULT_SOCKET", "APNS_OPTIONS", "MAX_MULTICAST_TOKENS",
           "RETRY_AT_ONCE", "RETRY_WITH_BACKOFF", "build_send_request"]

log = logging.getLogger("apnsd")

#: Where the packaged daemon listens by default.
DEFAULT_SOCKET = "/run/apnsd/apnsd.sock"

#: Keyword options of :meth:`Client.send` that map 1:1 to protocol fields
#: (and, in the daemon, to the ``apns-*`` request headers).
APNS_OPTIONS = ("topic", "push_type", "priority", "expiration", "collapse_id", "apns_id")

#: apnsd takes at most this many tokens in one multicast request line;
#: :meth:`Client.send_multicast` splits longer lists into several lines.
MAX_MULTICAST_TOKENS = 1000

#: apnsd's default request line limit (``socket.max_line_bytes``, 128 KiB,
#: which takes a full batch of 1000 64-hex tokens); multicast lines are kept
#: below it (``Client(max_line_bytes=...)`` if apnsd is set otherwise).
DEFAULT_LINE_LIMIT = 128 * 1024

# Room left in a line for the "id" and "deadline" fields the client adds.
_LINE_RESERVE = 96

#: Error codes (answered with ``"retryable": true``) that the client retries
#: at once, on a fresh connection: apnsd is going away, its successor (or
#: the listening socket systemd holds) takes the new connection.
RETRY_AT_ONCE = frozenset(["shutting_down"])

#: Error codes (answered with ``"retryable": true``) that the client retries
#: after a short jittered backoff, on the same connection.
RETRY_WITH_BACKOFF = frozenset(["queue_full", "unavailable"])

# Ops that are NOT resent after the connection broke with the request
# written but unanswered: a second channel_create would make a second
# channel (Apple allows 10,000 per app).  Retryable *answers* are retried
# for every op.
_NO_RESEND_OPS = frozenset(["channel_create"])

# Responses to lines the daemon could not parse cannot echo the id.
_ID_LESS_ERRORS = frozenset(["bad_json", "line_too_long"])

# A daemon older than protocol 1.1 refuses the "deadline" field.
_DEADLINE_REFUSAL = 'unknown field "deadline"'
_MULTICAST_REFUSAL = 'unknown field "tokens"'

_BACKOFF_CAP = 1.0          # seconds: the longest single backoff sleep
_sleep = time.sleep         # the backoff's sleep (tests replace it)
_WRITE_CHUNK = 64 * 1024
_READ_CHUNK = 64 * 1024
_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_BROKEN_ERRNOS = frozenset(
    e for e in (
        errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNABORTED,
        getattr(errno, "ESHUTDOWN", None),
    ) if e is not None
)


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
                       app=None, env=None, wait=True, tokens=None, channel_id=None,
                       **apns_options):
    """The protocol object for one ``send`` (without ``id`` and ``deadline``).

    Exactly one of ``token``, ``tokens`` (a list, multicast) and
    ``channel_id`` (broadcast) names the target.  Fields whose value is None
    are left out so that apnsd applies its own defaults (the app's topic and
    environment, push type "alert"...).
    """
    unknown = sorted(set(apns_options) - set(APNS_OPTIONS))
    if unknown:
        raise TypeError("unknown send option(s): %s (known: %s)"
                        % (", ".join(unknown), ", ".join(APNS_OPTIONS)))
    targets = sum(1 for t in (token, tokens, channel_id) if t is not None)
    if targets != 1:
        raise TypeError("give exactly one of token, tokens and channel_id")
    req = {"op": "send"}
    if token is not None:
        req["token"] = _normalize_token(token)
    elif tokens is not None:
        req["tokens"] = [_normalize_token(t) for t in tokens]
    else:
        if not isinstance(channel_id, str) or not channel_id:
            raise TypeError("channel_id must be a non-empty str")
        req["channel_id"] = channel_id
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


def _scope(obj, app, env):
    if app is not None:
        obj["app"] = app
    if env is not None:
        obj["env"] = env
    return obj


def _check_channel_id(channel_id):
    if not isinstance(channel_id, str) or not channel_id:
        raise TypeError("channel_id must be a non-empty str, not %r" % (channel_id,))


class _Req(object):
    """One request line's state across attempts (internal).

    ``deadline`` (monotonic) and ``deadline_ms`` (Unix ms, on the wire) are
    set when the line is first encoded and kept for every resend, so that
    retries never outlive the caller's timeout.
    """

    __slots__ = ("obj", "resend", "deadline", "deadline_ms", "attempts", "id",
                 "response", "last")

    def __init__(self, obj, resend=True, deadline=None, deadline_ms=None, attempts=0):
        self.obj = obj
        self.resend = resend
        self.deadline = deadline
        self.deadline_ms = deadline_ms
        self.attempts = attempts       # times (at least partly) written
        self.id = None                 # id of the latest attempt
        self.response = None           # the final answer
        self.last = None               # the latest retryable answer

    def time_left(self):
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


class Client(object):
    """A connection to apnsd's Unix socket.

    ``socket_path``: the daemon's socket.  ``timeout``: seconds the caller
    is willing to wait for one request's verdict, retries included (None:
    wait forever).  For ``send`` with ``wait=True`` this includes the time
    APNs takes to answer.  Every request carries ``deadline`` = the moment
    it is written + ``timeout`` (Unix milliseconds), so apnsd never starts
    sending a notification the client has given up on: it answers
    ``expired`` instead.  ``send_deadline=False`` leaves the field out.

    Retries (see the README, "Retries and resends"): an answer with
    ``"retryable": true`` and code ``shutting_down`` is retried at once on a
    fresh connection; ``queue_full`` and ``unavailable`` after a short
    jittered backoff (``retry_backoff`` seconds, doubling, at most 1 s).
    When the connection breaks (EOF, EPIPE, ECONNRESET) with requests
    written but unanswered, the client reconnects and resends them
    (``resend_unanswered``): delivery is then **at least once**, a resent
    notification may reach the device twice.  A request is written at most
    ``max_attempts`` times (1: no retries, no resends), and never after its
    deadline.

    The client connects lazily and keeps one connection open.

    Thread safety: one ``Client`` may be shared by any number of threads.  A
    lock serializes the requests on its single connection (each call holds
    it from writing its request(s) until it has read its final response(s),
    retries included), so concurrent ``send`` calls from many threads are
    correct but wait for each other.  For throughput use :meth:`send_many`
    or :meth:`send_multicast` (pipelined), or one ``Client`` per thread.
    After ``os.fork()`` the child transparently opens its own connection.
    """

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=10.0, max_attempts=5,
                 retry_backoff=0.05, resend_unanswered=True, send_deadline=True,
                 max_line_bytes=DEFAULT_LINE_LIMIT):
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be positive or None")
        if int(max_attempts) != max_attempts or max_attempts < 1:
            raise ValueError("max_attempts must be a whole number >= 1")
        if retry_backoff < 0:
            raise ValueError("retry_backoff must be >= 0")
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.max_attempts = int(max_attempts)
        self.retry_backoff = retry_backoff
        self.resend_unanswered = bool(resend_unanswered)
        self.send_deadline = bool(send_deadline)
        if max_line_bytes < 1024:
            raise ValueError("max_line_bytes must be at least 1024")
        self.max_line_bytes = int(max_line_bytes)
        self._lock = threading.Lock()
        self._sock = None
        # Does the daemon behind the current connection take "deadline"?
        # Assumed until it refuses the field; asked again on each new
        # connection (a restart may have upgraded apnsd).
        self._deadline_ok = True
        self._warned_deadline = False
        self._ids = itertools.count(1)
        self._pid = os.getpid()
        #: Counters since the client was made (read them; do not write):
        #: ``connects`` (connections opened), ``retries`` (retryable answers
        #: retried), ``resends`` (requests resent after a broken connection).
        self.stats = {"connects": 0, "retries": 0, "resends": 0}

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
        :class:`ProtocolError`, or :class:`ConnectionLost` when the
        connection broke after the request was written and it could not be
        resent (attempts or time used up, or ``resend_unanswered=False``).
        """
        req = build_send_request(token, alert=alert, badge=badge, sound=sound,
                                 payload=payload, app=app, env=env, wait=wait,
                                 **apns_options)
        return Result(self._call([req])[0])

    def send_many(self, notifications):
        """Send many notifications pipelined on one connection.

        ``notifications``: an iterable whose items are dicts of
        :meth:`send` arguments (``{"token": ..., "alert": ...}``),
        ``(token, kwargs)`` pairs, or bare tokens.  Returns a list of
        :class:`Result` in the same order.

        All requests are written without waiting for answers (reading the
        answers while writing, so that neither side blocks on a full
        buffer), then matched to the responses by order; the echoed ids are
        checked.  Retryable answers and unanswered requests are retried as
        for :meth:`send`.  On :class:`Timeout` or :class:`ConnectionLost`
        the exception's ``results`` holds the final results of the first
        requests (a prefix) and ``all_results`` one entry per request (None:
        no verdict; it may or may not have been delivered).
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
        return [Result(raw) for raw in self._call(reqs)]

    def send_multicast(self, tokens, alert=None, badge=None, sound=None, payload=None,
                       app=None, env=None, wait=True, **apns_options):
        """Send one notification to many device tokens; a
        :class:`MulticastResult`.

        ``tokens``: any iterable of tokens (hex strings in any form apnsd
        cleans, or bytes).  Up to 1000 go in one request line; a longer list
        is split into several lines, pipelined, transparently.  The other
        arguments are those of :meth:`send`.

        The result has one :class:`Result` per token, in the order given
        (``result.results``, or iterate it), the counts ``sent`` and
        ``failed``, and helpers such as ``unregistered_tokens`` (the tokens,
        as you passed them, that APNs says are dead: delete them).  A
        malformed token fails its own entry (``invalid_token``), never the
        batch.  With ``wait=False`` each token's result is ``queued`` (apnsd
        has it on disk) or apnsd's refusal of that token (e.g.
        ``invalid_token``), and ``result.queued`` counts the queued ones.

        Per-token answers marked retryable (``shutting_down``,
        ``queue_full``, ``unavailable``) are retried for those tokens only,
        as for :meth:`send`.  An empty ``tokens`` returns an empty result
        without asking apnsd.
        """
        originals = list(tokens)
        base = build_send_request(None, alert=alert, badge=badge, sound=sound,
                                  payload=payload, app=app, env=env, wait=wait,
                                  tokens=originals, **apns_options)
        wire = base.pop("tokens")
        if not wire:
            return MulticastResult(originals, [])
        chunks = self._multicast_chunks(base, wire)
        reqs = [_Req(dict(base, tokens=chunk)) for chunk in chunks]
        self._run_reqs(reqs)
        per_batch = [self._multicast_entries(req.response, chunk, wait)
                     for req, chunk in zip(reqs, chunks)]
        self._retry_multicast_entries(base, reqs, chunks, per_batch, wait)
        entries = [e for batch in per_batch for e in batch]
        queued = 0 if wait else sum(1 for e in entries if e.get("ok") is True
                                    and e.get("queued") is True)
        return MulticastResult(originals, entries, queued=queued,
                               raw=[r.response for r in reqs])

    def send_broadcast(self, channel_id, alert=None, badge=None, sound=None, payload=None,
                       app=None, env=None, wait=True, **apns_options):
        """Send one notification to a broadcast channel (iOS 18 broadcast
        push, push type ``liveactivity``); a :class:`Result`.  The
        arguments are those of :meth:`send`, with the channel id (from
        :meth:`channel_create`) instead of a token."""
        req = build_send_request(None, alert=alert, badge=badge, sound=sound,
                                 payload=payload, app=app, env=env, wait=wait,
                                 channel_id=channel_id, **apns_options)
        return Result(self._call([req])[0])

    def channel_create(self, storage="none", app=None, env=None):
        """Create a broadcast channel; a :class:`ChannelResult` with
        ``channel_id``.  ``storage``: Apple's message storage policy,
        ``"none"`` or ``"latest"`` (keep the latest message for devices that
        subscribe later).  Apple's refusals come back as ``status`` and
        ``reason``, as for a send.

        Not resent after a broken connection (a second create would make a
        second channel): :class:`ConnectionLost` then means "may or may not
        exist", see :meth:`channel_list`."""
        obj = _scope({"op": "channel_create", "storage": storage}, app, env)
        return ChannelResult(self._call([obj], resend=False)[0])

    def channel_get(self, channel_id, app=None, env=None):
        """A channel's settings: :class:`ChannelResult` with ``channel_id``,
        ``storage`` and ``push_type``."""
        _check_channel_id(channel_id)
        obj = _scope({"op": "channel_get", "channel_id": channel_id}, app, env)
        return ChannelResult(self._call([obj])[0])

    def channel_list(self, app=None, env=None):
        """The app's channels in that environment: :class:`ChannelResult`
        whose ``channels`` is a list of channel ids."""
        obj = _scope({"op": "channel_list"}, app, env)
        return ChannelResult(self._call([obj])[0])

    def channel_delete(self, channel_id, app=None, env=None):
        """Delete a channel; a :class:`ChannelResult` (``ok``)."""
        _check_channel_id(channel_id)
        obj = _scope({"op": "channel_delete", "channel_id": channel_id}, app, env)
        return ChannelResult(self._call([obj])[0])

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

        The ``id`` field is always set by the client, and ``deadline``
        unless the object has one or ``send_deadline`` is off.  Retries and
        resends apply as for :meth:`send` (not resent after a broken
        connection: ``channel_create``).
        """
        req = dict(obj)
        op = req.get("op", "send")
        return self._call([req], resend=op not in _NO_RESEND_OPS)[0]

    def close(self):
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "Client(socket_path=%r, timeout=%r, max_attempts=%r)" % (
            self.socket_path, self.timeout, self.max_attempts)

    # ------------------------------------------------------------ multicast

    def _multicast_chunks(self, base, wire):
        """Split the tokens into request lines of at most
        MAX_MULTICAST_TOKENS tokens and max_line_bytes bytes each."""
        budget = self.max_line_bytes - _LINE_RESERVE - len(_encode(dict(base, tokens=[])))
        chunks = []
        chunk, size = [], 0
        for t in wire:
            cost = len(_encode(t)) - 1 + 1      # the JSON string and its comma
            if chunk and (len(chunk) >= MAX_MULTICAST_TOKENS or size + cost > budget):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(t)
            size += cost
        if chunk:
            chunks.append(chunk)
        return chunks

    def _multicast_entries(self, resp, chunk, wait=True):
        """Per-token entry dicts for one multicast answer (len(chunk) of
        them).  An answer without ``results`` is, with ``wait=False`` and
        ``ok`` true (``{"ok":true,"queued":N}``), every token queued; else
        the whole request refused: that refusal for every token.  An answer
        with ``results`` (also ``wait=False`` when apnsd refused some
        tokens: ``{"ok":false,"queued":N,"results":[..]}``) gives each
        token its own entry, queued or refused.  Raises ProtocolError (and
        closes the connection) when ``results`` does not match ``chunk``."""
        results = resp.get("results")
        if results is None:
            if not wait and resp.get("ok") is True:
                return [{"token": t, "ok": True, "queued": True} for t in chunk]
            return _batch_failure(resp, chunk)
        if not isinstance(results, list) or len(results) != len(chunk) \
                or not all(isinstance(e, dict) for e in results):
            self.close()
            raise ProtocolError(
                "apnsd answered a multicast of %d token(s) with %s result(s): %r"
                % (len(chunk), len(results) if isinstance(results, list) else "malformed",
                   _clip(json.dumps(resp).encode("utf-8"))))
        return list(results)

    def _retry_multicast_entries(self, base, reqs, chunks, per_batch, wait=True):
        """Resend, as smaller multicasts, the tokens whose own entry is a
        retryable refusal, until they get a final entry or their request's
        attempts or deadline run out (the last refusal then stands)."""
        while True:
            retry = []      # (batch index, positions, parent _Req)
            at_once = False
            longest = 0
            for b, entries in enumerate(per_batch):
                parent = reqs[b]
                if not self._may_retry(parent):
                    continue
                positions = []
                for i, e in enumerate(entries):
                    kind = _retry_kind(e)
                    if kind is None:
                        continue
                    positions.append(i)
                    at_once = at_once or kind == "at_once"
                if positions:
                    retry.append((b, positions, parent))
                    longest = max(longest, parent.attempts)
            if not retry:
                return
            self.stats["retries"] += sum(len(p) for _, p, _ in retry)
            if not at_once:
                self._sleep_backoff(longest, [p for _, _, p in retry])
                retry = [r for r in retry if self._may_retry(r[2])]
                if not retry:
                    return
            subs = []
            for b, positions, parent in retry:
                sub = _Req(dict(base, tokens=[chunks[b][i] for i in positions]),
                           deadline=parent.deadline, deadline_ms=parent.deadline_ms,
                           attempts=parent.attempts)
                subs.append(sub)
            self._run_reqs(subs, fresh=at_once)
            for (b, positions, parent), sub in zip(retry, subs):
                parent.attempts = sub.attempts
                sub_chunk = [chunks[b][i] for i in positions]
                fresh_entries = self._multicast_entries(sub.response, sub_chunk, wait)
                for i, e in zip(positions, fresh_entries):
                    per_batch[b][i] = e

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

    def _call(self, objs, resend=True):
        """Write ``objs`` (protocol dicts without id) and return their final
        raw responses, in order.  See :meth:`_run_reqs`."""
        reqs = [_Req(obj, resend=resend) for obj in objs]
        self._run_reqs(reqs)
        return [r.response for r in reqs]

    def _run_reqs(self, reqs, fresh=False):
        """Get a final response for every request in ``reqs`` (sets
        ``req.response``), retrying and resending as the class doc says.

        Rounds: each round writes the requests still without a final answer
        (in order, pipelined) on one connection and reads their answers.
        After a round: a ``shutting_down`` answer or a broken connection
        means a fresh connection and the next round at once; only
        ``queue_full``/``unavailable`` answers mean a jittered sleep first.
        Connecting may fail while apnsd restarts (socket missing or
        refusing): once a restart was seen, connecting is retried with
        backoff until the requests' deadlines; before that, the failure is
        raised at once (apnsd is simply not running).

        Holds the client's lock for the whole exchange.  Raises Timeout,
        ConnectionLost, DaemonUnreachable, ProtocolError with the results
        so far; the connection is then closed.
        """
        self._check_fork()
        with self._lock:
            if fresh:
                self._drop()
            restarting = fresh
            stalls = 0
            try:
                while True:
                    batch = [r for r in reqs if r.response is None]
                    if not batch:
                        return
                    try:
                        sock = self._connection()
                    except (DaemonUnreachable, Timeout) as exc:
                        if not restarting or isinstance(exc, ConnectionLost) \
                                or getattr(exc, "reason", None) in ("permission", "forbidden"):
                            raise
                        stalls += 1
                        if not self._sleep_backoff(stalls, batch, needs_all=False):
                            raise
                        continue
                    outcome = self._pump(sock, batch)
                    if outcome.progress:
                        stalls = 0
                    else:
                        stalls += 1
                    if outcome.broken is not None or outcome.shutting_down:
                        self._drop()
                        restarting = True
                    waiting = [r for r in batch if r.response is None]
                    if outcome.broken is not None:
                        self._after_break(reqs, batch, outcome, stalls)
                        if not outcome.progress and waiting:
                            # closed before a byte went either way: do not spin
                            self._sleep_backoff(stalls, waiting, needs_all=False)
                    elif outcome.backoff and not outcome.shutting_down and waiting:
                        self._sleep_backoff(max(r.attempts for r in waiting), waiting)
                    # Requests whose deadline passed or attempts ran out
                    # while waiting for a retry keep their last answer.
                    for r in reqs:
                        if r.response is None and r.last is not None and not self._may_retry(r):
                            r.response = r.last
            except BaseException as exc:
                # Timeout, ProtocolError, KeyboardInterrupt...: the state
                # of the connection is unknown, never reuse it.
                self._drop()
                if isinstance(exc, (Timeout, ConnectionLost, DaemonUnreachable, ProtocolError)) \
                        and not exc.results and not getattr(exc, "all_results", None):
                    _attach_results(exc, reqs)
                raise

    def _after_break(self, reqs, batch, outcome, stalls):
        """The connection broke during a round: decide whether the requests
        written but unanswered may be resent; raise ConnectionLost if not."""
        lost = [r for r in batch if r.response is None and r.id in outcome.written]
        for r in lost:
            r.last = None   # an earlier retryable answer no longer stands
        stuck = [r for r in lost
                 if not (r.resend and self.resend_unanswered and self._may_retry(r))]
        if stalls > self.max_attempts + 1:
            stuck = [r for r in batch if r.response is None]   # closed again and again
        if not stuck:
            self.stats["resends"] += len(lost)
            log.debug("apnsd connection broken (%s); resending %d unanswered request(s)",
                      _describe_cause(outcome.broken), len(lost))
            return
        written = sum(1 for r in reqs if r.attempts > 0)
        if not self.resend_unanswered or not all(r.resend for r in stuck):
            why = "they were not resent"
        else:
            why = "they could not be resent (%d attempt(s) or the timeout used up)" % max(
                r.attempts for r in stuck)
        exc = ConnectionLost(
            "connection to apnsd at %s was lost (%s) with %d of %d request(s) written and "
            "unanswered; the unanswered ones may or may not have been delivered and %s"
            % (self.socket_path, _describe_cause(outcome.broken), len(stuck), len(reqs), why),
            socket_path=self.socket_path, written=written)
        _attach_results(exc, reqs)
        raise exc

    def _may_retry(self, req):
        if req.attempts >= self.max_attempts:
            return False
        left = req.time_left()
        return left is None or left > 0

    def _sleep_backoff(self, attempt, waiting, needs_all=True):
        """Sleep a jittered backoff (base * 2**(attempt-1), at most 1 s),
        never past the latest deadline among ``waiting``.  Returns False
        when there is no time left at all."""
        delay = min(_BACKOFF_CAP, self.retry_backoff * (2 ** max(0, attempt - 1)))
        delay *= random.uniform(0.5, 1.0)
        lefts = [r.time_left() for r in waiting]
        if any(left is None for left in lefts):
            budget = None
        else:
            budget = max(lefts) if lefts else 0
        if budget is not None:
            if budget <= 0:
                return False
            delay = min(delay, budget)
        if not needs_all and budget is None and attempt > self.max_attempts * 4:
            return False    # no deadline: do not wait for a restart forever
        _sleep(delay)
        return True

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
        self._deadline_ok = True
        self.stats["connects"] += 1
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

    def _line(self, req):
        """Encode the next attempt of ``req``: a new id; the deadline set on
        the first attempt and kept for the others."""
        if req.deadline is None and self.timeout is not None:
            req.deadline = time.monotonic() + self.timeout
            req.deadline_ms = int((time.time() + self.timeout) * 1000)
        req.id = next(self._ids)
        obj = dict(req.obj)
        obj["id"] = req.id
        if req.deadline_ms is not None and self.send_deadline and self._deadline_ok \
                and "deadline" not in obj:
            obj["deadline"] = req.deadline_ms
        req.attempts += 1
        return _encode(obj)

    def _pump(self, sock, batch):
        """One round: write the requests of ``batch`` (encoded lazily, so
        that each deadline starts when its line is written) and read their
        answers, interleaved.  Classifies each answer (final, retry at once,
        retry after backoff).  Returns a _Round; raises Timeout and
        ProtocolError."""
        rnd = _Round()
        out = bytearray()
        ends = []           # end offset of each encoded line in the round's stream
        sent = 0
        buf = bytearray()
        nxt = 0             # next request of batch to encode
        answered = 0
        stop = False        # shutting_down seen: write no further lines
        sel = selectors.DefaultSelector()
        try:
            sel.register(sock, selectors.EVENT_READ)
            mask_now = selectors.EVENT_READ
            while True:
                while not stop and nxt < len(batch) and len(out) < _WRITE_CHUNK:
                    line = self._line(batch[nxt])
                    out += line
                    ends.append((ends[-1] if ends else 0) + len(line))
                    nxt += 1
                expected = len(ends) if stop else len(batch)
                if answered >= expected:
                    break
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
                if want != mask_now:
                    sel.modify(sock, want)
                    mask_now = want
                wait = self.timeout
                if wait is not None and (stop or nxt == len(batch)):
                    lefts = [r.time_left() for r in batch[answered:len(ends)]
                             if r.deadline is not None]
                    if lefts:
                        wait = max(0.0, min(wait, max(lefts)))
                events = sel.select(wait)
                if not events:
                    raise Timeout(
                        "no answer from apnsd at %s within the %ss timeout "
                        "(%d of %d request(s) of this round answered); the unanswered ones "
                        "are past their deadline, so apnsd will not start sending them"
                        % (self.socket_path, self.timeout, answered, len(batch)))
                mask = events[0][1]
                if out and mask & selectors.EVENT_WRITE:
                    try:
                        n = sock.send(out[:_WRITE_CHUNK], _MSG_NOSIGNAL)
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError as exc:
                        if exc.errno in _BROKEN_ERRNOS:
                            return self._broken(rnd, batch, ends, sent, answered, exc)
                        raise
                    if n:
                        del out[:n]
                        sent += n
                        rnd.progress = True
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(_READ_CHUNK)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno in _BROKEN_ERRNOS:
                            return self._broken(rnd, batch, ends, sent, answered, exc)
                        raise
                    if not chunk:
                        return self._broken(rnd, batch, ends, sent, answered,
                                            "apnsd closed the connection")
                    buf += chunk
                    rnd.progress = True
                    for obj in self._parse(buf, batch, answered, len(ends)):
                        if self._classify(batch[answered], obj, rnd):
                            if not stop:
                                stop = True
                                # Finish the line being written, drop the rest.
                                keep = 0
                                while keep < len(ends) and (ends[keep - 1] if keep else 0) < sent:
                                    keep += 1
                                keep = max(keep, answered + 1)
                                for r in batch[keep:len(ends)]:
                                    r.attempts -= 1     # never written
                                del ends[keep:]
                                del out[max(0, ends[-1] - sent):]
                                nxt = len(ends)
                        answered += 1
            if buf.strip():
                # More than one line per request: the daemon broke the
                # protocol.  Our answers are complete, but the connection is
                # out of step: close it.
                log.warning("apnsd sent more response lines than requests; reconnecting")
                self._drop()
            return rnd
        finally:
            sel.close()

    def _broken(self, rnd, batch, ends, sent, answered, cause):
        """The round ended with a broken connection.  Lines not (partly)
        written do not count as attempts."""
        rnd.broken = cause
        for i in range(answered, len(ends)):
            start = ends[i - 1] if i else 0
            if start < sent:
                rnd.written.add(batch[i].id)
            else:
                batch[i].attempts -= 1
        return rnd

    def _classify(self, req, obj, rnd):
        """Record ``obj`` as ``req``'s answer or as a reason to retry it.
        Returns True for ``shutting_down`` (stop writing, fresh connection)."""
        code = obj.get("error")
        if code == "bad_request" and _DEADLINE_REFUSAL in str(obj.get("message", "")) \
                and "deadline" not in req.obj:
            # An apnsd older than protocol 1.1: it refused the line, so
            # nothing was sent.  Resend without the field on this connection.
            if not self._warned_deadline:
                self._warned_deadline = True
                log.warning("apnsd at %s does not take the \"deadline\" field (older than "
                            "protocol 1.1); requests go without it, so a request the client "
                            "gave up on may still be sent", self.socket_path)
            self._deadline_ok = False
            req.attempts -= 1
            return False
        kind = _retry_kind(obj)
        if kind is not None and self._may_retry(req):
            req.last = obj
            self.stats["retries"] += 1
            if kind == "at_once":
                rnd.shutting_down = True
                return True
            rnd.backoff = True
            return False
        req.response = obj
        req.last = None
        return False

    def _parse(self, buf, batch, answered, limit):
        """Yield the complete response lines in ``buf`` (at most ``limit -
        answered``), decoded and checked against the expected ids."""
        start = 0
        i = answered
        while i < limit:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if not line.strip():
                continue  # empty lines are ignored (a trailing \r is tolerated)
            obj = self._decode(line, batch[i].id)
            i += 1
            yield obj
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


class _Round(object):
    """What one round of :meth:`Client._pump` ended with (internal)."""

    __slots__ = ("broken", "written", "shutting_down", "backoff", "progress")

    def __init__(self):
        self.broken = None          # the cause, when the connection broke
        self.written = set()        # ids of lines (partly) written, unanswered
        self.shutting_down = False  # a shutting_down answer to retry
        self.backoff = False        # a queue_full/unavailable answer to retry
        self.progress = False       # any byte went either way


def _retry_kind(obj):
    """"at_once", "backoff" or None for one answer (or multicast entry)."""
    if obj.get("ok") is not False or obj.get("retryable") is not True:
        return None
    code = obj.get("error")
    if code in RETRY_AT_ONCE:
        return "at_once"
    if code in RETRY_WITH_BACKOFF:
        return "backoff"
    return None


def _batch_failure(resp, chunk):
    """A whole multicast line refused (no per-token results): that refusal,
    for each of its tokens."""
    entry = {k: v for k, v in resp.items() if k not in ("id", "sent", "failed", "results")}
    entry["ok"] = False
    message = entry.get("message")
    if entry.get("error") == "bad_request" and _MULTICAST_REFUSAL in str(message or ""):
        entry["message"] = ("%s (this apnsd predates multicast, protocol 1.1: upgrade it, "
                            "or use send_many)" % message)
    return [dict(entry, token=t) for t in chunk]


def _attach_results(exc, reqs):
    """Set exc.results (the final answers of the first requests: a prefix)
    and exc.all_results (one per request, None where there is none)."""
    all_results = [Result(r.response) if r.response is not None else None for r in reqs]
    prefix = []
    for r in all_results:
        if r is None:
            break
        prefix.append(r)
    exc.results = prefix
    exc.all_results = all_results


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
