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
