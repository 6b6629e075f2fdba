"""Parse Twilio Programmable Messaging webhooks (form fields) into provider-neutral events.

One URL receives both incoming messages and status callbacks; `is_twilio_status_callback`
tells them apart. Twilio's requests carry no event time, so `received_at` (default: now) is
used. Call these only after `twilio_signature_ok` accepted the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging.webhooks.events import (
    CHANNEL_SMS,
    PROVIDER_TWILIO,
    DeliveryStatus,
    InboundMessage,
    StatusUpdate,
    WebhookPayloadInvalid,
)

# Twilio's MessageStatus values (SDK enum) mapped onto our lifecycle. Statuses before the
# hand-over to the carrier are "queued"; "canceled" (a scheduled send called off) is final.
# "partially_delivered" only proves that the message left Twilio, so it counts as "sent".
_STATUS_MAP: Final[dict[str, DeliveryStatus]] = {
    "accepted": DeliveryStatus.QUEUED,
    "scheduled": DeliveryStatus.QUEUED,
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "partially_delivered": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "canceled": DeliveryStatus.FAILED,
}
# Statuses of a message sent TO us: such a request is an incoming message, not a receipt.
_INBOUND_STATUSES: Final = frozenset({"receiving", "received"})
OPT_OUT_TYPES: Final = frozenset({"STOP", "START", "HELP"})
_E164: Final = re.compile(r"\+[1-9]\d{1,14}")


def _value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookPayloadInvalid(_("%(path)s must be a string.") % {"path": name})
    return value


def _required(params: Mapping[str, str], name: str) -> str:
    value = _value(params, name)
    if value is None:
        raise WebhookPayloadInvalid(_("%(path)s is missing.") % {"path": name})
    if not value.strip():
        raise WebhookPayloadInvalid(_("%(path)s must be a non-empty string.") % {"path": name})
    return value.strip()


def _message_sid(params: Mapping[str, str]) -> str:
    # SmsSid is the deprecated twin of MessageSid; accept it when MessageSid is absent.
    use_sms_sid = params.get("MessageSid") is None and params.get("SmsSid") is not None
    return _required(params, "SmsSid" if use_sms_sid else "MessageSid")


def _received_at(received_at: datetime | None) -> datetime:
    if received_at is None:
        return timezone.now().astimezone(UTC)
    if timezone.is_naive(received_at):
        raise ValueError("received_at must be an aware datetime")
    return received_at.astimezone(UTC)


def _provider_status(params: Mapping[str, str]) -> str | None:
    # SmsStatus is the deprecated twin of MessageStatus.
    value = _value(params, "MessageStatus")
    if value is None:
        value = _value(params, "SmsStatus")
    return value.strip().lower() if value is not None else None


def is_twilio_status_callback(params: Mapping[str, str]) -> bool:
    """True for a status callback about one of our messages, False for an incoming message."""
    try:
        status = _provider_status(params)
    except WebhookPayloadInvalid:
        return False
    return bool(status) and status not in _INBOUND_STATUSES


def parse_twilio_inbound(
    params: Mapping[str, str], *, received_at: datetime | None = None
) -> InboundMessage:
    """An incoming SMS/MMS. `opt_out_type` is Twilio's Advanced Opt-Out verdict, if sent."""
    sender = _required(params, "From")
    if not _E164.fullmatch(sender):
        raise WebhookPayloadInvalid(
            _("From must be a phone number in E.164 format (“%(value)s”).") % {"value": sender}
        )
    to_address = (_value(params, "To") or "").strip() or None
    num_media_raw = (_value(params, "NumMedia") or "0").strip()
    if not (num_media_raw.isascii() and num_media_raw.isdigit()):
        raise WebhookPayloadInvalid(_("NumMedia must be a number."))
    opt_out = (_value(params, "OptOutType") or "").strip().upper() or None
    return InboundMessage(
        provider=PROVIDER_TWILIO,
        channel=CHANNEL_SMS,
        provider_message_id=_message_sid(params),
        from_address=sender,
        to_address=to_address,
        account_id=_value(params, "AccountSid"),
        profile_name=(_value(params, "ProfileName") or "").strip(),
        occurred_at=_received_at(received_at),
        kind="media" if int(num_media_raw) > 0 else "text",
        text=_value(params, "Body") or "",
        opt_out_type=opt_out,
        raw=dict(params.items()),
    )


def parse_twilio_status(
    params: Mapping[str, str], *, received_at: datetime | None = None
) -> StatusUpdate:
    """A status callback; `failed`/`undelivered` carry Twilio's ErrorCode (e.g. 21610, 30003)."""
    provider_status = _provider_status(params)
    if not provider_status:
        raise WebhookPayloadInvalid(_("%(path)s is missing.") % {"path": "MessageStatus"})
    if provider_status in _INBOUND_STATUSES:
        raise WebhookPayloadInvalid(
            _("MessageStatus “%(value)s” belongs to an incoming message, not a status callback.")
            % {"value": provider_status}
        )
    error_code = (_value(params, "ErrorCode") or "").strip() or None
    if error_code is not None and not (error_code.isascii() and error_code.isdigit()):
        raise WebhookPayloadInvalid(_("ErrorCode must be a number."))
    return StatusUpdate(
        provider=PROVIDER_TWILIO,
        channel=CHANNEL_SMS,
        provider_message_id=_message_sid(params),
        status=_STATUS_MAP.get(provider_status),
        provider_status=provider_status,
        occurred_at=_received_at(received_at),
        recipient=(_value(params, "To") or "").strip() or None,
        error_code=error_code,
        error_title=(_value(params, "ErrorMessage") or "").strip(),
        account_id=_value(params, "AccountSid"),
        raw=dict(params.items()),
    )
