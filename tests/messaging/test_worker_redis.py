"""Delivery with a real Celery worker, a real Redis broker and PostgreSQL (GitHub issue 5).

A broker outage, a lost task and a worker killed mid-send neither lose nor duplicate a
message. Each test starts a private redis-server it may stop and restart, and a
`celery -A config worker` process on the current test database; messages go out through the
Twilio adapter to a local stub that records every request, so the stub's request count per
idempotency key is what the recipient would have received.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from crm.models import Channel
from messaging.models import Message, MessageStatus, OutboxEntry, OutboxState
from messaging.providers.twilio_sms import IDEMPOTENCY_HEADER
from messaging.services import message_send, message_status_apply, outbox_claim_due
from messaging.tasks import dispatch_due_messages
from messaging.webhooks.events import DeliveryStatus, StatusUpdate
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import reachable_contact, sendable_version
from tests.messaging.stub_server import StubServer
from tests.messaging.worker_support import (
    CeleryWorker,
    RedisServer,
    database_url,
    publishing_to,
    wait_for,
    worker_env,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    # Committed rows: the worker process reads them through its own connection.
    pytest.mark.django_db(transaction=True),
]

ACCOUNT_SID = "AC5ef8732a3c49700934481addd5ce1659"
CREDENTIALS_ENV = "WORKER_TEST_TWILIO"
AUTH_TOKEN = "worker-test-auth-token"
DELIVERY_TIMEOUT = 30
BACKLOG = 50


@pytest.fixture
def broker(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture
def worker(transactional_db, broker, stub, tmp_path):
    """Not started yet; stopped (or already killed) when the test ends, before the flush."""
    process = CeleryWorker(
        env=worker_env(
            broker_url=broker.url,
            database=database_url(connection.settings_dict),
            TWILIO_API_BASE_URL=stub.url,
            **{f"{CREDENTIALS_ENV}_AUTH_TOKEN": AUTH_TOKEN},
        ),
        log_path=tmp_path / "worker.log",
    )
    yield process
    process.stop()


@pytest.fixture
def publishing(broker):
    with publishing_to(broker.url):
        yield


@pytest.fixture
def account(team):
    return ChannelAccountFactory(
        team=team,
        channel=Channel.SMS,
        provider="twilio_sms",
        external_id=ACCOUNT_SID,
        address="+4930123456",
        credentials_env=CREDENTIALS_ENV,
    )


@pytest.fixture
def version(team):
    return sendable_version(team, channel=Channel.SMS)


def send(account, version, contact=None) -> Message:
    """message_send commits; its on-commit dispatch publishes to the broker (if it is up)."""
    contact = contact or reachable_contact(account.team, Channel.SMS)
    return message_send(contact=contact, account=account, actor=None, template_version=version)


def answer(stub: StubServer, count: int, *, delay: float = 0.0) -> list[str]:
    """Queue `count` Twilio "created" answers, each with its own message sid."""
    sids = [f"SM{index:032x}" for index in range(count)]
    for sid in sids:
        stub.respond(201, json_body={"sid": sid, "status": "accepted"}, delay=delay)
    return sids


def requests_per_key(stub: StubServer) -> Counter[str]:
    return Counter(request.headers[IDEMPOTENCY_HEADER.lower()] for request in stub.requests)


def statuses(messages: list[Message]) -> Counter[str]:
    return Counter(
        Message.objects.filter(pk__in=[m.pk for m in messages]).values_list("status", flat=True)
    )


def dispatch(expected: int) -> None:
    """Run the beat task (here, in this process) until it has handed `expected` rows to the
    broker; a row becomes due once its lease is over."""
    dispatched = 0

    def more() -> bool:
        nonlocal dispatched
        dispatched += dispatch_due_messages()
        return dispatched >= expected

    wait_for(more, timeout=10, what=f"the dispatcher to hand over {expected} row(s)")
    assert dispatched == expected


def wait_until_all(messages: list[Message], status: str, worker: CeleryWorker) -> None:
    wait_for(
        lambda: statuses(messages)[status] == len(messages),
        timeout=DELIVERY_TIMEOUT,
        what=f"{len(messages)} message(s) {status}",
        explain=lambda: f"statuses: {statuses(messages)}\nworker log:\n{worker.tail()}",
    )


def test_broker_outage_neither_loses_nor_duplicates_messages(
    account, version, broker, stub, worker, publishing, settings, caplog
):
    settings.MESSAGING_OUTBOX_LEASE_SECONDS = 1
    sids = answer(stub, 2)
    contacts = [reachable_contact(account.team, Channel.SMS) for _ in range(2)]
    lost = send(account, version, contacts[0])  # its task waits in Redis: no worker yet
    broker.stop()  # without persistence the queued task is gone with it
    with caplog.at_level(logging.WARNING, logger="messaging.services.send"):
        refused = send(account, version, contacts[1])  # the broker is down at commit

    assert f"message {refused.pk}: broker unavailable" in caplog.text
    assert statuses([lost, refused]) == {MessageStatus.QUEUED: 2}
    pending = OutboxEntry.objects.filter(message__in=[lost, refused], state=OutboxState.PENDING)
    assert pending.count() == 2

    worker.start()  # while the broker is still down: it must keep trying
    worker.wait_for_log("Cannot connect to redis")
    broker.start()  # same port, empty
    # The beat task (every 15 s in production) hands both rows over once their lease is over.
    dispatch(2)
    wait_until_all([lost, refused], MessageStatus.SENT, worker)

    assert requests_per_key(stub) == {
        str(lost.idempotency_key): 1,
        str(refused.idempotency_key): 1,
    }
    assert set(
        Message.objects.filter(pk__in=[lost.pk, refused.pk]).values_list(
            "provider_message_id", flat=True
        )
    ) == set(sids)
    done = OutboxEntry.objects.filter(message__in=[lost, refused], state=OutboxState.DONE)
    assert done.count() == 2
    assert dispatch_due_messages() == 0


def test_worker_killed_mid_send_never_sends_twice_and_a_receipt_reconciles_the_message(
    account, version, broker, stub, worker, publishing
):
    (sid,) = answer(stub, 1, delay=3)  # the provider is slow to answer
    worker.start()
    message = send(account, version)

    wait_for(lambda: stub.requests, timeout=DELIVERY_TIMEOUT, what="the send", explain=worker.tail)
    worker.kill()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING

    # acks_late: the task was never acknowledged, so Redis hands it to the next worker, which
    # finds the message `sending` and must not send it again.
    worker.start()
    wait_until_all([message], MessageStatus.UNKNOWN, worker)

    assert requests_per_key(stub) == {str(message.idempotency_key): 1}
    message.refresh_from_db()
    assert message.error_code == "interrupted"
    assert OutboxEntry.objects.get(message=message).state == OutboxState.DONE
    assert outbox_claim_due(now=timezone.now() + dt.timedelta(days=1)) == []

    # Twilio's status callback carries our key (?m=...) and the sid we never saw.
    message_status_apply(
        account=account,
        update=StatusUpdate(
            provider="twilio_sms",
            channel=Channel.SMS,
            provider_message_id=sid,
            status=DeliveryStatus.DELIVERED,
            provider_status="delivered",
            occurred_at=timezone.now(),
            callback_data=str(message.idempotency_key),
        ),
    )

    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.provider_message_id == sid
    assert len(stub.requests) == 1


def test_backlog_queued_while_the_worker_is_down_is_delivered_once_even_when_dispatched_twice(
    account, version, broker, stub, worker, publishing, settings
):
    settings.MESSAGING_OUTBOX_LEASE_SECONDS = 0  # every row is due again at once
    answer(stub, BACKLOG)
    contacts = [reachable_contact(account.team, Channel.SMS) for _ in range(BACKLOG)]
    messages = [send(account, version, contact) for contact in contacts]
    # The dispatcher finds every row due and queues a second task for each message.
    assert dispatch_due_messages() == BACKLOG

    worker.start()
    wait_until_all(messages, MessageStatus.SENT, worker)
    wait_for(
        lambda: worker.tasks_succeeded() == 2 * BACKLOG,
        timeout=DELIVERY_TIMEOUT,
        what="the worker to run the second task of each message too",
        explain=worker.tail,
    )

    assert requests_per_key(stub) == {str(message.idempotency_key): 1 for message in messages}
    recipients = sorted(request.form()["To"][0] for request in stub.requests)
    assert recipients == sorted(contact.points.get().address for contact in contacts)
    done = OutboxEntry.objects.filter(message__in=messages, state=OutboxState.DONE, attempts=1)
    assert done.count() == BACKLOG
    assert statuses(messages) == {MessageStatus.SENT: BACKLOG}
