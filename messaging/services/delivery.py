"""Delivery: the outbox is worked off by Celery tasks, at most once per message.

A message moves queued -> sending in a committed transaction before the provider is called;
a redelivered task (worker killed, broker redelivery) that finds `sending` marks the message
`unknown` for reconciliation instead of sending it again. Transient provider errors go back
to the outbox with exponential backoff (a due time in the database, no long Celery ETAs);
permanent ones fail the message with the provider's error. Due rows are claimed with
SELECT ... FOR UPDATE SKIP LOCKED, so two dispatchers never take the same row.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from messaging.models import (
    ChannelAccount,
    Conversation,
    Message,
    MessageStatus,
    OutboxEntry,
    OutboxState,
)
from messaging.providers import (
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    SendResult,
    Signal,
    provider_for,
)
from messaging.providers.base import invalid_message
from messaging.services.accounts import account_credentials
from messaging.services.gate import SendRequest, primary_address, send_gate_evaluate
from messaging.services.ledger import message_update, status_event_append
from messaging.services.optout import provider_opt_out_record
from messaging.services.receipts import receipts_apply_unmatched

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What the provider call needs, built while the message was still locked."""

    outbound: OutboundMessage
    credentials: dict[str, str]


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    DEFERRED = "deferred"
    SKIPPED = "skipped"


def backoff(attempt: int, retry_after: float | None = None) -> dt.timedelta:
    """Exponential: base * 2^(attempt-1), capped; the provider's Retry-After wins if longer."""
    seconds = min(
        settings.MESSAGING_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0),
        settings.MESSAGING_RETRY_MAX_SECONDS,
    )
    return dt.timedelta(seconds=max(seconds, retry_after or 0))


def _finish(message: Message, **outbox: Any) -> None:
    OutboxEntry.objects.filter(message_id=message.pk).update(state=OutboxState.DONE, **outbox)


def _status_callback_url(account: ChannelAccount, message: Message) -> str:
    """Twilio reports statuses here; the key lets us match a message left `unknown`."""
    if account.provider != "twilio_sms":
        return ""
    path = reverse("messaging:webhook-twilio", args=[account.slug])
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}?m={message.idempotency_key}"


def outbound_for(message: Message, address: str) -> OutboundMessage:
    """The adapter's view of a stored message."""
    version = message.template_version
    common: dict[str, Any] = {
        "to": address,
        "idempotency_key": str(message.idempotency_key),
        "callback_data": str(message.idempotency_key),
        "status_callback_url": _status_callback_url(message.account, message),
        "subject": message.subject,
    }
    if version is not None and message.channel == "whatsapp":
        # WhatsApp renders approved templates itself: send the name and the parameters.
        return OutboundMessage(
            kind="template",
            template_name=version.template.name,
            template_language=version.template.language,
            body_parameters=[str(message.variables[name]) for name in version.variables],
            text=message.body,
            **common,
        )
    return OutboundMessage(kind="text", text=message.body, **common)


@transaction.atomic
def _claim_for_sending(message_id: int, now: dt.datetime) -> tuple[Message, Prepared] | Outcome:
    """Lock the message, re-ask the gate and move it to `sending`; or say why not."""
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("contact", "account", "template_version__template__purpose")
        .filter(pk=message_id)
        .first()
    )
    if message is None:
        return Outcome.SKIPPED
    if message.status == MessageStatus.SENDING:
        # A previous attempt died after it may have called the provider: never resend blind.
        message_update(message, status=MessageStatus.UNKNOWN, error_code="interrupted")
        _finish(message)
        status_event_append(message, MessageStatus.UNKNOWN, data={"error": "interrupted"})
        return Outcome.UNKNOWN
    if message.status not in (MessageStatus.QUEUED, MessageStatus.SCHEDULED):
        return Outcome.SKIPPED
    if message.due_at is not None and message.due_at > now:
        return Outcome.DEFERRED
    request = message.gate_decision.get("request", {})
    conversation = Conversation.objects.get(pk=message.conversation_id)
    decision = send_gate_evaluate(
        SendRequest(
            contact=message.contact,
            account=message.account,
            template_version=message.template_version,
            conversation=conversation,
            address=request.get("address"),
            opt_in_confirmation=bool(request.get("opt_in_confirmation")),
            message_id=message.pk,
        ),
        at=now,
    )
    if not decision.allowed:
        record = {**message.gate_decision, "recheck": decision.as_record()}
        message_update(
            message,
            status=MessageStatus.REFUSED,
            gate_decision=record,
            error_code=decision.reason or "",
            failed_at=now,
        )
        _finish(message)
        status_event_append(message, MessageStatus.REFUSED, data={"reason": decision.reason})
        return Outcome.REFUSED
    if decision.deferred_until is not None:
        message_update(message, status=MessageStatus.SCHEDULED, due_at=decision.deferred_until)
        OutboxEntry.objects.filter(message_id=message.pk).update(due_at=decision.deferred_until)
        return Outcome.DEFERRED
    address = request.get("address") or primary_address(message.contact, message.account.channel)
    try:
        # Built before `sending`: a message that cannot be built fails now, visibly, instead
        # of ending `unknown` as if it might have left.
        prepared = Prepared(
            outbound=outbound_for(message, address or ""),
            credentials=account_credentials(message.account),
        )
    except (ProviderError, ValueError, KeyError) as error:
        _record_error(message, invalid_message(str(error)))
        return Outcome.FAILED
    message_update(message, status=MessageStatus.SENDING)
    OutboxEntry.objects.filter(message_id=message.pk).update(
        attempts=F("attempts") + 1, dispatched_at=now
    )
    return message, prepared


@transaction.atomic
def _record_sent(message: Message, result: SendResult) -> None:
    now = timezone.now()
    # Re-read under lock: a receipt matched by our key (WhatsApp, Twilio echo it) may have
    # moved the message to delivered or failed while the call was in flight; never undo that.
    message = (
        Message.objects.select_for_update(of=("self",)).select_related("account").get(pk=message.pk)
    )
    if message.status not in (MessageStatus.SENDING, MessageStatus.UNKNOWN):
        _finish(message, last_error="")
        receipts_apply_unmatched(message=message)
        return
    message_update(
        message,
        status=MessageStatus.SENT,
        provider_message_id=result.provider_message_id,
        sent_at=now,
        error_code="",
        error_detail="",
    )
    _finish(message, last_error="")
    status_event_append(
        message, MessageStatus.SENT, data={"provider_message_id": result.provider_message_id}
    )
    # Receipts that arrived before we knew the provider's id are applied now.
    receipts_apply_unmatched(message=message)


@transaction.atomic
def _record_error(message: Message, error: ProviderError) -> Outcome:
    now = timezone.now()
    detail = str(error)[:2000]
    if isinstance(error, ProviderTimeout):
        message_update(
            message, status=MessageStatus.UNKNOWN, error_code=error.code, error_detail=detail
        )
        _finish(message, last_error=detail)
        status_event_append(message, MessageStatus.UNKNOWN, data={"error": error.code})
        return Outcome.UNKNOWN
    entry = OutboxEntry.objects.select_for_update().get(message_id=message.pk)
    if error.retryable and entry.attempts < settings.MESSAGING_MAX_ATTEMPTS:
        due = now + backoff(entry.attempts, error.retry_after)
        message_update(
            message, status=MessageStatus.QUEUED, error_code=error.code, error_detail=detail
        )
        # Pending again also if a duplicate task marked the message unknown (and the row done)
        # while this call ran: the provider's answer says it was not sent.
        entry.state, entry.due_at, entry.last_error = OutboxState.PENDING, due, detail
        entry.save(update_fields=["state", "due_at", "last_error", "updated_at"])
        return Outcome.RETRY
    message_update(
        message,
        status=MessageStatus.FAILED,
        failed_at=now,
        error_code=error.code,
        error_detail=detail,
    )
    _finish(message, last_error=detail)
    status_event_append(message, MessageStatus.FAILED, data={"error": error.code})
    if error.signal == Signal.OPT_OUT:
        provider_opt_out_record(
            contact=message.contact,
            channel=message.channel,
            code=error.code,
            message_ref=str(message.idempotency_key),
        )
    return Outcome.FAILED


def message_deliver(*, message_id: int, now: dt.datetime | None = None) -> Outcome:
    """Deliver one outbox message if it is due and still allowed; idempotent.

    The provider is called outside any transaction (no row lock held over the network).
    """
    claimed = _claim_for_sending(message_id, now or timezone.now())
    if isinstance(claimed, Outcome):
        return claimed
    message, prepared = claimed
    try:
        result = provider_for(message.account.provider).send(
            prepared.outbound, prepared.credentials
        )
    except ProviderError as error:
        return _record_error(message, error)
    _record_sent(message, result)
    return Outcome.SENT


def outbox_claim_due(*, limit: int = 500, now: dt.datetime | None = None) -> list[int]:
    """Claim due outbox rows (SKIP LOCKED) and lease them; returns their message ids.

    The lease moves the row's due time forward: if the dispatched task is lost (broker down,
    worker gone), the row becomes due again and is dispatched again.
    """
    now = now or timezone.now()
    with transaction.atomic():
        entries = list(
            OutboxEntry.objects.select_for_update(skip_locked=True)
            .filter(state=OutboxState.PENDING, due_at__lte=now)
            .order_by("due_at")
            .values_list("pk", "message_id")[:limit]
        )
        lease = dt.timedelta(seconds=settings.MESSAGING_OUTBOX_LEASE_SECONDS)
        OutboxEntry.objects.filter(pk__in=[pk for pk, _ in entries]).update(
            due_at=now + lease, dispatched_at=now
        )
    return [message_id for _, message_id in entries]


def messages_reconcile_unknown(*, now: dt.datetime | None = None) -> int:
    """Unknown messages with no receipt after MESSAGING_UNKNOWN_AFTER_HOURS are failed with
    code `unconfirmed` (people decide whether to send again); returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(hours=settings.MESSAGING_UNKNOWN_AFTER_HOURS)
    stale = Message.objects.filter(
        status=MessageStatus.UNKNOWN, created_at__lt=cutoff, receipts__isnull=True
    ).values_list("pk", flat=True)
    count = 0
    for message_id in list(stale[:1000]):
        with transaction.atomic():
            message = Message.objects.select_for_update().get(pk=message_id)
            if message.status != MessageStatus.UNKNOWN:
                continue
            message_update(
                message, status=MessageStatus.FAILED, failed_at=now, error_code="unconfirmed"
            )
            status_event_append(message, MessageStatus.FAILED, data={"error": "unconfirmed"})
            count += 1
    return count
