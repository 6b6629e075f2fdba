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
    INBOX_MAX_ATTEMPTS,
    INBOX_RETRY_AFTER,
    inbound_webhook_process,
    inbound_webhooks_claim_lost,
)
from messaging.tasks import dispatch_lost_inbound_webhooks, process_inbound_webhook
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
