"""Exceptions raised by the apnsd client.

A notification that apnsd or APNs *refused* is not an exception: it comes back
as a :class:`apnsd.Result` with ``ok == False``.  Exceptions are reserved for
the cases where no verdict could be obtained at all.
"""


class ApnsdError(Exception):
    """Base class of every exception raised by this package."""

    def __init__(self, message, results=None):
        super(ApnsdError, self).__init__(message)
        #: For :meth:`Client.send_many`: the results that were read before the
        #: failure, in request order (a prefix of the requests).  Empty for
        #: single requests.
        self.results = list(results or [])
        #: One entry per request of the call, in order: its final Result, or
        #: None where there is none (it may or may not have been delivered).
        #: Empty when the call had a single request that got no verdict.
        self.all_results = []


class DaemonUnreachable(ApnsdError):
    """The daemon's socket could not be connected to.

    ``reason`` is one of ``"missing"`` (no socket file), ``"refused"``
    (socket file exists but nobody listens: apnsd is not running),
    ``"permission"`` (the process may not open the socket; usually the user
    is not in the socket's group), ``"forbidden"`` / ``"rejected"`` (apnsd
    accepted the connection but refused this peer with an error line),
    ``"lost"`` (:class:`ConnectionLost`) or ``"other"``.
    """

    def __init__(self, message, reason="other", socket_path=None, results=None):
        super(DaemonUnreachable, self).__init__(message, results)
        self.reason = reason
        self.socket_path = socket_path


class ConnectionLost(DaemonUnreachable):
    """The connection broke after a request had (possibly) been written,
    and the client could not resend it: ``resend_unanswered=False``, an op
    that is never resent (``channel_create``), or its attempts or its
    timeout were used up.

    The daemon may or may not have received -- and delivered -- the
    notification.  ``results`` holds the final results of the first
    requests (a prefix; for ``send_many``) and ``all_results`` one entry per
    request (None: no verdict); ``written`` is how many requests had been
    handed, at least partly, to the socket.
    """

    def __init__(self, message, socket_path=None, results=None, written=0):
        super(ConnectionLost, self).__init__(
            message, reason="lost", socket_path=socket_path, results=results)
        self.written = written


class ProtocolError(ApnsdError):
    """The daemon sent something that is not a valid protocol response
    (not JSON, not an object, wrong ``id``, unexpected data...)."""


class Timeout(ApnsdError, TimeoutError):
    """No answer (or no progress) from the daemon within the client timeout.

    Each request carried ``deadline`` = the time it was written plus the
    timeout, and the client gives up no earlier than that: apnsd will not
    *start* sending a timed-out request (it answers ``expired`` to a request
    it reads after its deadline).  One apnsd had already handed to APNs may
    still arrive (apnsd then answers ``timeout``).  An apnsd older than
    protocol 1.1 ignores deadlines: there a timed-out notification may
    still be sent later.
    """
