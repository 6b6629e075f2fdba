"""Faults during a campaign, with a real Celery worker, a private Redis and PostgreSQL.

(1) PostgreSQL drops the worker's connection in the middle of a campaign batch; (2) Redis
stops while a campaign's messages are being queued. After recovery every recipient has
exactly one message, and every accepted (committed) message reaches the provider once.
A worker killed in the middle of a delivery is covered in test_worker_redis.py
(test_worker_killed_mid_send_never_sends_twice_and_a_receipt_reconciles_the_message), a
backlog dispatched twice there too; the fixtures and helpers below are that module's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from consent.models import Purpose
from crm.models import Channel
from messaging.models import (
    Campaign,
    CampaignState,
    Message,
    MessageStatus,
    RecipientStatus,
)
from messaging.services import (
    TemplateChoice,
    campaign_create,
    campaign_launch,
    campaign_send_batch,
    campaigns_resume_stalled,
)
from tests.consent.helpers import grant_consent
from tests.factories import PurposeFactory
from tests.messaging import test_worker_redis as worker_redis
from tests.messaging.helpers import reachable_contact, sendable_version
from tests.messaging.worker_support import CeleryWorker, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    # Committed rows: the worker process reads them through its own connection.
    pytest.mark.django_db(transaction=True),
]

# That module's fixtures, requested here by name.
account = worker_redis.account
broker = worker_redis.broker
publishing = worker_redis.publishing
stub = worker_redis.stub
worker = worker_redis.worker
answer = worker_redis.answer
requests_per_key = worker_redis.requests_per_key
dispatch = worker_redis.dispatch

RECIPIENTS = 60
FIRST_BATCH = 20
TIMEOUT = 120


@pytest.fixture
def purpose(team) -> Purpose:
    return PurposeFactory(team=team, allowed_channels=[Channel.SMS])


def sms_campaign(account, purpose) -> Campaign:
    contacts = [reachable_contact(account.team, Channel.SMS) for _ in range(RECIPIENTS)]
    for contact in contacts:
        grant_consent(contact, purpose, Channel.SMS)
    version = sendable_version(account.team, channel=Channel.SMS, purpose=purpose)
    return campaign_create(
        team=account.team,
        actor=None,
        name="Herbstprogramm",
        templates=[TemplateChoice(account=account, template_version=version)],
        throttle_per_second=1000,  # the next batch is queued at once
    )


def messages_per_recipient(campaign: Campaign) -> Counter[int]:
    rows = (
        Message.objects.filter(origin=f"campaign:{campaign.pk}")
        .values_list("conversation__contact_id")
        .annotate(n=Count("id"))
    )
    return Counter(dict(rows))


def wait_until_sent(campaign: Campaign, count: int, worker: CeleryWorker) -> None:
    messages = Message.objects.filter(origin=f"campaign:{campaign.pk}")
    wait_for(
        lambda: messages.filter(status=MessageStatus.SENT).count() == count,
        timeout=TIMEOUT,
        interval=0.2,
        what=f"{count} campaign messages sent",
        explain=lambda: f"{Counter(messages.values_list('status', flat=True))}\n{worker.tail()}",
    )


def assert_each_recipient_got_exactly_one_message(campaign, stub) -> None:
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    assert campaign.sent_count == RECIPIENTS
    recipients = list(campaign.recipients.all())
    assert {r.status for r in recipients} == {RecipientStatus.SENT}
    assert set(messages_per_recipient(campaign).values()) == {1}
    assert len(messages_per_recipient(campaign)) == RECIPIENTS
    keys = Message.objects.filter(origin=f"campaign:{campaign.pk}").values_list(
        "idempotency_key", flat=True
    )
    # What the provider was asked to send: each message once, nothing else.
    assert requests_per_key(stub) == {str(key): 1 for key in keys}


@pytest.fixture
def slow_message_inserts():
    """Each message insert sleeps 0.2 s in PostgreSQL (a slow disk, say), so the worker's batch
    is reliably caught between its first insert and its commit: without it a fast batch can
    commit between two polls of pg_stat_activity."""

    def slow_down() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER test_slow_insert AFTER INSERT ON messaging_message "
                "FOR EACH ROW EXECUTE FUNCTION test_slow_insert()"
            )

    def restore() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_slow_insert ON messaging_message")
            cursor.execute("DROP FUNCTION IF EXISTS test_slow_insert()")

    yield slow_down, restore
    restore()


def terminate_a_batch_in_progress() -> int:
    """pg_terminate_backend on the worker's connection once it has inserted messages in a
    transaction that has not committed yet, i.e. in the middle of campaign_send_batch."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND query LIKE %s",
            ['%INTO "messaging_message"%'],
        )
        row = cursor.fetchone()
        if row is None:
            return 0
        cursor.execute("SELECT pg_terminate_backend(%s)", [row[0]])
        return row[0] if cursor.fetchone()[0] else 0


def test_database_connection_dropped_mid_batch_loses_and_duplicates_nothing(
    account, purpose, broker, stub, worker, publishing, slow_message_inserts
):
    slow_down, restore = slow_message_inserts
    answer(stub, RECIPIENTS)
    campaign = campaign_launch(campaign=sms_campaign(account, purpose), actor=None)
    # A first batch commits before the fault: its messages are accepted and queued.
    accepted = campaign_send_batch(campaign_id=campaign.pk, batch_size=FIRST_BATCH)
    assert accepted.pending == RECIPIENTS - FIRST_BATCH

    # The worker picks up the launch's batch task: all other recipients in one batch.
    slow_down()
    worker.start()
    killed = wait_for(
        terminate_a_batch_in_progress,
        timeout=TIMEOUT,
        interval=0.01,
        what="the worker's campaign batch to be inserting messages",
        explain=worker.tail,
    )
    restore()  # the retry runs at full speed
    # The task fails with OperationalError and Celery retries it on a new connection.
    worker.wait_for_log("terminating connection due to administrator command")
    wait_until_sent(campaign, RECIPIENTS, worker)

    assert killed
    assert_each_recipient_got_exactly_one_message(campaign, stub)


def test_redis_stopped_while_a_campaign_queues_messages_delivers_each_once(
    account, purpose, broker, stub, worker, publishing, settings, caplog
):
    settings.MESSAGING_OUTBOX_LEASE_SECONDS = 1
    answer(stub, RECIPIENTS)
    campaign = campaign_launch(campaign=sms_campaign(account, purpose), actor=None)
    # The batches run here, as a worker would run them, so the outage falls between them.
    campaign_send_batch(campaign_id=campaign.pk, batch_size=FIRST_BATCH)
    broker.stop()  # without persistence, every queued task is gone with it
    with caplog.at_level(logging.WARNING, logger="messaging.services"):
        during = campaign_send_batch(campaign_id=campaign.pk, batch_size=FIRST_BATCH)
    assert during.processed == FIRST_BATCH
    # The batch is committed; the task for the next one could not be queued.
    assert f"campaign {campaign.pk}: next batch not queued" in caplog.text
    broker.start()  # same port, empty: the campaign's next batch task is lost

    worker.start()
    # No operator: once the batch is overdue, the stalled-campaign sweep (beat, every minute)
    # queues it again and the pending recipients continue.
    assert campaigns_resume_stalled() == 0  # not overdue yet
    assert campaigns_resume_stalled(now=timezone.now() + dt.timedelta(hours=1)) == 1
    wait_until_sent(campaign, RECIPIENTS - 2 * FIRST_BATCH, worker)
    # The first two batches' messages are still queued: their tasks were lost with Redis or
    # never published. The beat task (every 15 s in production) hands exactly those over.
    dispatch(2 * FIRST_BATCH)
    wait_until_sent(campaign, RECIPIENTS, worker)

    assert_each_recipient_got_exactly_one_message(campaign, stub)
