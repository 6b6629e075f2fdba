"""The WhatsApp webhook inbox: a verified body is stored before the answer and processed by a
Celery task (eager here); the sweep picks up rows whose task was lost or crashed.

The plain test client never commits, so the task queued on commit does not run unless a test
runs the captured callbacks: the rows stay pending, as after a lost task.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from messaging.models import InboundWebhook, InboxStatus, Message, QuarantinedPayload
from messaging.services import inbound
from messaging.services.inbound import (
    INBOX_DISPATCH_CLOCK_MARGIN,
    INBOX_DISPATCH_DELAY,
    INBOX_MAX_ATTEMPTS,
    INBOX_RETRY_AFTER,
    inbound_webhook_process,
    inbound_webhooks_claim_lost,
    inbound_webhooks_process_pending,
)
from messaging.tasks import (
    dispatch_lost_inbound_webhooks,
    process_inbound_webhook,
    process_inbound_webhooks,
)
from messaging.webhooks.signatures import meta_signature
from tests.factories import ChannelAccountFactory
from tests.messaging.test_webhook_views import (
    APP_SECRET,
    JANA_WAMID,
    META,
    PHONE_NUMBER_ID,
    WA_URL,
    fixture_bytes,
)

pytestmark = pytest.mark.django_db

INBOUND_TEXT = "whatsapp/inbound_text.json"


@pytest.fixture
def account(team, monkeypatch):
    monkeypatch.setenv("WA_INBOX_APP_SECRET", APP_SECRET)
    return ChannelAccountFactory(
        team=team,
        slug="wa-main",
        channel="whatsapp",
        provider="whatsapp_cloud",
        credentials_env="WA_INBOX",
        external_id=PHONE_NUMBER_ID,
        address="+4915735998877",
    )


def post(client: Client, relative: str = INBOUND_TEXT, signature: str | None = None):
    return client.post(
        WA_URL,
        data=fixture_bytes(relative),
        content_type="application/json",
        headers={"X-Hub-Signature-256": signature or META[relative]["x_hub_signature_256"]},
    )


def backdate(webhook: InboundWebhook) -> None:
    """As if the row had waited longer than the sweep's patience."""
    long_ago = timezone.now() - INBOX_RETRY_AFTER - timedelta(seconds=1)
    InboundWebhook.objects.filter(pk=webhook.pk).update(
        received_at=long_ago, attempted_at=webhook.attempted_at and long_ago
    )


def test_accepting_is_one_account_read_and_one_insert(account, django_assert_num_queries):
    with django_assert_num_queries(2):
        response = post(Client())
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}
    webhook = InboundWebhook.objects.get()
    assert webhook.status == InboxStatus.PENDING
    assert webhook.account == account
    assert webhook.body.encode("utf-8") == fixture_bytes(INBOUND_TEXT)
    assert webhook.content_type == "application/json"


def test_processing_is_queued_on_commit(account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post(Client())
    assert InboundWebhook.objects.get().status == InboxStatus.PROCESSED
    assert Message.objects.get().provider_message_id == JANA_WAMID


def test_exact_duplicate_requests_store_one_row(account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = post(Client())
        second = post(Client())
    assert first.json() == {"status": "accepted"}
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
    assert InboundWebhook.objects.count() == 1
    assert len(callbacks) == 1


def test_bad_signature_stores_nothing(account):
    response = post(Client(), signature="sha256=" + "0" * 64)
    assert response.status_code == 403
    assert not InboundWebhook.objects.exists()


def test_malformed_body_stores_nothing(account):
    body = b'{"object": "page", "entry": []}'
    response = Client().post(
        WA_URL,
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": meta_signature(body, APP_SECRET)},
    )
    assert response.status_code == 400
    assert not InboundWebhook.objects.exists()


def test_accepted_but_unprocessed_payload_is_processed_by_the_sweep(account):
    post(Client())
    webhook = InboundWebhook.objects.get()
    assert not Message.objects.exists()

    # A just-accepted row is not the sweep's: its task is probably on its way.
    assert dispatch_lost_inbound_webhooks.delay().get() == 0
    backdate(webhook)
    assert dispatch_lost_inbound_webhooks.delay().get() == 1

    webhook.refresh_from_db()
    assert webhook.status == InboxStatus.PROCESSED
    assert webhook.attempts == 1
    assert webhook.processed_at is not None
    assert Message.objects.get().provider_message_id == JANA_WAMID


def test_crash_during_processing_leaves_the_row_for_a_retry(account, monkeypatch):
    post(Client())
    webhook = InboundWebhook.objects.get()
    real = inbound.webhook_batch_process

    def crash_after_the_work(*, account, batch):
        real(account=account, batch=batch)
        raise RuntimeError("worker lost its database connection")

    monkeypatch.setattr(inbound, "webhook_batch_process", crash_after_the_work)
    with pytest.raises(RuntimeError):
        process_inbound_webhook.delay(webhook.pk)

    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts) == (InboxStatus.PENDING, 1)
    # The work was undone with the status: nothing half-applied is left behind.
    assert not Message.objects.exists()

    monkeypatch.setattr(inbound, "webhook_batch_process", real)
    backdate(webhook)
    assert inbound_webhooks_claim_lost() == [webhook.pk]
    assert inbound_webhook_process(webhook_id=webhook.pk) == "processed"
    assert Message.objects.count() == 1


def test_a_redelivered_task_changes_nothing(account):
    post(Client())
    webhook = InboundWebhook.objects.get()
    assert inbound_webhook_process(webhook_id=webhook.pk) == "processed"
    assert inbound_webhook_process(webhook_id=webhook.pk) == "skipped"
    webhook.refresh_from_db()
    assert webhook.attempts == 1
    assert Message.objects.count() == 1


def test_failed_items_are_quarantined_as_before(account):
    account.external_id = "999999999999999"
    account.save()
    post(Client())
    webhook = InboundWebhook.objects.get()

    assert inbound_webhook_process(webhook_id=webhook.pk) == "quarantined"

    webhook.refresh_from_db()
    assert webhook.status == InboxStatus.FAILED
    assert "WebhookMisrouted" in QuarantinedPayload.objects.get().error
    assert not Message.objects.exists()


def test_the_sweep_gives_up_after_the_last_attempt(account):
    post(Client())
    webhook = InboundWebhook.objects.get()
    InboundWebhook.objects.filter(pk=webhook.pk).update(
        attempts=INBOX_MAX_ATTEMPTS, attempted_at=timezone.now()
    )
    webhook.refresh_from_db()
    backdate(webhook)

    assert inbound_webhooks_claim_lost() == []

    webhook.refresh_from_db()
    assert webhook.status == InboxStatus.FAILED
    quarantined = QuarantinedPayload.objects.get()
    assert quarantined.body.encode("utf-8") == fixture_bytes(INBOUND_TEXT)
    assert str(INBOX_MAX_ATTEMPTS) in quarantined.error


def test_broker_outage_still_answers_and_leaves_the_row_to_the_sweep(
    account, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise KombuOperationalError("connection refused")

    monkeypatch.setattr(process_inbound_webhook, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(Client())
    assert response.status_code == 200
    assert InboundWebhook.objects.get().status == InboxStatus.PENDING


def test_the_drain_applies_never_tried_rows_and_leaves_tried_ones_to_the_sweep(account):
    post(Client())
    post(Client(), "whatsapp/inbound_batch_two_messages.json")
    tried, fresh = InboundWebhook.objects.order_by("id")
    InboundWebhook.objects.filter(pk=tried.pk).update(attempts=1, attempted_at=timezone.now())

    result = inbound_webhooks_process_pending()

    assert (result.outcomes, result.more) == ({"processed": 1}, False)
    fresh.refresh_from_db()
    assert (fresh.status, fresh.attempts) == (InboxStatus.PROCESSED, 1)
    assert InboundWebhook.objects.get(pk=tried.pk).status == InboxStatus.PENDING
    assert Message.objects.count() == 2


def test_the_drain_stops_at_its_limit_and_a_successor_carries_on(account, monkeypatch):
    post(Client())
    post(Client(), "whatsapp/inbound_batch_two_messages.json")
    monkeypatch.setattr(inbound, "INBOX_DRAIN_CHUNK", 1)

    assert inbound_webhooks_process_pending(limit=1) == inbound.DrainResult({"processed": 1}, True)
    # The task queues its successor (inline here), which finds the rest.
    assert process_inbound_webhooks.delay().get() == {"processed": 1}
    assert not InboundWebhook.objects.filter(status=InboxStatus.PENDING).exists()


@pytest.fixture
def real_broker():
    """The dispatcher as with a worker: tasks are published, not run inline."""
    conf = process_inbound_webhooks.app.conf
    eager = conf.task_always_eager
    conf.task_always_eager = False
    yield
    conf.task_always_eager = eager


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


def test_a_process_queues_one_drain_per_dispatch_delay(monkeypatch, real_broker):
    """With a real broker: a commit before the queued drain starts needs no task of its own."""
    clock = FakeClock()
    queued = []
    monkeypatch.setattr(inbound, "time", clock)
    monkeypatch.setattr(process_inbound_webhooks, "apply_async", lambda **kw: queued.append(kw))
    dispatch = inbound._DrainDispatcher()

    dispatch(1)
    clock.now += INBOX_DISPATCH_DELAY - INBOX_DISPATCH_CLOCK_MARGIN - 0.01
    dispatch(2)  # the drain queued for 1 starts after this commit
    assert queued == [{"countdown": INBOX_DISPATCH_DELAY}]
    clock.now += 0.02
    dispatch(3)  # too close to that drain's start (clocks may differ): a new one
    assert len(queued) == 2


def test_a_failed_publish_lets_the_next_commit_try_again(monkeypatch, caplog, real_broker):
    def broker_down(**kwargs):
        raise KombuOperationalError("connection refused")

    monkeypatch.setattr(process_inbound_webhooks, "apply_async", broker_down)
    dispatch = inbound._DrainDispatcher()
    dispatch(1)
    queued = []
    monkeypatch.setattr(process_inbound_webhooks, "apply_async", lambda **kw: queued.append(kw))
    dispatch(2)
    assert "inbound webhook 1: broker unavailable" in caplog.text
    assert len(queued) == 1


def test_one_crashing_row_does_not_strand_the_rest_of_the_drain(account, monkeypatch):
    post(Client())
    post(Client(), "whatsapp/inbound_batch_two_messages.json")
    first, second = InboundWebhook.objects.order_by("id")
    real = inbound._inbox_apply

    def crash_on_first(webhook_id, *, skip_locked):
        if webhook_id == first.pk:
            raise RuntimeError("worker lost its database connection")
        return real(webhook_id, skip_locked=skip_locked)

    monkeypatch.setattr(inbound, "_inbox_apply", crash_on_first)
    result = inbound_webhooks_process_pending()

    assert result.outcomes == {"failed": 1, "processed": 1}
    first.refresh_from_db()
    # Tried once and still pending: the sweep's to retry.
    assert (first.status, first.attempts) == (InboxStatus.PENDING, 1)
    assert InboundWebhook.objects.get(pk=second.pk).status == InboxStatus.PROCESSED
