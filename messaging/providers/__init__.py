"""Outbound provider adapters: console, WhatsApp Cloud API, Twilio SMS and SMTP e-mail.

Callers build an `OutboundMessage`, get an adapter with `provider_for(kind)` and call
`send(message, credentials)`. See base.py for the error contract (retryable / permanent /
ProviderTimeout = outcome unknown, never resend).
"""

from __future__ import annotations

from messaging.providers.base import (
    ErrorClass,
    OutboundMessage,
    Provider,
    ProviderError,
    ProviderTimeout,
    SendResult,
    Signal,
)
from messaging.providers.registry import PROVIDERS, ProviderUnknown, provider_for

__all__ = [
    "PROVIDERS",
    "ErrorClass",
    "OutboundMessage",
    "Provider",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnknown",
    "SendResult",
    "Signal",
    "provider_for",
]
