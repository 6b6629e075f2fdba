"""Delivery receipts: recorded as received, applied forward only, idempotent.

Providers repeat callbacks and deliver them out of order. Every receipt is kept once
(StatusReceipt is unique per account, provider id, provider status and error); it moves its
message only forward (`read` is not undone by a late `sent`; `failed` is final); a receipt
for a message we do not know stays unmatched until `receipts_apply_unmatched` finds it.
"""

from __future__ import annotations

import uuid
from typing import Final

from django.db import IntegrityError, transaction

from messaging.models import (
    FINAL_STATUSES,
    STATUS_RANK,
    ChannelAccount,
    Message,
    MessageStatus,
    StatusReceipt,
)
from messaging.providers import ErrorClass, Signal
from messaging.providers.twilio_sms import twilio_error_class
from messaging.providers.whatsapp import whatsapp_error_class
from messaging.services.events import message_status_publish
from messaging.services.ledger import message_update, status_event_append
from messaging.services.optout import provider_opt_out_record
from messaging.webhooks.events import DeliveryStatus, StatusUpdate

RECEIPT_STATUS: Final[dict[str, str]] = {
    DeliveryStatus.QUEUED: MessageStatus.QUEUED,
    DeliveryStatus.SENT: MessageStatus.SENT,
    DeliveryStatus.DELIVERED: MessageStatus.DELIVERED,
    DeliveryStatus.READ: MessageStatus.READ,
    DeliveryStatus.FAILED: MessageStatus.FAILED,
    DeliveryStatus.UNDELIVERED: MessageStatus.FAILED,
}
TIMESTAMP_FIELD: Final[dict[str, str]] = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
    MessageStatus.FAILED: "failed_at",
}


def error_class_for(provider: str, code: str) -> ErrorClass:
    classify = twilio_error_class if provider == "twilio_sms" else whatsapp_error_class
    return classify(code)


def _moves_forward(current: str, new: str) -> bool:
    if current in FINAL_STATUSES:
        return False
    if new == MessageStatus.FAILED:
        # A message the recipient has is not failed by a stray late error.
        return current not in (MessageStatus.DELIVERED, MessageStatus.READ)
    return STATUS_RANK.get(new, -1) > STATUS_RANK.get(current, -1)


def _message_for(account: ChannelAccount, update: StatusUpdate) -> Message | None:
    found = Message.objects.filter(
        account=account, provider_message_id=update.provider_message_id
    ).first()
    if found is None and update.callback_data:
        # Our idempotency key, echoed by the provider: finds a message left `unknown`.
        try:
            key = uuid.UUID(update.callback_data)
        except ValueError:
            return None
        found = Message.objects.filter(account=account, idempotency_key=key).first()
    return found


def _apply(receipt: StatusReceipt, message: Message, provider: str) -> None:
    message = Message.objects.select_for_update().select_related("contact").get(pk=message.pk)
    receipt.message = message
    changes: dict[str, object] = {}
    if not message.provider_message_id:
        changes["provider_message_id"] = receipt.provider_message_id
    if receipt.status and _moves_forward(message.status, receipt.status):
        changes["status"] = receipt.status
        changes[TIMESTAMP_FIELD.get(receipt.status, "sent_at")] = receipt.occurred_at
        if receipt.error_code:
            changes["error_code"] = receipt.error_code
            changes["error_detail"] = receipt.error_detail
        receipt.applied = True
    if changes:
        message_update(message, **changes)
    receipt.save(update_fields=["message", "applied"])
    if receipt.applied:
        status_event_append(
            message,
            receipt.status,
            data={"receipt": receipt.pk, "provider_status": receipt.provider_status},
        )
        message_status_publish(message=message)
    if receipt.error_code and error_class_for(provider, receipt.error_code).signal == (
        Signal.OPT_OUT
    ):
        provider_opt_out_record(
            contact=message.contact,
            channel=message.channel,
            code=receipt.error_code,
            message_ref=receipt.provider_message_id,
        )


@transaction.atomic
def message_status_apply(*, account: ChannelAccount, update: StatusUpdate) -> StatusReceipt:
    """Record one provider receipt and apply it to its message if that moves it forward.

    A duplicate (same provider id, status and error) returns the stored receipt and changes
    nothing, also when two copies arrive at the same moment.
    """
    key = {
        "account": account,
        "provider_message_id": update.provider_message_id,
        "provider_status": update.provider_status[:32],
        "error_code": (update.error_code or "")[:64],
    }
    existing = StatusReceipt.objects.filter(**key).first()
    if existing is not None:
        return existing
    receipt = StatusReceipt(
        **key,
        status=RECEIPT_STATUS.get(update.status, "") if update.status else "",
        error_detail=" ".join(filter(None, (update.error_title, update.error_details)))[:2000],
        occurred_at=update.occurred_at,
        raw=update.raw,
    )
    try:
        with transaction.atomic():
            receipt.save()
    except IntegrityError:
        return StatusReceipt.objects.get(**key)
    message = _message_for(account, update)
    if message is not None:
        _apply(receipt, message, account.provider)
    return receipt


def receipts_apply_unmatched(*, message: Message) -> int:
    """Apply receipts that arrived before the message's provider id was known."""
    pending = StatusReceipt.objects.filter(
        account_id=message.account_id,
        provider_message_id=message.provider_message_id,
        message__isnull=True,
    ).order_by("occurred_at", "id")
    applied = 0
    for receipt in pending:
        _apply(receipt, message, message.account.provider)
        applied += 1
    return applied
