"""Receiving: inbound messages, delivery receipts and provider events from verified webhooks.

The WhatsApp webhook view verifies a request and stores its raw body in the webhook inbox
(`inbound_webhook_accept`, one INSERT) before it answers; a drain task then applies the rows
no task has tried yet, in batches (`inbound_webhooks_process_pending`), and a periodic sweep
queues again, one task per row (`inbound_webhook_process`), rows whose processing was lost. The
Twilio view still parses and applies its request at once. Both hand the WebhookBatch to
`webhook_batch_process`. Every item runs in its own transaction (a savepoint inside an outer
one), so one broken item neither undoes nor blocks the others; the view keeps the raw body in
quarantine when an item failed and still answers 200, because a provider retries a failed
request for days and the good items are already stored (and deduplicated on a retry).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Final

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone, translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from kombu.exceptions import OperationalError as KombuOperationalError

from approvals.errors import ProviderStatusInvalid
from approvals.services import template_provider_status_update
from consent import keywords
from consent.services import InboundConsentOutcome, consent_inbound_message
from crm.addresses import normalise_address
from crm.errors import DomainError
from crm.models import Contact, ContactPoint
from crm.services import ContactPointDuplicate, contact_create, contact_point_add
from messaging.errors import SendRefused
from messaging.models import (
    ChannelAccount,
    Direction,
    InboundWebhook,
    InboxStatus,
    Message,
    MessageKind,
    MessageStatus,
    QuarantinedPayload,
    SenderKind,
    StatusReceipt,
)
from messaging.services.conversations import conversation_inbound_received
from messaging.services.events import message_received_publish
from messaging.services.ledger import conversation_for, message_record
from messaging.services.receipts import message_status_apply
from messaging.services.send import message_send
from messaging.webhooks.events import (
    InboundMessage,
    ProviderErrorEvent,
    StatusUpdate,
    TemplateQualityEvent,
    TemplateStatusEvent,
    WebhookBatch,
    WebhookPayloadInvalid,
)
from messaging.webhooks.whatsapp import parse_whatsapp_body

logger = logging.getLogger(__name__)

ORIGIN_CONSENT_KEYWORD: Final = "consent_keyword"
# Inbound kinds whose words are in `text` (a tapped button's label counts as written text).
TEXT_KINDS: Final = frozenset({"text", "button", "interactive"})
# Meta writes "NONE" when a template event has no reason; we store no reason then.
NO_REASON: Final = "NONE"
FIRST_NAME_MAX: Final = 100
# A pending inbox row nobody tried for this long lost its task (broker outage, worker killed
# mid-way); the sweep queues it again. Far above a normal queue wait, so it rarely races.
INBOX_RETRY_AFTER: Final = timedelta(minutes=5)
# After this many tries the body goes to quarantine instead of being retried for ever.
INBOX_MAX_ATTEMPTS: Final = 5
INBOX_SWEEP_BATCH: Final = 1000
# The view queues a drain of the inbox to start this long (seconds) after its commit, and no
# other while that one is still to come (see _DrainDispatcher): a few publishes per second per
# process instead of one per request, for at most this much more delay.
INBOX_DISPATCH_DELAY: Final = 0.5
# A commit this close to the queued drain's start queues another: worker clocks may differ.
INBOX_DISPATCH_CLOCK_MARGIN: Final = 0.1
# A drain claims this many rows per commit and stops after INBOX_DRAIN_LIMIT, queueing its
# successor, so a burst never holds a worker process for long.
INBOX_DRAIN_CHUNK: Final = 20
INBOX_DRAIN_LIMIT: Final = 500
# How each provider's stored body becomes a WebhookBatch (only WhatsApp goes via the inbox).
INBOX_PARSERS: Final[dict[str, Callable[[bytes], WebhookBatch]]] = {
    "whatsapp_cloud": parse_whatsapp_body
}


class WebhookMisrouted(DomainError):
    """The item belongs to another sender than the account whose URL received it."""

    code = "webhook_misrouted"


@dataclass
class BatchResult:
    """What one webhook request did; `errors` describe the items that failed (quarantine)."""

    messages: list[Message] = field(default_factory=list)
    receipts: list[StatusReceipt] = field(default_factory=list)
    templates_changed: int = 0
    logged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors)


def _stored(account: ChannelAccount, provider_message_id: str) -> Message | None:
    return Message.objects.filter(account=account, provider_message_id=provider_message_id).first()


def _point(account: ChannelAccount, address: str) -> ContactPoint | None:
    return (
        ContactPoint.objects.select_related("contact")
        .filter(team_id=account.team_id, channel=account.channel, address=address)
        .first()
    )


def _contact_for(account: ChannelAccount, address: str, profile_name: str) -> Contact:
    """The team's contact with this address on the account's channel, or a new one.

    A new contact gets no consent: writing to us is not an opt-in to marketing.
    """
    point = _point(account, address)
    if point is not None:
        return point.contact
    try:
        # One savepoint for both writes, so a lost race leaves no contact without address.
        with transaction.atomic():
            contact = contact_create(
                team=account.team, actor=None, first_name=profile_name.strip()[:FIRST_NAME_MAX]
            )
            contact_point_add(contact=contact, channel=account.channel, address=address, actor=None)
    except ContactPointDuplicate:
        # A concurrent delivery from the same new sender created the contact a moment ago.
        point = _point(account, address)
        if point is None:
            raise
        return point.contact
    return contact


def _consent_text(inbound: InboundMessage) -> str:
    """The words consent keywords are read from.

    A tapped button's payload or Twilio's opt-out verdict wins when it is a keyword and the
    visible text is not (a button labelled "Keine Werbung mehr" with payload STOP).
    """
    for candidate in (inbound.text, inbound.payload, inbound.opt_out_type):
        if candidate and keywords.keyword_kind(candidate):
            return candidate
    return inbound.text or inbound.payload or ""


def _consent_outcome(
    contact: Contact, channel: str, inbound: InboundMessage
) -> InboundConsentOutcome:
    text = _consent_text(inbound)
    if not text.strip():
        return InboundConsentOutcome("none")
    try:
        with transaction.atomic():
            return consent_inbound_message(
                contact=contact,
                channel=channel,
                text=text,
                message_ref=inbound.provider_message_id,
                occurred_at=inbound.occurred_at,
            )
    except DomainError as exc:
        # A refusal (e.g. too many opt-in requests today) must not lose the message itself.
        logger.warning(
            "inbound %s: consent not applied (%s)", inbound.provider_message_id, exc.code
        )
        return InboundConsentOutcome("none")


def _help_text(contact: Contact) -> str:
    with translation.override(contact.language or "de"):
        return gettext(
            "Reply STOP to receive no more messages here, or START to subscribe again. "
            "For anything else, just write your question."
        )


def _keyword_reply(
    *, contact: Contact, account: ChannelAccount, address: str, outcome: InboundConsentOutcome
) -> Message | None:
    """Confirm a keyword to the contact (DESIGN: every keyword is answered), through the gate."""
    text = outcome.reply or (_help_text(contact) if outcome.kind == "help" else "")
    if not text:
        return None
    try:
        return message_send(
            contact=contact,
            account=account,
            actor=None,
            sender_kind=SenderKind.SYSTEM,
            text=text,
            address=address,
            origin=ORIGIN_CONSENT_KEYWORD,
        )
    except SendRefused as exc:
        logger.warning("keyword reply to contact %s refused (%s)", contact.pk, exc.code)
        return None


@transaction.atomic
def inbound_message_receive(*, account: ChannelAccount, inbound: InboundMessage) -> Message:
    """Store one inbound message once per provider id, apply consent keywords, answer them,
    and hand any other message to the conversation (reopen, hand-off, automation).

    A repeated delivery, also a concurrent one or one days later, returns the stored message
    and changes nothing. An unknown sender becomes a contact of the account's team.
    """
    if inbound.channel != account.channel:
        raise WebhookMisrouted(
            _("A %(channel)s message cannot arrive at a %(account)s account.")
            % {"channel": inbound.channel, "account": account.channel}
        )
    existing = _stored(account, inbound.provider_message_id)
    if existing is not None:
        return existing
    address = normalise_address(account.channel, inbound.from_address)
    contact = _contact_for(account, address, inbound.profile_name)
    conversation = conversation_for(contact=contact, account=account)
    try:
        with transaction.atomic():
            message = message_record(
                conversation=conversation,
                label=SenderKind.CONTACT,
                occurred_at=inbound.occurred_at,
                direction=Direction.INBOUND,
                kind=MessageKind.TEXT if inbound.kind in TEXT_KINDS else MessageKind.MEDIA,
                body=inbound.text,
                sender_kind=SenderKind.CONTACT,
                status=MessageStatus.RECEIVED,
                provider_message_id=inbound.provider_message_id,
            )
    except IntegrityError:
        # The same delivery, processed at the same moment, won the unique provider id.
        existing = _stored(account, inbound.provider_message_id)
        if existing is None:
            raise
        return existing
    message_received_publish(message=message)
    outcome = _consent_outcome(contact, account.channel, inbound)
    if outcome.is_keyword:
        _keyword_reply(contact=contact, account=account, address=address, outcome=outcome)
    else:
        conversation_inbound_received(conversation=conversation, message=message)
    return message


def _ensure_routed(account: ChannelAccount, phone_number_id: str | None) -> None:
    """Meta sends every number of an app to the app's callback URL: an item for another
    number than this account's must not be recorded (or answered) under this account."""
    if (
        account.provider == "whatsapp_cloud"
        and account.external_id
        and phone_number_id
        and phone_number_id != account.external_id
    ):
        raise WebhookMisrouted(
            _("The item is for phone number id %(got)s, the account has %(expected)s.")
            % {"got": phone_number_id, "expected": account.external_id}
        )


def _template_status_apply(event: TemplateStatusEvent) -> int:
    try:
        changed = template_provider_status_update(
            status=event.event,
            reason="" if event.reason == NO_REASON else (event.reason or ""),
            provider_template_id=event.provider_template_id,
            name=event.name,
            language=event.language,
        )
    except ProviderStatusInvalid:
        # An event we have no status for (e.g. ARCHIVED): retrying would not help.
        logger.warning(
            "template %s (%s): provider event %s not applied",
            event.name,
            event.provider_template_id,
            event.event,
        )
        return 0
    return len(changed)


def _quality_log(event: TemplateQualityEvent) -> None:
    logger.info(
        "template %s/%s (%s): quality %s -> %s",
        event.name,
        event.language,
        event.provider_template_id,
        event.previous_quality_score,
        event.new_quality_score,
    )


def _provider_error_log(account: ChannelAccount, event: ProviderErrorEvent) -> None:
    logger.warning(
        "account %s: provider error %s %s %s",
        account.slug,
        event.code,
        event.title or event.message,
        event.details,
    )


def _isolated(
    result: BatchResult, account: ChannelAccount, item: str, work: Callable[[], None]
) -> None:
    """Run one item in its own savepoint; a failure is logged and noted for quarantine."""
    try:
        with transaction.atomic():
            work()
    except Exception as exc:  # any failure of one item must spare the rest of the batch
        logger.exception("account %s: webhook item %s failed", account.slug, item)
        result.errors.append(f"{item}: {exc!r}")


def webhook_batch_process(*, account: ChannelAccount, batch: WebhookBatch) -> BatchResult:
    """Apply every item of one verified webhook request, each in its own transaction.

    Not atomic on purpose: items already applied stay applied when a later one fails.
    """
    result = BatchResult()

    def receive(inbound: InboundMessage) -> None:
        _ensure_routed(account, inbound.phone_number_id)
        result.messages.append(inbound_message_receive(account=account, inbound=inbound))

    def apply_status(update: StatusUpdate) -> None:
        _ensure_routed(account, update.phone_number_id)
        result.receipts.append(message_status_apply(account=account, update=update))

    def apply_template(event: TemplateStatusEvent) -> None:
        result.templates_changed += _template_status_apply(event)

    for inbound in batch.messages:
        _isolated(
            result, account, f"message {inbound.provider_message_id}", partial(receive, inbound)
        )
    for update in batch.statuses:
        item = f"status {update.provider_message_id}/{update.provider_status}"
        _isolated(result, account, item, partial(apply_status, update))
    for event in batch.template_statuses:
        item = f"template {event.provider_template_id}/{event.event}"
        _isolated(result, account, item, partial(apply_template, event))
    for quality in batch.template_qualities:
        _quality_log(quality)
        result.logged += 1
    for error in batch.errors:
        _provider_error_log(account, error)
        result.logged += 1
    for field_name in batch.ignored_fields:
        logger.info("account %s: webhook field %s ignored", account.slug, field_name)
        result.logged += 1
    return result


@transaction.atomic
def webhook_payload_quarantine(
    *, account: ChannelAccount, body: bytes, content_type: str, errors: list[str]
) -> QuarantinedPayload:
    """Keep a verified payload whose processing failed, with its body, for a later retry."""
    return QuarantinedPayload.objects.create(
        account=account,
        provider=account.provider,
        body=body.decode("utf-8", errors="replace"),
        content_type=content_type[:120],
        error="\n".join(errors),
    )


def inbound_webhook_accept(
    *, account: ChannelAccount, body: bytes, content_type: str
) -> int | None:
    """Store a verified request body in the webhook inbox and have it processed after commit.

    One statement, so the provider gets its answer after a single commit. Returns the new row's
    id, or None when this account already received exactly these bytes (a provider's retry):
    that row is processed, queued or left to the sweep, never applied twice.
    """
    table = InboundWebhook._meta.db_table
    # INSERT … ON CONFLICT DO NOTHING RETURNING (PostgreSQL and SQLite alike): the ORM would
    # need an exception and a savepoint for the duplicate case.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "  # noqa: S608 - the table name is our own model's
            "(account_id, body, body_sha256, content_type, status, attempts, received_at) "
            "VALUES (%s, %s, %s, %s, %s, 0, %s) "
            "ON CONFLICT (account_id, body_sha256) DO NOTHING RETURNING id",
            [
                account.pk,
                body.decode("utf-8"),
                hashlib.sha256(body).hexdigest(),
                content_type[:120],
                InboxStatus.PENDING,
                timezone.now(),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    transaction.on_commit(partial(_inbound_webhook_dispatch, row[0]))
    return row[0]


class _DrainDispatcher:
    """Queues the inbox drain task at most once per INBOX_DISPATCH_DELAY in this process.

    Publishing a task per accepted request cost as much as storing it. Instead each queued
    drain is told to start INBOX_DISPATCH_DELAY after it was queued (an ETA), so every row that
    commits before then is seen by it: a commit inside that window needs no task of its own.
    Rows of a lost drain (broker outage, killed worker) are the sweep's, as before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued_drain_starts_at = 0.0  # wall clock; the queued drain starts no earlier

    def __call__(self, webhook_id: int) -> None:
        from messaging.tasks import process_inbound_webhook, process_inbound_webhooks

        try:
            if process_inbound_webhooks.app.conf.task_always_eager:
                # No worker (demo, tests): the request applies its own row, as it always did.
                process_inbound_webhook.delay(webhook_id)
                return
            now = time.time()
            with self._lock:
                if now < self._queued_drain_starts_at - INBOX_DISPATCH_CLOCK_MARGIN:
                    return
                self._queued_drain_starts_at = now + INBOX_DISPATCH_DELAY
            process_inbound_webhooks.apply_async(countdown=INBOX_DISPATCH_DELAY)
        except (KombuOperationalError, OSError):
            # The row is committed and the provider answered: the sweep queues it later.
            with self._lock:
                self._queued_drain_starts_at = 0.0
            logger.warning("inbound webhook %s: broker unavailable, left to the sweep", webhook_id)


_inbound_webhook_dispatch = _DrainDispatcher()


def _inbox_claim(webhook_id: int) -> bool:
    """Count the attempt in its own commit, so a crash that undoes the work still counts."""
    return bool(
        InboundWebhook.objects.filter(pk=webhook_id, status=InboxStatus.PENDING).update(
            attempts=F("attempts") + 1, attempted_at=timezone.now()
        )
    )


def _inbox_quarantine(webhook: InboundWebhook, errors: list[str]) -> None:
    webhook_payload_quarantine(
        account=webhook.account,
        body=webhook.body.encode("utf-8"),
        content_type=webhook.content_type,
        errors=errors,
    )


def _inbox_apply(webhook_id: int, *, skip_locked: bool) -> str:
    """Apply one claimed inbox row; its new status commits together with the work.

    `skip_locked` leaves a row another transaction holds to it. A drain must wait instead: a
    concurrent drain's claim may hold its row for a moment, and skipping would strand it.
    """
    with transaction.atomic():
        webhook = (
            InboundWebhook.objects.select_for_update(skip_locked=skip_locked, of=("self",))
            .select_related("account__team")
            .filter(pk=webhook_id, status=InboxStatus.PENDING)
            .first()
        )
        if webhook is None:
            return "skipped"
        try:
            batch = INBOX_PARSERS[webhook.account.provider](webhook.body.encode("utf-8"))
        except WebhookPayloadInvalid as exc:
            # The view parsed it before storing; only a changed parser can get here.
            errors = [f"payload: {exc.message}"]
        else:
            errors = webhook_batch_process(account=webhook.account, batch=batch).errors
        if errors:
            _inbox_quarantine(webhook, errors)
        webhook.status = InboxStatus.FAILED if errors else InboxStatus.PROCESSED
        webhook.processed_at = timezone.now()
        webhook.save(update_fields=["status", "processed_at"])
    return "quarantined" if errors else "processed"


def inbound_webhook_process(*, webhook_id: int) -> str:
    """Apply one inbox row with `webhook_batch_process`, exactly as the view used to.

    Returns "processed", "quarantined" (some items failed: the body is in quarantine, as
    before) or "skipped" (already done, or another worker holds it). The work and the row's
    new status commit together: a crash half-way leaves the row pending for a retry, and the
    items already stored are recognised by their provider ids then.
    """
    if not _inbox_claim(webhook_id):
        return "skipped"
    return _inbox_apply(webhook_id, skip_locked=True)


@transaction.atomic
def _inbox_claim_fresh() -> list[int]:
    """Up to INBOX_DRAIN_CHUNK never-tried pending rows, oldest first, claimed in one commit.

    Claimed rows have an attempt time, so another drain skips them and, should this one die,
    the sweep retries them. Rows already tried are the sweep's alone.
    """
    webhook_ids = list(
        InboundWebhook.objects.select_for_update(skip_locked=True)
        .filter(status=InboxStatus.PENDING, attempted_at__isnull=True)
        .order_by("received_at", "id")
        .values_list("id", flat=True)[:INBOX_DRAIN_CHUNK]
    )
    if webhook_ids:
        InboundWebhook.objects.filter(pk__in=webhook_ids).update(
            attempts=F("attempts") + 1, attempted_at=timezone.now()
        )
    return webhook_ids


@dataclass(frozen=True)
class DrainResult:
    """What one drain did; `more` means it stopped at its limit with rows still waiting."""

    outcomes: dict[str, int]
    more: bool


def inbound_webhooks_process_pending(*, limit: int = INBOX_DRAIN_LIMIT) -> DrainResult:
    """Apply the inbox's never-tried pending rows, oldest first, at most `limit` of them.

    Several drains may run at once: each claims its own rows (SKIP LOCKED). Every row is
    applied in its own transaction, as by `inbound_webhook_process`.
    """
    outcomes: dict[str, int] = {}
    done = 0
    while done < limit:
        webhook_ids = _inbox_claim_fresh()
        if not webhook_ids:
            return DrainResult(outcomes, more=False)
        for webhook_id in webhook_ids:
            try:
                outcome = _inbox_apply(webhook_id, skip_locked=False)
            except Exception:  # one row's crash must not strand the rest of the chunk
                # Its attempt is counted and its work undone: the sweep retries it later.
                logger.exception("inbound webhook %s: processing failed", webhook_id)
                outcome = "failed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        done += len(webhook_ids)
    return DrainResult(outcomes, more=True)


@transaction.atomic
def inbound_webhooks_claim_lost(*, now: datetime | None = None) -> list[int]:
    """Pending inbox rows whose task was lost or crashed: their ids, to be queued again.

    Rows that used up INBOX_MAX_ATTEMPTS go to quarantine (status failed) instead.
    """
    cutoff = (now or timezone.now()) - INBOX_RETRY_AFTER
    lost = list(
        InboundWebhook.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("account")
        .filter(status=InboxStatus.PENDING, received_at__lt=cutoff)
        .filter(Q(attempted_at__isnull=True) | Q(attempted_at__lt=cutoff))
        .order_by("received_at")[:INBOX_SWEEP_BATCH]
    )
    retry = []
    for webhook in lost:
        if webhook.attempts < INBOX_MAX_ATTEMPTS:
            retry.append(webhook.pk)
            continue
        logger.error("inbound webhook %s: gave up after %s attempts", webhook.pk, webhook.attempts)
        _inbox_quarantine(
            webhook, [gettext("Processing failed %(count)s times.") % {"count": webhook.attempts}]
        )
        webhook.status = InboxStatus.FAILED
        webhook.save(update_fields=["status"])
    return retry
