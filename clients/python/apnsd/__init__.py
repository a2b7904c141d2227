"""apnsd: Python client for the apnsd Apple push notification daemon.

    >>> import apnsd
    >>> client = apnsd.Client()                      # /run/apnsd/apnsd.sock
    >>> result = client.send("<a1b2c3d4 ...>", alert="Hello", badge=1)
    >>> result.ok, result.status, result.apns_id

Standard library only.  See README.md.
"""

from .client import (
    APNS_OPTIONS,
    DEFAULT_SOCKET,
    MAX_MULTICAST_TOKENS,
    RETRY_AT_ONCE,
    RETRY_WITH_BACKOFF,
    Client,
    build_send_request,
)
from .exceptions import (
    ApnsdError,
    ConnectionLost,
    DaemonUnreachable,
    ProtocolError,
    Timeout,
)
from .result import ChannelResult, MulticastResult, Result

__version__ = "0.2.0"

__all__ = [
    "APNS_OPTIONS",
    "ApnsdError",
    "ChannelResult",
    "Client",
    "ConnectionLost",
    "DEFAULT_SOCKET",
    "DaemonUnreachable",
    "MAX_MULTICAST_TOKENS",
    "MulticastResult",
    "ProtocolError",
    "RETRY_AT_ONCE",
    "RETRY_WITH_BACKOFF",
    "Result",
    "Timeout",
    "build_send_request",
]
