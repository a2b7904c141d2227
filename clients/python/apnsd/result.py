"""The verdict on one notification."""

#: APNs reasons meaning the device token will never work again.
DEAD_TOKEN_REASONS = frozenset(["Unregistered", "ExpiredToken"])

#: HTTP statuses from APNs that are worth retrying later when apnsd does not
#: say so itself (429 TooManyRequests, 500 InternalServerError,
#: 503 ServiceUnavailable / Shutdown).
RETRYABLE_STATUSES = frozenset([429, 500, 503])


class Result(object):
    """One response line from apnsd for a ``send`` request.

    Attributes:
        ok: True when APNs accepted the notification (or, with ``wait=False``,
            when apnsd queued it).
        status: HTTP status APNs answered with (200, 400, 410, ...), or None
            when APNs was not asked (apnsd refused it, or queued it).
        reason: APNs reason string (``"BadDeviceToken"``...), or None.
        apns_id: the ``apns-id`` of the notification, when known.
        timestamp: for 410, the time (milliseconds since the epoch, as APNs
            gives it) since when the token is invalid; else None.
        unregistered: True when the token is dead and should be deleted
            (410, or reason ``Unregistered`` / ``ExpiredToken``).
        error: apnsd's own error code (``"invalid_token"``,
            ``"unknown_app"``, ``"payload_too_large"``...), or None.
        message: apnsd's human readable text for ``error``, or None.
        retryable: True when trying again later may succeed.  Taken from
            apnsd's ``retryable`` field when present; otherwise True for APNs
            statuses 429, 500 and 503.
        queued: True for the answer to a ``wait=False`` send.
        token: for one entry of a multicast, the cleaned token it is about.
        raw: the response object exactly as apnsd sent it (a dict).
    """

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    @property
    def ok(self):
        return self.raw.get("ok") is True

    @property
    def status(self):
        return self.raw.get("status")

    @property
    def reason(self):
        return self.raw.get("reason")

    @property
    def apns_id(self):
        return self.raw.get("apns_id")

    @property
    def timestamp(self):
        return self.raw.get("timestamp")

    @property
    def error(self):
        return self.raw.get("error")

    @property
    def message(self):
        return self.raw.get("message")

    @property
    def queued(self):
        return self.raw.get("queued") is True

    @property
    def unregistered(self):
        return self.status == 410 or self.reason in DEAD_TOKEN_REASONS

    @property
    def retryable(self):
        value = self.raw.get("retryable")
        if value is not None:
            return bool(value)
        if self.ok:
            return False
        return self.status in RETRYABLE_STATUSES

    @property
    def id(self):
        """The request id echoed by apnsd."""
        return self.raw.get("id")

    @property
    def token(self):
        """For an entry of a multicast: the token as apnsd cleaned it (hex);
        None for other answers."""
        return self.raw.get("token")

    def to_dict(self):
        """A JSON-friendly summary (every attribute, raw included)."""
        return {
            "ok": self.ok,
            "status": self.status,
            "reason": self.reason,
            "apns_id": self.apns_id,
            "timestamp": self.timestamp,
            "unregistered": self.unregistered,
            "error": self.error,
            "message": self.message,
            "retryable": self.retryable,
            "queued": self.queued,
            "raw": self.raw,
        }

    def __eq__(self, other):
        return isinstance(other, Result) and other.raw == self.raw

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None

    def __repr__(self):
        parts = ["ok=%r" % self.ok]
        for name in ("status", "reason", "error", "apns_id", "timestamp"):
            value = getattr(self, name)
            if value is not None:
                parts.append("%s=%r" % (name, value))
        if self.queued:
            parts.append("queued=True")
        return "Result(%s)" % ", ".join(parts)


class ChannelResult(Result):
    """apnsd's answer to a broadcast channel op (``channel_create``,
    ``channel_get``, ``channel_list``, ``channel_delete``).

    Besides the :class:`Result` attributes (``ok``; ``status``/``reason``
    when Apple refused; ``error``/``message`` when apnsd did):
        channel_id: the channel created or looked up.
        storage: ``"none"`` or ``"latest"`` (``channel_get``).
        push_type: the channel's push type (``channel_get``).
        channels: the list of channel ids (``channel_list``; [] otherwise).
    """

    __slots__ = ()

    @property
    def channel_id(self):
        return self.raw.get("channel_id")

    @property
    def storage(self):
        return self.raw.get("storage")

    @property
    def push_type(self):
        return self.raw.get("push_type")

    @property
    def channels(self):
        value = self.raw.get("channels")
        return list(value) if isinstance(value, list) else []

    def __repr__(self):
        parts = ["ok=%r" % self.ok]
        for name in ("channel_id", "storage", "status", "reason", "error"):
            value = getattr(self, name)
            if value is not None:
                parts.append("%s=%r" % (name, value))
        if self.raw.get("channels") is not None:
            parts.append("channels=%d" % len(self.channels))
        return "ChannelResult(%s)" % ", ".join(parts)


class MulticastResult(object):
    """The verdict on one notification sent to many tokens
    (:meth:`apnsd.Client.send_multicast`).

    Attributes:
        tokens: the tokens as you passed them, in order.
        results: one :class:`Result` per token, in the same order (with
            ``wait=False``: ``queued`` entries for the tokens apnsd took).
            Iterating, ``len()`` and indexing the MulticastResult work on
            this list.
        ok: True when every token succeeded (or was queued).
        sent: how many APNs accepted.
        failed: how many were refused (by APNs or apnsd).
        queued: with ``wait=False``, how many apnsd queued; else 0.
        error, message: when apnsd refused a whole request line (for
            instance ``unknown_app``), its code and text (each of its
            tokens' results carries the same); else None.
        raw: the response objects, one per request line (a multicast of
            more than 1000 tokens takes several lines).
    """

    __slots__ = ("tokens", "results", "queued", "raw")

    def __init__(self, tokens, entries, queued=0, raw=None):
        self.tokens = list(tokens)
        self.raw = list(raw or [])
        self.queued = queued
        if len(entries) != len(self.tokens):
            raise ValueError("%d results for %d tokens" % (len(entries), len(self.tokens)))
        self.results = [e if isinstance(e, Result) else Result(e) for e in entries]

    @property
    def ok(self):
        return all(r.ok for r in self.results)

    @property
    def sent(self):
        return sum(1 for r in self.results if r.ok and not r.queued)

    @property
    def failed(self):
        return sum(1 for r in self.results if not r.ok)

    def _line_refusal(self):
        for resp in self.raw:
            if isinstance(resp, dict) and resp.get("ok") is False and "results" not in resp \
                    and resp.get("error") is not None:
                return resp
        return None

    @property
    def error(self):
        refusal = self._line_refusal()
        return None if refusal is None else refusal.get("error")

    @property
    def message(self):
        refusal = self._line_refusal()
        return None if refusal is None else refusal.get("message")

    def _tokens_where(self, pred):
        return [t for t, r in zip(self.tokens, self.results) if pred(r)]

    @property
    def unregistered_tokens(self):
        """Tokens (as you passed them) that APNs says are dead: delete them."""
        return self._tokens_where(lambda r: r.unregistered)

    @property
    def failed_tokens(self):
        """Tokens (as you passed them) that were not delivered, for any reason."""
        return self._tokens_where(lambda r: not r.ok)

    @property
    def retryable_tokens(self):
        """Tokens that failed but may succeed if sent again later."""
        return self._tokens_where(lambda r: not r.ok and r.retryable)

    @property
    def succeeded_tokens(self):
        """Tokens (as you passed them) that APNs accepted (or apnsd queued)."""
        return self._tokens_where(lambda r: r.ok)

    def items(self):
        """(token as passed, Result) pairs, in order."""
        return list(zip(self.tokens, self.results))

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    def to_dict(self):
        return {
            "ok": self.ok,
            "sent": self.sent,
            "failed": self.failed,
            "queued": self.queued,
            "error": self.error,
            "message": self.message,
            "results": [r.to_dict() for r in self.results],
        }

    def __repr__(self):
        parts = ["ok=%r" % self.ok, "tokens=%d" % len(self.tokens)]
        if self.queued:
            parts.append("queued=%d" % self.queued)
        else:
            parts.append("sent=%d" % self.sent)
        parts.append("failed=%d" % self.failed)
        if self.error:
            parts.append("error=%r" % self.error)
        return "MulticastResult(%s)" % ", ".join(parts)
