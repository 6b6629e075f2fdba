"""WhatsApp Cloud API (Meta): text and template messages.

`POST {WHATSAPP_GRAPH_BASE_URL}/{WHATSAPP_GRAPH_API_VERSION}/{phone_number_id}/messages` with
`Authorization: Bearer <access_token>` and a JSON body shaped like the fixtures in
tests/fixtures/providers/whatsapp/outbound/. Credentials: `phone_number_id`, `access_token`.

Idempotency: the Cloud API has no idempotency header or field, so a repeated POST is a second
message. We put our idempotency key into `biz_opaque_callback_data`, which Meta echoes in status
webhooks: a message the outbox left `unknown` can then be matched by its first status. That
helps reconciliation; it does not prevent a duplicate, so `unknown` messages are never resent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
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
    Signal,
    classify_http_status,
    invalid_message,
    require_credentials,
)

TEXT_MAX_CHARS: Final = 4096
CALLBACK_DATA_MAX_CHARS: Final = 512

_RATE_LIMITED: Final = ErrorClass(retryable=True, signal=Signal.RATE_LIMITED)

# Graph API error codes (README §6); branch on the code, never on the title. Also used for
# the asynchronous `statuses[].errors[]` of status webhooks. Unlisted codes fall back to the
# HTTP status (5xx retry, 4xx final).
WHATSAPP_ERRORS: Final[dict[str, ErrorClass]] = {
    "130429": _RATE_LIMITED,  # Cloud API throughput exceeded: back off exponentially
    "131048": _RATE_LIMITED,  # spam rate limit
    "131056": _RATE_LIMITED,  # too many messages to the same user (pair rate limit)
    "4": _RATE_LIMITED,  # app-level API call limit
    "80007": _RATE_LIMITED,  # WhatsApp Business Account rate limit
    "131047": ErrorClass(permanent=True, signal=Signal.WINDOW_CLOSED),  # only a template now
    "131049": ErrorClass(signal=Signal.ENGAGEMENT_LIMIT),  # no immediate retry; not an opt-out
    "131050": ErrorClass(permanent=True, signal=Signal.OPT_OUT),  # stopped marketing messages
    "131026": ErrorClass(permanent=True, signal=Signal.UNREACHABLE),  # not a WhatsApp user
    "131000": RETRYABLE,  # "something went wrong" on Meta's side
    "131016": RETRYABLE,  # service temporarily unavailable
    "190": ErrorClass(signal=Signal.CREDENTIALS),  # access token expired or invalid
}


def whatsapp_error_class(code: str, http_status: int = 400) -> ErrorClass:
    """How to treat a WhatsApp error code (sync answer or status webhook)."""
    return WHATSAPP_ERRORS.get(str(code)) or classify_http_status(http_status)


def build_payload(message: OutboundMessage) -> dict[str, Any]:
    """The Messages API request body for `message` (text or template)."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to,
    }
    if message.kind == "template":
        payload["type"] = "template"
        payload["template"] = _template(message)
    else:
        if not message.text:
            raise invalid_message(_("A WhatsApp text message needs a text."))
        if len(message.text) > TEXT_MAX_CHARS:
            raise invalid_message(
                _("A WhatsApp text may have at most %(max)d characters.") % {"max": TEXT_MAX_CHARS}
            )
        payload["type"] = "text"
        payload["text"] = {"preview_url": message.preview_url, "body": message.text}
    # Echoed in status webhooks; our idempotency key unless the caller chose its own data.
    callback_data = message.callback_data or message.idempotency_key
    if callback_data:
        if len(callback_data) > CALLBACK_DATA_MAX_CHARS:
            raise invalid_message(_("The WhatsApp callback data is too long."))
        payload["biz_opaque_callback_data"] = callback_data
    return payload


def _template(message: OutboundMessage) -> dict[str, Any]:
    if not message.template_name or not message.template_language:
        raise invalid_message(_("A WhatsApp template message needs a template name and language."))
    components: list[dict[str, Any]] = []
    if message.body_parameters:
        parameters = [{"type": "text", "text": value} for value in message.body_parameters]
        components.append({"type": "body", "parameters": parameters})
    for index, payload in enumerate(message.button_payloads):
        components.append(
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": str(index),
                "parameters": [{"type": "payload", "payload": payload}],
            }
        )
    template: dict[str, Any] = {
        "name": message.template_name,
        "language": {"policy": "deterministic", "code": message.template_language},
    }
    if components:
        template["components"] = components
    return template


class WhatsAppCloudProvider:
    """Sends through the Cloud API. Base URL, API version and timeouts default to settings."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout: httpx.Timeout | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or settings.WHATSAPP_GRAPH_BASE_URL).rstrip("/")
        self.api_version = api_version or settings.WHATSAPP_GRAPH_API_VERSION
        self.timeout = timeout or transport.default_timeout()
        self.client = client

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        phone_number_id, access_token = require_credentials(
            credentials, "phone_number_id", "access_token"
        )
        payload = build_payload(message)
        url = f"{self.base_url}/{self.api_version}/{quote(phone_number_id, safe='')}/messages"
        response = transport.post(
            url,
            json=payload,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=self.timeout,
            client=self.client,
        )
        data = transport.json_body(response)
        if not response.is_success:
            raise _error(response, data)
        return _result(data)


def _result(data: Mapping[str, Any]) -> SendResult:
    messages = data.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(wamid, str) or not wamid:
        # A 2xx without a message id: the message probably left, but nothing matches it.
        raise ProviderTimeout(
            _("WhatsApp accepted the request but its answer names no message id."),
            code="unreadable_response",
        )
    return SendResult(provider_message_id=wamid, status="accepted", raw=data)


def _error(response: httpx.Response, data: Mapping[str, Any]) -> ProviderError:
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or f"http_{response.status_code}")
    text = str(error.get("message") or response.reason_phrase or _("WhatsApp refused the message."))
    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    if details:
        text = f"{text}: {details}"
    error_class = whatsapp_error_class(code, response.status_code)
    return ProviderError(
        text,
        code=code,
        error_class=error_class,
        http_status=response.status_code,
        retry_after=transport.retry_after(response),
        raw=data,
    )
