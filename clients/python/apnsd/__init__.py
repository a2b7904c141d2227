"""apnsd: Python client for the apnsd Apple push notification daemon.

    >>> import apnsd
    >>> client = apnsd.Client()                      # /run/apnsd/apnsd.sock
    >>> result = client.send("<a1b2c3d4 ...>", alert="Hello", badge=1)
    >>> result.ok, result.status, result.apns_id

Standard library only.  See README.md.
"""

from .client import APNS_OPTIONS, DEFAULT_SOCKET, Client, build_send_request
from .exceptions import (
    ApnsdError,
    ConnectionLost,
    DaemonUnreachable,
    ProtocolError,
    Timeout,
)
from .result import Result

__version__ = "0.1.0"

__all__ = [
    "APNS_OPTIONS",
    "ApnsdError",
    "Client",
    "ConnectionLost",
    "DEFAULT_SOCKET",
    "DaemonUnreachable",
    "ProtocolError",
    "Result",
    "Timeout",
    "build_send_request",
]
