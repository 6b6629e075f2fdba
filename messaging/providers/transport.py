"""The one HTTP call the HTTP adapters share, with transport failures mapped to provider errors.

The split that matters for delivery: a failure *before* the request left (connect refused,
connect timeout, no free connection) is safe to retry; a failure *after* it may have left
(read/write timeout, connection dropped mid-request) is a `ProviderTimeout`, so the message
becomes `unknown` and is reconciled instead of being sent twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import httpx
from django.conf import settings
from django.utils.translation import gettext as _

from messaging.providers.base import (
    RETRYABLE,
    ErrorClass,
    ProviderError,
    ProviderTimeout,
    Signal,
)

_NOT_SENT = (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError, httpx.ProxyError)
_MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def default_timeout() -> httpx.Timeout:
    """Connect and answer timeouts from settings (MESSAGING_PROVIDER_*_TIMEOUT)."""
    return httpx.Timeout(
        settings.MESSAGING_PROVIDER_TIMEOUT, connect=settings.MESSAGING_PROVIDER_CONNECT_TIMEOUT
    )


def post(
    url: str,
    *,
    timeout: httpx.Timeout,
    client: httpx.Client | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST once (never retried here; retries belong to the outbox) and return any response."""
    try:
        if client is not None:
            return client.post(url, timeout=timeout, **kwargs)
        with httpx.Client(timeout=timeout, follow_redirects=False) as own_client:
            return own_client.post(url, **kwargs)
    except _NOT_SENT as exc:
        raise ProviderError(
            _("The provider could not be reached: %(error)s") % {"error": type(exc).__name__},
            code="connect_failed",
            error_class=RETRYABLE,
        ) from exc
    except _MAYBE_SENT as exc:
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout() from exc
        raise ProviderTimeout(
            _("The connection broke after the request was sent; the message may have been sent."),
            code="connection_lost",
        ) from exc
    except httpx.HTTPError as exc:
        # UnsupportedProtocol, LocalProtocolError, ...: our configuration (base URL) is wrong.
        raise ProviderError(
            _("The provider request could not be made: %(error)s") % {"error": type(exc).__name__},
            code="transport_error",
            error_class=ErrorClass(signal=Signal.CREDENTIALS),
        ) from exc


def json_body(response: httpx.Response) -> Mapping[str, Any]:
    """The response's JSON object, or {} when the body is not a JSON object."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a numeric Retry-After header, if the provider sent one."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
