"""The pure webhook layer: signature checks and payload parsing for WhatsApp and Twilio.

No models and no I/O: the webhook views verify the raw request with `signatures`, parse it
with `parse_whatsapp` / `parse_twilio_*` and hand the resulting events to the services.
"""

from __future__ import annotations

from messaging.webhooks.events import (
    DeliveryStatus,
    InboundMessage,
    ProviderErrorEvent,
    StatusUpdate,
    TemplateQualityEvent,
    TemplateStatusEvent,
    WebhookBatch,
    WebhookPayloadInvalid,
)
from messaging.webhooks.signatures import (
    meta_signature_ok,
    meta_verification_challenge,
    twilio_json_signature_ok,
    twilio_signature_ok,
)
from messaging.webhooks.twilio import (
    is_twilio_status_callback,
    parse_twilio_inbound,
    parse_twilio_status,
)
from messaging.webhooks.whatsapp import parse_whatsapp, parse_whatsapp_body

__all__ = [
    "DeliveryStatus",
    "InboundMessage",
    "ProviderErrorEvent",
    "StatusUpdate",
    "TemplateQualityEvent",
    "TemplateStatusEvent",
    "WebhookBatch",
    "WebhookPayloadInvalid",
    "is_twilio_status_callback",
    "meta_signature_ok",
    "meta_verification_challenge",
    "parse_twilio_inbound",
    "parse_twilio_status",
    "parse_whatsapp",
    "parse_whatsapp_body",
    "twilio_json_signature_ok",
    "twilio_signature_ok",
]
