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
    """The connection broke after a request had (possibly) been written.

    The daemon may or may not have received -- and delivered -- the
    notification, so the client does not resend it.  ``results`` holds the
    responses read before the break (for ``send_many``); ``written`` is how
    many requests had been handed, at least partly, to the socket.
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

    For a send, the notification may still be delivered later: apnsd
    answers every accepted request eventually, but the client has given up
    on this connection.
    """
