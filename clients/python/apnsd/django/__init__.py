"""Django integration for apnsd.

Add ``"apnsd.django"`` to ``INSTALLED_APPS`` (app label ``"apnsd"``; on Django
< 3.2 use ``"apnsd.django.apps.ApnsdConfig"``) and,
optionally, these settings:

``APNSD_SOCKET``   the daemon's socket (default ``"/run/apnsd/apnsd.sock"``)
``APNSD_APP``      default app name for sends (default None: apnsd's only app)
``APNSD_TIMEOUT``  client timeout in seconds, retries included (default 10.0)
``APNSD_MAX_ATTEMPTS``  how often a request may be written (default 5; 1 turns
                   retries and resends off: see apnsd.Client)

Then::

    from apnsd.django import send_push
    result = send_push(device.token, alert="Your order shipped", badge=1)
    if result.unregistered:
        device.delete()

    from apnsd.django import send_push_multicast
    result = send_push_multicast(Device.objects.filter(user=user), alert="Sale!")
    Device.objects.filter(token__in=result.unregistered_tokens).delete()

The module-level client is created on first use, shared by all threads of
the process (see :class:`apnsd.Client` on thread safety), and recreated when
one of the settings above changes (e.g. ``override_settings`` in tests).
"""

import threading

from apnsd.client import DEFAULT_SOCKET, Client

__all__ = ["get_client", "send_push", "send_many", "send_push_multicast", "reset_client",
           "DEFAULT_SOCKET", "DEFAULT_TIMEOUT", "DEFAULT_MAX_ATTEMPTS"]


DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 5
SETTING_NAMES = ("APNSD_SOCKET", "APNSD_APP", "APNSD_TIMEOUT", "APNSD_MAX_ATTEMPTS")

_client = None
_client_lock = threading.Lock()


def _settings():
    from django.conf import settings
    return settings


def get_socket():
    return getattr(_settings(), "APNSD_SOCKET", None) or DEFAULT_SOCKET


def get_app():
    return getattr(_settings(), "APNSD_APP", None) or None


def get_timeout():
    timeout = getattr(_settings(), "APNSD_TIMEOUT", DEFAULT_TIMEOUT)
    return None if timeout is None else float(timeout)


def get_max_attempts():
    return int(getattr(_settings(), "APNSD_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))


def get_client():
    """The shared :class:`apnsd.Client`, created on first use."""
    global _client
    client = _client
    if client is None:
        with _client_lock:
            if _client is None:
                _client = Client(get_socket(), timeout=get_timeout(),
                                 max_attempts=get_max_attempts())
            client = _client
    return client


def reset_client():
    """Close and forget the shared client (the next call recreates it)."""
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def send_push(token, **kwargs):
    """``get_client().send(token, **kwargs)`` with ``app`` defaulting to
    ``settings.APNSD_APP``.  Returns an :class:`apnsd.Result`."""
    if kwargs.get("app") is None:
        kwargs["app"] = get_app()
    return get_client().send(token, **kwargs)


def send_many(notifications):
    """Pipelined :meth:`apnsd.Client.send_many` with ``app`` defaulting to
    ``settings.APNSD_APP``."""
    app = get_app()
    items = []
    for item in notifications:
        if app is not None:
            if isinstance(item, dict) and item.get("app") is None:
                item = dict(item, app=app)
            elif isinstance(item, (tuple, list)) and len(item) == 2 \
                    and (item[1] or {}).get("app") is None:
                item = (item[0], dict(item[1] or {}, app=app))
            elif isinstance(item, (str, bytes)):
                item = (item, {"app": app})
        items.append(item)
    return get_client().send_many(items)


def send_push_multicast(devices, token_field="token", **kwargs):
    """One notification to many devices: :meth:`apnsd.Client.send_multicast`
    with ``app`` defaulting to ``settings.APNSD_APP``.  Returns an
    :class:`apnsd.MulticastResult`.

    ``devices``: tokens (str or bytes), or model instances whose
    ``token_field`` attribute holds the token, in any iterable: a list, a
    queryset (``Device.objects.filter(...)``), or
    ``values_list("token", flat=True)``.  The queryset is evaluated once.
    ``result.unregistered_tokens`` holds the tokens to delete, as stored::

        result = send_push_multicast(Device.objects.filter(user=user), alert="Hi")
        Device.objects.filter(token__in=result.unregistered_tokens).delete()
    """
    tokens = []
    for item in devices:
        if isinstance(item, (str, bytes, bytearray, memoryview)):
            tokens.append(item)
        else:
            try:
                tokens.append(getattr(item, token_field))
            except AttributeError:
                raise TypeError("%r has no attribute %r (pass token_field=...)"
                                % (item, token_field))
    if kwargs.get("app") is None:
        kwargs["app"] = get_app()
    return get_client().send_multicast(tokens, **kwargs)
