import datetime as dt
import json

import pytest
from django.utils import timezone

from consent.models import RetentionPolicy
from consent.services import (
    ACCESS_EXPORT_SECTIONS,
    CONTACT_ACTIVITY_SOURCES,
    ERASURE_HOOKS,
    RETENTION_HANDLERS,
    contact_access_export,
    contact_erase,
    retention_apply,
)
from crm.ledger import verify_chain
from messaging import privacy
from messaging.models import Conversation, Message, MessageStatus, StatusReceipt
from messaging.services import message_send, message_status_apply
from messaging.services.exports import conversations_export, export_verify
from messaging.webhooks.events import DeliveryStatus, StatusUpdate
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db

DataClass = RetentionPolicy.DataClass
LATER = timezone.now() + dt.timedelta(days=400)


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def anna(team, account, agent, django_capture_on_commit_callbacks):
    """A contact with an inbound message, a delivered template message and an agent reply."""
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    version = sendable_version(team, purpose=purpose)
    contact = reachable_contact(team, first_name="Anna")
    grant_consent(contact, purpose, "whatsapp")
    with django_capture_on_commit_callbacks(execute=True):
        sent = message_send(
            contact=contact,
            account=account,
            actor=None,
            template_version=version,
            address=contact.points.get().address,
        )
    sent.refresh_from_db()
    message_status_apply(
        account=account,
        update=StatusUpdate(
            provider="console",
            channel="whatsapp",
            provider_message_id=sent.provider_message_id,
            status=DeliveryStatus.DELIVERED,
            provider_status="delivered",
            occurred_at=timezone.now(),
            raw={"recipient_id": contact.points.get().address},
        ),
    )
    receive_text(account, contact, "Ich heiße Anna Beispiel, Tel. 0170 1234567")
    with django_capture_on_commit_callbacks(execute=True):
        message_send(contact=contact, account=account, actor=agent, text="Danke, Anna!")
    return contact


def test_messaging_is_registered_with_the_consent_registries_once():
    privacy.register()
    assert ACCESS_EXPORT_SECTIONS.count(privacy.contact_messages_section) == 1
    assert ERASURE_HOOKS.count(privacy.contact_messages_erase) == 1
    assert CONTACT_ACTIVITY_SOURCES.count(privacy.contacts_with_messages_since) == 1
    assert RETENTION_HANDLERS["messages"] is privacy.messages_retention_apply


def test_access_export_lists_the_contacts_messages(anna, team, account):
    stranger = reachable_contact(team)
    receive_text(account, stranger, "Nicht von Anna")

    export = contact_access_export(anna)

    assert json.loads(json.dumps(export)) == export
    rows = export["messages"]
    assert [row["direction"] for row in rows] == ["outbound", "inbound", "outbound"]
    assert rows[1]["body"] == "Ich heiße Anna Beispiel, Tel. 0170 1234567"
    assert rows[0]["status"] == "delivered"
    assert {row["channel"] for row in rows} == {"whatsapp"}
    assert all(row["created_at"] for row in rows)
    assert "Nicht von Anna" not in json.dumps(rows)


def test_erasure_pseudonymises_the_message_texts_and_keeps_their_hashes(
    anna, team, account, marketing, tmp_path
):
    other = reachable_contact(team)
    untouched = receive_text(account, other, "Bleibt stehen")
    hashes = dict(Message.objects.values_list("pk", "body_hash"))
    address = anna.points.get().address
    assert Message.objects.filter(gate_decision__request__address=address).count() == 1

    contact_erase(contact=anna, actor=marketing)

    for message in Message.objects.filter(contact=anna):
        assert message.body == "[erased]"
        assert message.subject == ""
        assert message.variables == {}
        assert message.erased_at is not None
        assert message.body_hash == hashes[message.pk]
        assert (message.gate_decision.get("request") or {}).get("address") is None
    receipts = list(StatusReceipt.objects.values_list("raw", flat=True))
    assert receipts
    assert all(raw == {} for raw in receipts)
    untouched.refresh_from_db()
    assert untouched.body == "Bleibt stehen"
    assert untouched.erased_at is None
    conversation = Conversation.objects.get(contact=anna)
    assert verify_chain(conversation.pk, conversation.events.order_by("sequence")) is None

    conversations_export(actor=None, out_dir=tmp_path / "x")
    result = export_verify(tmp_path / "x")
    assert result.ok, result.first_mismatch
    assert "0170 1234567" not in (tmp_path / "x" / "messages.jsonl").read_text()


def test_an_erased_message_that_still_holds_text_fails_verification(anna, marketing, tmp_path):
    contact_erase(contact=anna, actor=marketing)
    conversations_export(actor=None, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "messages.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    row = json.loads(lines[0])
    row["body"] = "Ein ganz anderer Text"
    lines[0] = json.dumps(row) + "\n"
    path.write_text("".join(lines))

    assert export_verify(tmp_path / "x").first_mismatch == (
        f"messages.jsonl line 1 (message {row['id']}, conversation {row['conversation']}): "
        "marked as erased but still holds text."
    )


def test_retention_pseudonymises_settled_messages_older_than_the_cutoff(
    anna, team, account, tmp_path
):
    queued = message_send(contact=anna, account=account, actor=None, text="Noch unterwegs")
    assert queued.status == MessageStatus.QUEUED
    RetentionPolicy.objects.create(data_class=DataClass.MESSAGES, keep_days=90)

    [dry] = retention_apply(now=LATER, dry_run=True)
    assert dry.affected == 3
    assert Message.objects.filter(erased_at__isnull=False).count() == 0

    [run] = retention_apply(now=LATER)

    assert run.affected == 3
    assert run.details["pseudonymised"] == 3
    erased = Message.objects.filter(erased_at__isnull=False)
    assert erased.count() == 3
    assert set(erased.values_list("body", flat=True)) == {"[erased]"}
    queued.refresh_from_db()
    assert queued.body == "Noch unterwegs"
    conversations_export(actor=None, out_dir=tmp_path / "x")
    assert export_verify(tmp_path / "x").ok


def test_retention_keeps_messages_younger_than_the_cutoff(anna):
    RetentionPolicy.objects.create(data_class=DataClass.MESSAGES, keep_days=90)
    [run] = retention_apply()
    assert run.affected == 0
    assert not Message.objects.filter(erased_at__isnull=False).exists()


def test_a_teams_own_retention_policy_replaces_the_global_one(anna, team, other_team):
    foreign = reachable_contact(other_team)
    receive_text(ChannelAccountFactory(team=other_team), foreign, "Apotheke")
    RetentionPolicy.objects.create(data_class=DataClass.MESSAGES, keep_days=90)
    RetentionPolicy.objects.create(data_class=DataClass.MESSAGES, keep_days=1000, team=other_team)

    runs = retention_apply(now=LATER)

    assert sum(run.affected for run in runs) == 3
    assert Message.objects.get(contact=foreign).erased_at is None


def test_contacts_with_recent_messages_are_not_inactive(anna, team):
    quiet = reachable_contact(team)
    cutoff = timezone.now() - dt.timedelta(days=1)

    active = set(privacy.contacts_with_messages_since(cutoff))

    assert anna.pk in active
    assert quiet.pk not in active
    assert not set(privacy.contacts_with_messages_since(LATER))
