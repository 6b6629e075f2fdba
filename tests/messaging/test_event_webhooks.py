"""Outbound event webhooks: signing per Standard Webhooks, SSRF refusals, retries with backoff,
disabling after repeated failure, and messaging that keeps flowing while a subscriber is down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket

import pytest
from django.core import mail
from django.utils import timezone

from messaging.models import (
    DeliveryStatus,
    EventType,
    Message,
    WebhookDelivery,
    WebhookSubscription,
)
from messaging.services import (
    conversation_hand_off,
    event_publish,
    inbound_message_receive,
    message_status_apply,
    webhook_delivery_attempt,
    webhook_sign,
    webhook_subscription_create,
    webhook_subscription_enable,
)
from messaging.services.urlsafety import UnsafeUrl, url_safety_check
from messaging.webhooks.events import DeliveryStatus as ReceiptStatus
from messaging.webhooks.events import InboundMessage, StatusUpdate
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import reachable_contact, receive_text
from tests.messaging.stub_server import StubServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_delivery(settings):
    """Deliveries may reach the stub server on 127.0.0.1 over http (test-only settings)."""
    settings.MESSAGING_WEBHOOK_ALLOW_HTTP = True
    settings.MESSAGING_WEBHOOK_ALLOW_PRIVATE = True
    settings.MESSAGING_WEBHOOK_MAX_ATTEMPTS = 3
    settings.MESSAGING_WEBHOOK_DISABLE_AFTER = 2
    settings.MESSAGING_WEBHOOK_TIMEOUT = 2.0


@pytest.fixture
def stub(local_delivery):
    with StubServer() as server:
        yield server


def subscribe(team, owner, url, event_types=None) -> WebhookSubscription:
    return webhook_subscription_create(
        team=team,
        url=url,
        event_types=event_types or [EventType.MESSAGE_RECEIVED],
        owner=owner,
        actor=None,
    )


def publish(team, event_type=EventType.MESSAGE_RECEIVED, data=None) -> int:
    return event_publish(team_id=team.pk, event_type=event_type, data=data or {"message": 1})


REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(autouse=True)
def _public_dns(monkeypatch):
    """The test hosts (*.example.com) resolve to a public address; nothing is looked up."""
    resolving_to(monkeypatch, "93.184.215.14")


def resolving_to(monkeypatch, *addresses: str) -> None:
    """Names under example.com resolve to `addresses`; IP literals (the stub) stay real."""

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if not str(host).endswith("example.com"):
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)


def test_delivery_is_signed_as_standard_webhooks_specifies(
    team, marketing, stub, django_capture_on_commit_callbacks
):
    subscription = subscribe(team, marketing, stub.url + "/hook")
    assert subscription.secret.startswith("whsec_")
    assert len(base64.b64decode(subscription.secret.removeprefix("whsec_"))) == 32

    with django_capture_on_commit_callbacks(execute=True):
        assert publish(team, data={"message": 7}) == 1

    request = stub.requests[0]
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    # Computed independently of the service, from the spec: key = base64 after "whsec_".
    key = base64.b64decode(subscription.secret.split("_", 1)[1])
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + request.body, hashlib.sha256).digest()
    ).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert msg_id.startswith("msg_")
    assert abs(int(timestamp) - timezone.now().timestamp()) < 60
    payload = json.loads(request.body)
    assert payload["type"] == "message.received"
    assert payload["data"] == {"message": 7}
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_id == msg_id
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts == 1
    assert delivery.last_status_code == 200
    assert delivery.delivered_at is not None


def test_sign_matches_a_known_vector():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = '{"type":"x"}'
    expected = base64.b64encode(
        hmac.new(b"k" * 32, b'msg_1.1700000000.{"type":"x"}', hashlib.sha256).digest()
    ).decode()
    assert webhook_sign(secret=secret, msg_id="msg_1", timestamp=1700000000, body=body) == (
        "v1," + expected
    )


def test_only_subscriptions_of_the_team_wanting_the_type_get_the_event(
    team, other_team, marketing, outsider
):
    subscribe(team, marketing, "https://hooks.example.com/a", [EventType.MESSAGE_STATUS])
    wanted = subscribe(team, marketing, "https://hooks.example.com/b")
    subscribe(other_team, outsider, "https://hooks.example.com/c")

    # Captured, not executed: no network in this test.
    assert publish(team) == 1
    assert WebhookDelivery.objects.get().subscription == wanted


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://192.168.0.10/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "http://hooks.example.com/plain-http",
        "ftp://hooks.example.com/file",
    ],
)
def test_private_loopback_link_local_and_non_https_urls_are_refused(team, marketing, url):
    with pytest.raises(UnsafeUrl):
        subscribe(team, marketing, url)
    assert not WebhookSubscription.objects.exists()


def test_a_hostname_resolving_to_a_private_address_is_refused(team, marketing, monkeypatch):
    resolving_to(monkeypatch, "93.184.215.14", "10.0.0.5")
    with pytest.raises(UnsafeUrl):
        subscribe(team, marketing, "https://sneaky.example.com/hook")
    assert not WebhookSubscription.objects.exists()


def test_a_hostname_resolving_to_public_addresses_is_accepted(monkeypatch):
    resolving_to(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    url_safety_check(url="https://hooks.example.com/hook")


def test_the_url_is_checked_again_at_delivery_time(team, marketing, monkeypatch, settings):
    settings.MESSAGING_WEBHOOK_MAX_ATTEMPTS = 1
    subscribe(team, marketing, "https://hooks.example.com/hook")
    publish(team)
    # DNS now points inside the network: nothing is sent.
    resolving_to(monkeypatch, "127.0.0.1")

    assert webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get().pk) is None

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_status_code is None
    assert "private" in delivery.last_error


def test_a_failed_try_is_retried_with_exponential_backoff(team, marketing, stub, settings):
    settings.MESSAGING_WEBHOOK_RETRY_BASE_SECONDS = 30
    subscribe(team, marketing, stub.url)
    publish(team)
    delivery = WebhookDelivery.objects.get()
    stub.default = stub.default.__class__(status=503)

    waits = [webhook_delivery_attempt(delivery_id=delivery.pk) for _ in range(3)]

    assert waits == [30, 60, None]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert delivery.last_status_code == 503
    assert len(stub.requests) == 3
    # Every try carries the same id, so the receiver can deduplicate.
    assert {request.headers["webhook-id"] for request in stub.requests} == {delivery.event_id}


def test_the_task_retries_until_the_subscriber_answers(
    team, marketing, stub, django_capture_on_commit_callbacks
):
    subscription = subscribe(team, marketing, stub.url)
    stub.respond(500)
    stub.respond(502)
    with django_capture_on_commit_callbacks(execute=True):
        publish(team)

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts == 3
    assert len(stub.requests) == 3
    subscription.refresh_from_db()
    assert subscription.failure_count == 0


def test_repeated_failure_disables_the_subscription_and_tells_the_owner(
    team, marketing, stub, django_capture_on_commit_callbacks
):
    marketing.email = "owner@example.org"
    marketing.save()
    subscription = subscribe(team, marketing, stub.url)
    stub.default = stub.default.__class__(status=500)

    with django_capture_on_commit_callbacks(execute=True):
        publish(team)
    subscription.refresh_from_db()
    assert subscription.is_active
    assert subscription.failure_count == 1
    assert mail.outbox == []

    with django_capture_on_commit_callbacks(execute=True):
        publish(team)
    subscription.refresh_from_db()
    assert not subscription.is_active
    assert subscription.disabled_at is not None
    assert subscription.failure_count == 2
    assert [message.to for message in mail.outbox] == [["owner@example.org"]]
    assert subscription.url in mail.outbox[0].subject

    # Disabled: later events are not queued for it at all.
    assert publish(team) == 0


def test_re_enabling_resets_the_failures(team, marketing, stub, django_capture_on_commit_callbacks):
    subscription = subscribe(team, marketing, stub.url)
    stub.default = stub.default.__class__(status=500)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            publish(team)
    subscription.refresh_from_db()
    assert not subscription.is_active

    webhook_subscription_enable(subscription=subscription, actor=None)

    subscription.refresh_from_db()
    assert subscription.is_active
    assert subscription.failure_count == 0
    assert subscription.disabled_at is None


def test_a_success_resets_the_consecutive_failures(
    team, marketing, stub, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_WEBHOOK_DISABLE_AFTER = 5
    subscription = subscribe(team, marketing, stub.url)
    for status in (500, 500, 500):
        stub.respond(status)
    with django_capture_on_commit_callbacks(execute=True):
        publish(team)
    subscription.refresh_from_db()
    assert subscription.failure_count == 1

    with django_capture_on_commit_callbacks(execute=True):
        publish(team)
    subscription.refresh_from_db()
    assert subscription.failure_count == 0


def test_messaging_keeps_flowing_while_the_subscriber_is_down(
    team, marketing, local_delivery, django_capture_on_commit_callbacks
):
    # A port nobody listens on: every try is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subscribe(team, marketing, f"http://127.0.0.1:{port}/hook")
    account = ChannelAccountFactory(team=team)
    contact = reachable_contact(team)
    inbound = InboundMessage(
        provider="console",
        channel=account.channel,
        provider_message_id="in-1",
        from_address=contact.points.get().address,
        to_address=account.address,
        text="Hallo",
        kind="text",
        occurred_at=timezone.now(),
        raw={},
    )

    with django_capture_on_commit_callbacks(execute=True):
        message = inbound_message_receive(account=account, inbound=inbound)

    assert Message.objects.filter(pk=message.pk).exists()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert "ConnectError" in delivery.last_error


def test_message_received_status_and_hand_off_publish_events(team, marketing):
    subscribe(
        team,
        marketing,
        "https://hooks.example.com/hook",
        [
            EventType.MESSAGE_RECEIVED,
            EventType.MESSAGE_STATUS,
            EventType.CONVERSATION_HANDED_OFF,
        ],
    )
    account = ChannelAccountFactory(team=team)
    contact = reachable_contact(team)
    inbound = InboundMessage(
        provider="console",
        channel=account.channel,
        provider_message_id="in-2",
        from_address=contact.points.get().address,
        to_address=account.address,
        text="Hallo",
        kind="text",
        occurred_at=timezone.now(),
        raw={},
    )
    message = inbound_message_receive(account=account, inbound=inbound)
    conversation_hand_off(conversation=message.conversation, actor=None, reason="requested")
    outbound = receive_text(account, contact, "x")
    Message.objects.filter(pk=outbound.pk).update(
        direction="outbound", status="sent", provider_message_id="out-1"
    )
    message_status_apply(
        account=account,
        update=StatusUpdate(
            provider="console",
            channel=account.channel,
            provider_message_id="out-1",
            status=ReceiptStatus.DELIVERED,
            provider_status="delivered",
            occurred_at=timezone.now(),
            raw={},
        ),
    )

    events = {d.event_type: d.payload["data"] for d in WebhookDelivery.objects.all()}
    assert set(events) == {"message.received", "message.status", "conversation.handed_off"}
    assert events["message.received"]["message"] == message.pk
    assert events["message.status"] == {
        "message": outbound.pk,
        "conversation": outbound.conversation_id,
        "contact": contact.pk,
        "status": "delivered",
        "error_code": "",
    }
    assert events["conversation.handed_off"]["reason"] == "requested"
    # Thin events: no message text or address leaves the system.
    assert "Hallo" not in json.dumps(list(events.values()))


SUBSCRIPTIONS = "/api/v1/webhook-subscriptions/"


def test_api_create_shows_the_secret_once(api_client_for, marketing, team):
    client = api_client_for(marketing)

    created = client.post(
        SUBSCRIPTIONS,
        {"team": team.pk, "url": "https://hooks.example.com/in", "event_types": ["message.status"]},
        format="json",
    )

    assert created.status_code == 201, created.json()
    subscription = WebhookSubscription.objects.get()
    assert created.json()["secret"] == subscription.secret
    assert subscription.owner == marketing
    shown = client.get(f"{SUBSCRIPTIONS}{subscription.pk}/")
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert subscription.secret not in json.dumps(client.get(SUBSCRIPTIONS).json())


def test_api_refuses_a_private_url_and_stores_nothing(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        SUBSCRIPTIONS,
        {"team": team.pk, "url": "https://10.0.0.1/in", "event_types": ["message.status"]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unsafe_url"
    assert not WebhookSubscription.objects.exists()


def test_api_update_checks_a_new_url_again(api_client_for, marketing, team):
    subscription = subscribe(team, marketing, "https://hooks.example.com/a")
    response = api_client_for(marketing).patch(
        f"{SUBSCRIPTIONS}{subscription.pk}/", {"url": "https://127.0.0.1/"}, format="json"
    )
    assert response.status_code == 400
    subscription.refresh_from_db()
    assert subscription.url == "https://hooks.example.com/a"


def test_agents_may_not_subscribe(api_client_for, agent, team):
    response = api_client_for(agent).post(
        SUBSCRIPTIONS,
        {"team": team.pk, "url": "https://hooks.example.com/in", "event_types": ["message.status"]},
        format="json",
    )
    assert response.status_code == 403
    assert not WebhookSubscription.objects.exists()


def test_api_enable_and_deliveries(api_client_for, marketing, team, stub):
    subscription = subscribe(team, marketing, stub.url)
    stub.default = stub.default.__class__(status=500)
    for _ in range(2):
        publish(team)
        delivery = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).get()
        while webhook_delivery_attempt(delivery_id=delivery.pk) is not None:
            pass
    client = api_client_for(marketing)

    deliveries = client.get(f"{SUBSCRIPTIONS}{subscription.pk}/deliveries/")
    enabled = client.post(f"{SUBSCRIPTIONS}{subscription.pk}/enable/")

    assert deliveries.status_code == 200
    assert [row["status"] for row in deliveries.json()["results"]] == ["failed", "failed"]
    assert enabled.status_code == 200
    assert enabled.json()["is_active"] is True
    assert enabled.json()["failure_count"] == 0


def test_admin_create_shows_the_secret_once_and_refuses_private_urls(marketing, team):
    from django.test import Client
    from django.urls import reverse

    marketing.is_staff = True
    marketing.save()
    client = Client()
    client.force_login(marketing)
    add = reverse("admin:messaging_webhooksubscription_add")
    form = {
        "team": team.pk,
        "url": "https://hooks.example.com/in",
        "event_types": ["message.received"],
        "description": "ERP",
        "deliveries-TOTAL_FORMS": "0",
        "deliveries-INITIAL_FORMS": "0",
    }

    refused = client.post(add, {**form, "url": "https://169.254.169.254/"}, follow=True)
    assert not WebhookSubscription.objects.exists()
    assert "private or reserved" in refused.content.decode()

    response = client.post(add, form, follow=True)
    subscription = WebhookSubscription.objects.get()
    assert subscription.owner == marketing
    assert subscription.secret in response.content.decode()
    change = client.get(
        reverse("admin:messaging_webhooksubscription_change", args=[subscription.pk])
    )
    assert change.status_code == 200
    assert subscription.secret not in change.content.decode()


def test_with_a_broker_the_task_schedules_the_retry_with_the_backoff(
    team, marketing, stub, settings, monkeypatch
):
    from messaging.tasks import deliver_webhook

    settings.MESSAGING_WEBHOOK_RETRY_BASE_SECONDS = 30
    subscribe(team, marketing, stub.url)
    publish(team)
    stub.respond(503)
    scheduled = []

    def retry(**options):
        scheduled.append(options)
        return RuntimeError("retry scheduled")

    monkeypatch.setattr(deliver_webhook, "retry", retry)

    with pytest.raises(RuntimeError, match="retry scheduled"):
        deliver_webhook.run(WebhookDelivery.objects.get().pk)

    assert scheduled == [{"countdown": 30, "max_retries": None}]
    assert WebhookDelivery.objects.get().status == DeliveryStatus.PENDING


def test_lost_deliveries_are_claimed_again_once(team, marketing, settings):
    from messaging.services.events import webhook_deliveries_claim_lost

    subscribe(team, marketing, "https://hooks.example.com/a")
    publish(team)
    delivery = WebhookDelivery.objects.get()
    later = timezone.now() + timezone.timedelta(seconds=settings.MESSAGING_OUTBOX_LEASE_SECONDS + 1)

    assert webhook_deliveries_claim_lost(now=later) == [delivery.pk]
    assert webhook_deliveries_claim_lost(now=later) == []


def test_consent_changes_publish_consent_changed_in_the_same_transaction(team, marketing):
    from tests.consent.helpers import grant_consent, withdraw_consent
    from tests.factories import PurposeFactory

    subscribe(team, marketing, "https://hooks.example.com/consent", [EventType.CONSENT_CHANGED])
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    contact = reachable_contact(team)
    granted = grant_consent(contact, purpose, "whatsapp")
    withdraw_consent(contact, purpose, "whatsapp")
    payloads = [
        delivery.payload["data"]
        for delivery in WebhookDelivery.objects.filter(event_type="consent.changed").order_by("pk")
    ]
    assert [p["action"] for p in payloads] == ["granted", "withdrawn"]
    assert payloads[0]["consent_event"] == granted.pk
    assert payloads[0]["purpose"] == purpose.key
    assert payloads[0]["contact"] == contact.pk
