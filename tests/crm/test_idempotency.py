"""Idempotency-Key on POSTs: a retry replays the first answer and creates nothing twice."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from crm.models import Contact, IdempotencyRecord
from messaging.models import Message, OutboxEntry
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, sendable_version

pytestmark = pytest.mark.django_db

CONTACTS = "/api/v1/contacts/"
MESSAGES = "/api/v1/messages/"


def create_contact(client, team, key: str | None, first_name: str = "Jana"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        CONTACTS, {"team": team.pk, "first_name": first_name}, format="json", headers=headers
    )


def test_a_retried_create_replays_the_first_answer_and_creates_nothing_twice(
    api_client_for, marketing, team
):
    client = api_client_for(marketing)

    first = create_contact(client, team, "key-1")
    retry = create_contact(client, team, "key-1")

    assert first.status_code == 201
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert Contact.objects.count() == 1


def test_without_a_key_every_post_creates(api_client_for, marketing, team):
    client = api_client_for(marketing)
    create_contact(client, team, None)
    create_contact(client, team, None)
    assert Contact.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


def test_the_same_key_with_another_body_is_422_and_creates_nothing(api_client_for, marketing, team):
    client = api_client_for(marketing)
    create_contact(client, team, "key-1")

    response = create_contact(client, team, "key-1", first_name="Other")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert list(Contact.objects.values_list("first_name", flat=True)) == ["Jana"]


def test_a_duplicate_while_the_first_still_runs_is_409(api_client_for, marketing, team):
    client = api_client_for(marketing)
    create_contact(client, team, "key-1")
    # The first request has claimed the key but not answered yet.
    IdempotencyRecord.objects.update(status_code=None, response_body=None)

    response = create_contact(client, team, "key-1")

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_in_flight"
    assert Contact.objects.count() == 1


def test_keys_belong_to_their_user(api_client_for, marketing, make_user, team):
    from crm import roles

    colleague = make_user("colleague", roles.MARKETING, team)
    create_contact(api_client_for(marketing), team, "shared-key")
    create_contact(api_client_for(colleague), team, "shared-key")
    assert Contact.objects.count() == 2


def test_an_expired_key_runs_again(api_client_for, marketing, team, settings):
    client = api_client_for(marketing)
    create_contact(client, team, "key-1")
    IdempotencyRecord.objects.update(
        created_at=timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    )

    response = create_contact(client, team, "key-1")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Contact.objects.count() == 2
    assert IdempotencyRecord.objects.count() == 1


def test_a_refused_request_keeps_nothing_so_a_fixed_retry_may_reuse_the_key(
    api_client_for, marketing, team
):
    client = api_client_for(marketing)
    bad = client.post(
        CONTACTS,
        {"team": team.pk, "points": [{"channel": "fax", "address": "1"}]},
        format="json",
        headers={"Idempotency-Key": "key-1"},
    )
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()

    assert create_contact(client, team, "key-1").status_code == 201
    assert Contact.objects.count() == 1


def test_an_overlong_key_is_refused(api_client_for, marketing, team):
    response = create_contact(api_client_for(marketing), team, "k" * 256)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_invalid"
    assert not Contact.objects.exists()


def test_a_retried_send_sends_one_message(api_client_for, marketing, team):
    account = ChannelAccountFactory(team=team)
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    contact = reachable_contact(team)
    version = sendable_version(team, purpose=purpose)
    grant_consent(contact, purpose, "whatsapp")
    client = api_client_for(marketing)
    body = {"contact": contact.pk, "account": account.pk, "template_version": version.pk}

    first = client.post(MESSAGES, body, format="json", headers={"Idempotency-Key": "send-1"})
    retry = client.post(MESSAGES, body, format="json", headers={"Idempotency-Key": "send-1"})

    assert first.status_code == 201, first.json()
    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert Message.objects.filter(contact=contact).count() == 1
    assert OutboxEntry.objects.count() == 1
