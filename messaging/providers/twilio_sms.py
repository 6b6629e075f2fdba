"""Twilio Programmable Messaging: SMS.

`POST {TWILIO_API_BASE_URL}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic auth,
form-encoded fields as in tests/fixtures/providers/twilio/outbound_create_message.request.json.
Credentials: `account_sid` plus `auth_token` (or an API key: `api_key_sid` + `api_key_secret`),
and the sender: `messaging_service_sid` (preferred) or `from_number`.

Idempotency: our key goes into the `I-Twilio-Idempotency-Token` header. Twilio documents that
header on the webhooks it sends us; that the Messages API deduplicates creates on it is not
confirmed, so a timed-out send is still marked `unknown` and reconciled, never resent blindly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_args
from urllib.parse import quote

import httpx
from django.conf import settings
from django.utils.translation import gettext as _

from messaging.providers import transport
from messaging.providers.base import (
    RETRYABLE,
    ErrorClass,
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    SendResult,
    SendStatus,
    Signal,
    classify_http_status,
    invalid_message,
    require_credentials,
)

API_VERSION: Final = "2010-04-01"
BODY_MAX_CHARS: Final = 1600
IDEMPOTENCY_HEADER: Final = "I-Twilio-Idempotency-Token"

# Twilio error codes (README §6), for the create answer and for StatusCallback `ErrorCode`s.
# Unlisted codes fall back to the HTTP status (429/5xx retry, 4xx final).
TWILIO_ERRORS: Final[dict[str, ErrorClass]] = {
    "21610": ErrorClass(permanent=True, signal=Signal.OPT_OUT),  # replied STOP: never until START
    "21614": ErrorClass(permanent=True, signal=Signal.UNREACHABLE),  # not SMS-capable (landline)
    "21211": ErrorClass(permanent=True, signal=Signal.UNREACHABLE),  # invalid 'To' number
    "30003": RETRYABLE,  # handset unreachable: may be temporary; the outbox limits attempts
    "30007": ErrorClass(signal=Signal.FILTERED),  # carrier filtering: do not retry unchanged
    "63016": ErrorClass(permanent=True, signal=Signal.WINDOW_CLOSED),  # WhatsApp via Twilio
    "20429": ErrorClass(retryable=True, signal=Signal.RATE_LIMITED),  # too many requests
    "20003": ErrorClass(signal=Signal.CREDENTIALS),  # authentication failed
}


def twilio_error_class(code: str, http_status: int = 400) -> ErrorClass:
    """How to treat a Twilio error code (create answer or status callback)."""
    return TWILIO_ERRORS.get(str(code)) or classify_http_status(http_status)


def build_form(message: OutboundMessage, credentials: Mapping[str, str]) -> dict[str, str]:
    """The form fields for creating the message (SMS carries rendered text, also for templates)."""
    if not message.text:
        raise invalid_message(_("An SMS needs a text."))
    if len(message.text) > BODY_MAX_CHARS:
        raise invalid_message(
            _("An SMS may have at most %(max)d characters.") % {"max": BODY_MAX_CHARS}
        )
    form = {"To": message.to}
    if credentials.get("messaging_service_sid"):
        form["MessagingServiceSid"] = credentials["messaging_service_sid"]
    elif credentials.get("from_number"):
        form["From"] = credentials["from_number"]
    else:
        require_credentials(credentials, "messaging_service_sid")
    form["Body"] = message.text
    if message.status_callback_url:
        form["StatusCallback"] = message.status_callback_url
    return form


def _basic_auth(credentials: Mapping[str, str]) -> tuple[str, str]:
    if credentials.get("api_key_sid"):
        key_sid, key_secret = require_credentials(credentials, "api_key_sid", "api_key_secret")
        return key_sid, key_secret
    account_sid, auth_token = require_credentials(credentials, "account_sid", "auth_token")
    return account_sid, auth_token


class TwilioSmsProvider:
    """Sends SMS through Twilio's REST API. Base URL and timeouts default to settings."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        timeout: httpx.Timeout | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or settings.TWILIO_API_BASE_URL).rstrip("/")
        self.timeout = timeout or transport.default_timeout()
        self.client = client

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        (account_sid,) = require_credentials(credentials, "account_sid")
        auth = _basic_auth(credentials)
        form = build_form(message, credentials)
        headers = {IDEMPOTENCY_HEADER: message.idempotency_key} if message.idempotency_key else {}
        url = f"{self.base_url}/{API_VERSION}/Accounts/{quote(account_sid, safe='')}/Messages.json"
        response = transport.post(
            url, data=form, auth=auth, headers=headers, timeout=self.timeout, client=self.client
        )
        data = transport.json_body(response)
        if not response.is_success:
            raise _error(response, data)
        return _result(data)


def _result(data: Mapping[str, Any]) -> SendResult:
    sid = data.get("sid")
    if not isinstance(sid, str) or not sid:
        # A 2xx without a sid: the message probably left, but nothing matches it.
        raise ProviderTimeout(
            _("Twilio accepted the request but its answer names no message sid."),
            code="unreadable_response",
        )
    status = data.get("status")
    # "queued" without a Messaging Service, "accepted" with one (README §5).
    known: SendStatus = status if status in get_args(SendStatus) else "accepted"
    return SendResult(provider_message_id=sid, status=known, raw=data)


def _error(response: httpx.Response, data: Mapping[str, Any]) -> ProviderError:
    code = str(data.get("code") or f"http_{response.status_code}")
    text = str(data.get("message") or response.reason_phrase or _("Twilio refused the message."))
    return ProviderError(
        text,
        code=code,
        error_class=twilio_error_class(code, response.status_code),
        http_status=response.status_code,
        retry_after=transport.retry_after(response),
        raw=data,
    )
