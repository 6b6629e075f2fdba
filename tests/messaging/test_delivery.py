"""Delivery: outbox claiming, provider outcomes, crash recovery, receipts, broker outages.

A fake provider registered under the kind "fake" plays the provider's answers from a script;
the console provider stands in where the answer does not matter.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from consent.models import Consent, ConsentStatus
from messaging.models import (
    ConversationEvent,
    EventKind,
    Message,
    MessageStatus,
    OutboxEntry,
    OutboxState,
    StatusReceipt,
)
from messaging.providers import (
    PROVIDERS,
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    SendResult,
)
from messaging.providers.base import RETRYABLE
from messaging.providers.console import outbox, outbox_clear
from messaging.providers.twilio_sms import twilio_error_class
from messaging.providers.whatsapp import whatsapp_error_class
from messaging.services import (
    Outcome,
    message_deliver,
    message_send,
    message_status_apply,
    messages_reconcile_unknown,
    outbox_claim_due,
)
from messaging.services.delivery import backoff
from messaging.tasks import deliver_message, dispatch_due_messages
from messaging.webhooks.events import DeliveryStatus, StatusUpdate
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, sendable_version

pytestmark = pytest.mark.django_db

FAKE = "fake"


class WorkerKilled(Exception):
    """Stands for the worker process dying while the provider call is in flight."""


class FakeProvider:
    """Plays `script` in order, one step per call: an exception to raise, or a callable run
    while the request is "in flight" before the provider accepts. Records every call."""

    calls: ClassVar[list[OutboundMessage]] = []
    script: ClassVar[list[Exception | Callable[[OutboundMessage], None]]] = []

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        FakeProvider.calls.append(message)
        step = FakeProvider.script.pop(0) if FakeProvider.script else None
        if isinstance(step, Exception):
            raise step
        if step is not None:
            step(message)
        return SendResult(provider_message_id=fake_id(message.idempotency_key), status="accepted")


def fake_id(idempotency_key: Any) -> str:
    return f"fake-{idempotency_key}"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(PROVIDERS, FAKE, f"{FakeProvider.__module__}.FakeProvider")
    monkeypatch.setattr(FakeProvider, "calls", [])
    monkeypatch.setattr(FakeProvider, "script", [])
    return FakeProvider


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["whatsapp"])


@pytest.fixture
def version(team, purpose):
    return sendable_version(team, purpose=purpose)


@pytest.fixture
def contact(team, purpose):
    contact = reachable_contact(team)
    grant_consent(contact, purpose, "whatsapp")
    return contact


@pytest.fixture
def account(team, fake):
    return ChannelAccountFactory(team=team, provider=FAKE)


@pytest.fixture
def console_account(team):
    outbox_clear()
    return ChannelAccountFactory(team=team)


def queue(account, contact, version, **fields) -> Message:
    """Accept a message; its on-commit dispatch never runs (the test transaction never commits)."""
    return message_send(
        contact=contact, account=account, actor=None, template_version=version, **fields
    )


def entry_of(message: Message) -> OutboxEntry:
    return OutboxEntry.objects.get(message=message)


def status_events(message: Message) -> list[str]:
    events = ConversationEvent.objects.filter(message=message, kind=EventKind.STATUS)
    return [event.data["status"] for event in events.order_by("sequence")]


def receipt(message: Message, status: DeliveryStatus, **fields) -> StatusUpdate:
    values = {
        "provider": "whatsapp_cloud",
        "channel": "whatsapp",
        "provider_message_id": fake_id(message.idempotency_key),
        "status": status,
        "provider_status": str(status),
        "occurred_at": timezone.now(),
        **fields,
    }
    return StatusUpdate(**values)


# --- success and idempotency ---------------------------------------------------------------


def test_deliver_sends_once_and_a_second_call_does_nothing(console_account, contact, version):
    message = queue(console_account, contact, version)

    assert message_deliver(message_id=message.pk) == Outcome.SENT
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED

    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert len(outbox) == 1
    assert message.provider_message_id == outbox[0].provider_message_id
    assert outbox[0].message.idempotency_key == str(message.idempotency_key)
    entry = entry_of(message)
    assert (entry.state, entry.attempts) == (OutboxState.DONE, 1)
    assert status_events(message) == [MessageStatus.SENT]


# --- provider errors -----------------------------------------------------------------------


def test_retryable_error_requeues_with_backoff_and_counts_the_attempt(account, contact, version):
    FakeProvider.script = [
        ProviderError("Service unavailable", code="131016", error_class=RETRYABLE)
    ]
    message = queue(account, contact, version)
    before = timezone.now()

    assert message_deliver(message_id=message.pk) == Outcome.RETRY

    after = timezone.now()
    message.refresh_from_db()
    entry = entry_of(message)
    assert message.status == MessageStatus.QUEUED
    assert message.error_code == "131016"
    assert (entry.state, entry.attempts) == (OutboxState.PENDING, 1)
    assert before + backoff(1) <= entry.due_at <= after + backoff(1)
    assert "Service unavailable" in entry.last_error
    assert status_events(message) == []


def test_retry_waits_for_the_providers_retry_after_when_it_is_longer(account, contact, version):
    FakeProvider.script = [
        ProviderError("Too many requests", code="130429", error_class=RETRYABLE, retry_after=900)
    ]
    message = queue(account, contact, version)
    before = timezone.now()

    message_deliver(message_id=message.pk)

    assert entry_of(message).due_at >= before + dt.timedelta(seconds=900)


def test_retryable_errors_fail_the_message_after_max_attempts(account, contact, version, settings):
    settings.MESSAGING_MAX_ATTEMPTS = 3
    FakeProvider.script = [
        ProviderError("Service unavailable", code="131016", error_class=RETRYABLE) for _ in range(5)
    ]
    message = queue(account, contact, version)
    outcomes, waits = [], []
    for _attempt in range(3):
        before = timezone.now()
        outcomes.append(message_deliver(message_id=message.pk))
        waits.append(entry_of(message).due_at - before)

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
    # Exponential backoff between the attempts: base, then twice the base.
    assert backoff(1) <= waits[0] < backoff(2) <= waits[1] < backoff(3)
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED
    assert len(FakeProvider.calls) == 3
    message.refresh_from_db()
    entry = entry_of(message)
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "131016"
    assert message.failed_at is not None
    assert (entry.state, entry.attempts) == (OutboxState.DONE, 3)
    assert status_events(message) == [MessageStatus.FAILED]


def test_permanent_error_fails_the_message_with_the_providers_code(account, contact, version):
    FakeProvider.script = [
        ProviderError(
            "Message undeliverable", code="131026", error_class=whatsapp_error_class("131026")
        )
    ]
    message = queue(account, contact, version)

    assert message_deliver(message_id=message.pk) == Outcome.FAILED
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED

    message.refresh_from_db()
    entry = entry_of(message)
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "131026"
    assert "Message undeliverable" in message.error_detail
    assert (entry.state, entry.attempts) == (OutboxState.DONE, 1)
    assert len(FakeProvider.calls) == 1
    assert outbox_claim_due(now=timezone.now() + dt.timedelta(days=1)) == []
    # Not an opt-out: the contact's consent stays.
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_opt_out_error_fails_the_message_and_withdraws_consent_on_the_channel(
    account, contact, version, purpose
):
    FakeProvider.script = [
        ProviderError(
            "Attempt to send to unsubscribed recipient",
            code="21610",
            error_class=twilio_error_class("21610"),
        )
    ]
    message = queue(account, contact, version)

    assert message_deliver(message_id=message.pk) == Outcome.FAILED

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.FAILED, "21610")
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="whatsapp")
    assert consent.status == ConsentStatus.WITHDRAWN
    assert consent.last_event.source == "provider"


def test_timeout_leaves_the_message_unknown_and_never_resends_it(account, contact, version):
    FakeProvider.script = [ProviderTimeout()]
    message = queue(account, contact, version)

    assert message_deliver(message_id=message.pk) == Outcome.UNKNOWN
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNKNOWN, "timeout")
    assert entry_of(message).state == OutboxState.DONE
    assert outbox_claim_due(now=timezone.now() + dt.timedelta(days=1)) == []
    assert len(FakeProvider.calls) == 1
    assert status_events(message) == [MessageStatus.UNKNOWN]


def test_message_left_sending_by_a_dead_worker_becomes_unknown_and_is_not_sent(
    account, contact, version
):
    FakeProvider.script = [WorkerKilled("SIGKILL while the request was in flight")]
    message = queue(account, contact, version)
    with pytest.raises(WorkerKilled):
        message_deliver(message_id=message.pk)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING

    # The redelivered task (acks_late) or the dispatcher after the lease runs it again.
    assert message_deliver(message_id=message.pk) == Outcome.UNKNOWN

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNKNOWN, "interrupted")
    assert entry_of(message).state == OutboxState.DONE
    assert len(FakeProvider.calls) == 1
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED
    assert len(FakeProvider.calls) == 1


def test_retryable_error_after_a_duplicate_task_marked_it_unknown_still_retries(
    account, contact, version
):
    """A duplicate task (lease ran out while the first still waited in the queue) runs while the
    first is calling the provider; the provider then refuses for now: the retry must stay due."""

    def duplicate_runs_then_provider_refuses(outbound: OutboundMessage) -> None:
        assert message_deliver(message_id=message.pk) == Outcome.UNKNOWN
        raise ProviderError("Service unavailable", code="131016", error_class=RETRYABLE)

    message = queue(account, contact, version)
    FakeProvider.script = [duplicate_runs_then_provider_refuses]

    assert message_deliver(message_id=message.pk) == Outcome.RETRY

    message.refresh_from_db()
    entry = entry_of(message)
    assert message.status == MessageStatus.QUEUED
    assert (entry.state, entry.attempts) == (OutboxState.PENDING, 1)
    assert outbox_claim_due(now=entry.due_at) == [message.pk]
    assert message_deliver(message_id=message.pk) == Outcome.SENT
    assert len(FakeProvider.calls) == 2


# --- scheduling, the gate re-check and the outbox lease -----------------------------------


def test_scheduled_message_waits_until_due_then_is_claimed_and_sent(account, contact, version):
    due = timezone.now() + dt.timedelta(hours=2)
    message = queue(account, contact, version, due_at=due)
    assert message.status == MessageStatus.SCHEDULED
    assert entry_of(message).due_at == due

    assert message_deliver(message_id=message.pk) == Outcome.DEFERRED
    assert outbox_claim_due(now=due - dt.timedelta(seconds=1)) == []
    assert FakeProvider.calls == []
    message.refresh_from_db()
    assert message.status == MessageStatus.SCHEDULED

    at = due + dt.timedelta(seconds=1)
    assert outbox_claim_due(now=at) == [message.pk]
    assert message_deliver(message_id=message.pk, now=at) == Outcome.SENT

    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert len(FakeProvider.calls) == 1


def test_consent_withdrawn_after_queuing_refuses_at_claim_without_calling_the_provider(
    account, contact, version, purpose
):
    message = queue(account, contact, version)
    # STOP arrives mid-campaign, after the message was accepted.
    withdraw_consent(contact, purpose, "whatsapp")

    assert message_deliver(message_id=message.pk) == Outcome.REFUSED

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.REFUSED, "no_consent")
    assert message.gate_decision["allowed"] is True  # the decision at acceptance stays on record
    assert message.gate_decision["recheck"]["reason"] == "no_consent"
    assert entry_of(message).state == OutboxState.DONE
    assert FakeProvider.calls == []
    assert status_events(message) == [MessageStatus.REFUSED]
    assert message_deliver(message_id=message.pk) == Outcome.SKIPPED
    assert FakeProvider.calls == []


def test_claim_leases_due_rows_so_a_second_claim_gets_nothing_until_the_lease_ends(
    account, contact, version, settings
):
    due = timezone.now() + dt.timedelta(minutes=5)
    message = queue(account, contact, version, due_at=due)
    at = due + dt.timedelta(seconds=1)
    lease = dt.timedelta(seconds=settings.MESSAGING_OUTBOX_LEASE_SECONDS)

    assert outbox_claim_due(now=at) == [message.pk]

    entry = entry_of(message)
    assert (entry.due_at, entry.dispatched_at) == (at + lease, at)
    assert outbox_claim_due(now=at) == []
    assert outbox_claim_due(now=at + lease - dt.timedelta(seconds=1)) == []
    # Its task was lost (broker outage, worker gone): it is dispatched again.
    assert outbox_claim_due(now=at + lease) == [message.pk]


def test_claim_takes_at_most_limit_rows_oldest_due_first(account, contact, version):
    start = timezone.now() + dt.timedelta(minutes=5)
    messages = [
        queue(account, contact, version, due_at=start + dt.timedelta(seconds=n)) for n in (3, 1, 2)
    ]
    at = start + dt.timedelta(minutes=1)

    assert outbox_claim_due(limit=2, now=at) == [messages[1].pk, messages[2].pk]
    assert outbox_claim_due(limit=2, now=at) == [messages[0].pk]


# --- broker outage ---------------------------------------------------------------------------


def test_broker_down_at_commit_keeps_the_message_queued_and_the_dispatcher_delivers_it_once(
    console_account,
    contact,
    version,
    settings,
    monkeypatch,
    caplog,
    django_capture_on_commit_callbacks,
):
    settings.MESSAGING_OUTBOX_LEASE_SECONDS = 0  # due for the dispatcher at once

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(deliver_message, "delay", broker_down)
        with (
            caplog.at_level(logging.WARNING, logger="messaging.services.send"),
            django_capture_on_commit_callbacks(execute=True) as callbacks,
        ):
            message = queue(console_account, contact, version)

    assert len(callbacks) == 1
    assert "broker unavailable" in caplog.text
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert entry_of(message).state == OutboxState.PENDING
    assert outbox == []

    assert dispatch_due_messages.delay().get() == 1

    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert len(outbox) == 1
    assert dispatch_due_messages.delay().get() == 0
    assert len(outbox) == 1


# --- unknown outcomes and receipts ----------------------------------------------------------


def test_reconcile_fails_stale_unknown_messages_as_unconfirmed(account, contact, version, settings):
    FakeProvider.script = [ProviderTimeout(), ProviderTimeout()]
    stale = queue(account, contact, version)
    answered = queue(account, contact, version)
    message_deliver(message_id=stale.pk)
    message_deliver(message_id=answered.pk)
    # A receipt (here: the provider's `sent`) keeps a message out of reconciliation.
    message_status_apply(
        account=account,
        update=receipt(
            answered,
            DeliveryStatus.SENT,
            provider_message_id="wamid.answered",
            callback_data=str(answered.idempotency_key),
        ),
    )
    later = timezone.now() + dt.timedelta(hours=settings.MESSAGING_UNKNOWN_AFTER_HOURS, minutes=1)

    assert messages_reconcile_unknown() == 0
    assert messages_reconcile_unknown(now=later) == 1
    assert messages_reconcile_unknown(now=later) == 0

    stale.refresh_from_db()
    answered.refresh_from_db()
    assert (stale.status, stale.error_code) == (MessageStatus.FAILED, "unconfirmed")
    assert stale.failed_at == later
    assert status_events(stale) == [MessageStatus.UNKNOWN, MessageStatus.FAILED]
    assert answered.status == MessageStatus.SENT
    assert len(FakeProvider.calls) == 2


def test_unknown_message_is_reconciled_by_a_receipt_carrying_our_key(account, contact, version):
    FakeProvider.script = [ProviderTimeout()]
    message = queue(account, contact, version)
    message_deliver(message_id=message.pk)

    message_status_apply(
        account=account,
        update=receipt(
            message,
            DeliveryStatus.DELIVERED,
            provider_message_id="wamid.late",
            callback_data=str(message.idempotency_key),
        ),
    )

    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.provider_message_id == "wamid.late"


def test_receipt_arriving_before_the_provider_id_is_known_is_applied_when_sent(
    account, contact, version
):
    message = queue(account, contact, version)
    early = message_status_apply(account=account, update=receipt(message, DeliveryStatus.DELIVERED))
    assert early.message is None

    assert message_deliver(message_id=message.pk) == Outcome.SENT

    message.refresh_from_db()
    early.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.delivered_at == early.occurred_at
    assert (early.message, early.applied) == (message, True)
    assert status_events(message) == [MessageStatus.SENT, MessageStatus.DELIVERED]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (DeliveryStatus.DELIVERED, MessageStatus.DELIVERED),
        (DeliveryStatus.FAILED, MessageStatus.FAILED),
    ],
)
def test_receipt_applied_while_the_provider_call_was_in_flight_is_not_undone(
    account, contact, version, status, expected
):
    """WhatsApp echoes our key and may report before the send call returns."""

    def report_during_the_call(outbound: OutboundMessage) -> None:
        message_status_apply(
            account=account,
            update=receipt(message, status, callback_data=outbound.callback_data),
        )

    message = queue(account, contact, version)
    FakeProvider.script = [report_during_the_call]

    message_deliver(message_id=message.pk)

    message.refresh_from_db()
    assert message.status == expected
    assert message.provider_message_id == fake_id(message.idempotency_key)
    assert entry_of(message).state == OutboxState.DONE
    assert StatusReceipt.objects.get().applied is True


# --- PostgreSQL: concurrent dispatchers -----------------------------------------------------


def _scheduled_messages(team, count: int) -> tuple[set[int], dt.datetime]:
    account = ChannelAccountFactory(team=team)
    version = sendable_version(team)
    contact = reachable_contact(team)
    due = timezone.now() + dt.timedelta(hours=1)
    ids = {queue(account, contact, version, due_at=due).pk for _ in range(count)}
    return ids, due + dt.timedelta(seconds=1)


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()  # each thread has its own connection

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_dispatcher_skips_rows_another_holds_without_waiting(team):
    ids, at = _scheduled_messages(team, 10)
    holding = threading.Barrier(2, timeout=10)
    second_done = threading.Event()
    claimed: dict[str, Any] = {}

    def first() -> None:
        with transaction.atomic():
            claimed["first"] = outbox_claim_due(limit=4, now=at)
            holding.wait()  # the four rows stay locked, uncommitted
            claimed["second_finished_meanwhile"] = second_done.wait(timeout=10)

    def second() -> None:
        holding.wait()
        claimed["second"] = outbox_claim_due(now=at)
        second_done.set()

    for thread in [_in_thread(first), _in_thread(second)]:
        thread.join(timeout=30)

    assert claimed["second_finished_meanwhile"] is True  # SKIP LOCKED: it did not block
    assert len(claimed["first"]) == 4
    assert set(claimed["first"]).isdisjoint(claimed["second"])
    assert set(claimed["first"]) | set(claimed["second"]) == ids


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_dispatchers_never_claim_the_same_message(team):
    ids, at = _scheduled_messages(team, 30)
    start = threading.Barrier(3, timeout=10)
    claims: list[list[int]] = [[], [], []]

    def claimer(index: int) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            while batch := outbox_claim_due(limit=2, now=at):
                claims[index].extend(batch)

        return run

    for thread in [_in_thread(claimer(index)) for index in range(3)]:
        thread.join(timeout=30)

    every_claim = [message_id for claim in claims for message_id in claim]
    assert sorted(every_claim) == sorted(ids)  # each message exactly once


def test_message_that_cannot_be_built_fails_before_sending_and_is_never_unknown(
    account, contact, version
):
    message = queue(account, contact, version)
    # The stored parameters lost a placeholder's value: the provider request cannot be built.
    Message.objects.filter(pk=message.pk).update(variables={})
    assert message_deliver(message_id=message.pk) == Outcome.FAILED
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "invalid_message"
    assert entry_of(message).state == OutboxState.DONE
    assert FakeProvider.calls == []
