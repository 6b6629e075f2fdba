"""Provider-neutral events parsed from webhooks, and the error for a payload we cannot read.

The parsers in `whatsapp.py` and `twilio.py` turn a verified request into these frozen
dataclasses; the webhook service (later) stores them without knowing the provider's shapes.
Addresses are E.164 with a leading "+", times are aware UTC datetimes, ids are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError

PROVIDER_WHATSAPP: Final = "whatsapp_cloud"
PROVIDER_TWILIO: Final = "twilio_sms"
# Same values as crm.models.Channel, kept as plain strings so this module needs no models.
CHANNEL_WHATSAPP: Final = "whatsapp"
CHANNEL_SMS: Final = "sms"


class WebhookPayloadInvalid(DomainError):
    """The (correctly signed) payload does not have the provider's documented shape."""

    code = "payload_invalid"
    status_code = 400

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message or _("The webhook payload is malformed."), field=field)


class DeliveryStatus(StrEnum):
    """Our outbound message lifecycle as far as provider receipts can tell it.

    Rank for monotonic updates: queued < sent < delivered < read; failed and undelivered are
    final. StrEnum members compare equal to their string values.
    """

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    UNDELIVERED = "undelivered"


@dataclass(frozen=True, kw_only=True)
class InboundMessage:
    """One message a person sent us.

    `text` is what the person wrote or the visible label of the button they tapped;
    `payload` is the machine id behind that button (template quick-reply payload, interactive
    reply id). Media and other non-text kinds keep `kind` and have an empty `text`.
    """

    provider: str
    channel: str
    provider_message_id: str
    from_address: str
    to_address: str | None
    occurred_at: datetime
    kind: str
    text: str = ""
    payload: str | None = None
    profile_name: str = ""
    phone_number_id: str | None = None
    account_id: str | None = None
    reply_to_provider_id: str | None = None
    referral: dict[str, Any] | None = None
    opt_out_type: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StatusUpdate:
    """A receipt for one of our outbound messages.

    `status` is None for a provider status outside our lifecycle (it is still worth recording;
    `provider_status` always holds the provider's own word).
    """

    provider: str
    channel: str
    provider_message_id: str
    status: DeliveryStatus | None
    provider_status: str
    occurred_at: datetime
    recipient: str | None = None
    error_code: str | None = None
    error_title: str = ""
    error_details: str = ""
    phone_number_id: str | None = None
    account_id: str | None = None
    callback_data: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TemplateStatusEvent:
    """Meta reviewed, paused, disabled ... a template (`message_template_status_update`)."""

    event: str
    provider_template_id: str
    name: str
    language: str
    reason: str | None = None
    category: str | None = None
    other_info: dict[str, Any] | None = None
    disable_info: dict[str, Any] | None = None
    account_id: str | None = None
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TemplateQualityEvent:
    """A template's quality rating changed (`message_template_quality_update`)."""

    provider_template_id: str
    name: str
    language: str
    previous_quality_score: str
    new_quality_score: str
    account_id: str | None = None
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ProviderErrorEvent:
    """A system- or app-level error the provider reports outside any message (`value.errors[]`)."""

    code: str | None
    title: str = ""
    message: str = ""
    details: str = ""
    href: str = ""
    phone_number_id: str | None = None
    account_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WebhookBatch:
    """Everything one webhook request carried, in payload order.

    `ignored_fields` names subscribed fields we do not handle (e.g. `account_update`), so the
    caller can log them instead of failing the whole request.
    """

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    template_statuses: list[TemplateStatusEvent] = field(default_factory=list)
    template_qualities: list[TemplateQualityEvent] = field(default_factory=list)
    errors: list[ProviderErrorEvent] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
