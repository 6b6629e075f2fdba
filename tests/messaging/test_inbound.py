"""The inbound service and the double opt-in sender, below the webhook views.

Inbound messages are built as the parsers build them; everything else goes through the real
services, so chains, consent projections and gate decisions stay true.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import replace

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from consent.models import Consent, ConsentStatus, OptInRequest
from consent.services import Evidence, contact_restrict, opt_in_request
from crm.errors import DomainError
from crm.models import Contact, ContactPoint
from messaging.models import (
    ConversationEvent,
    Direction,
    Message,
    MessageKind,
    MessageStatus,
)
from messaging.services import inbound as inbound_module
from messaging.services import inbound_message_receive, webhook_batch_process
from messaging.webhooks.events import InboundMessage, TemplateStatusEvent, WebhookBatch
from tests.consent.helpers import grant_consent
from tests.factories import (
    ChannelAccountFactory,
    ConsentTextFactory,
    ContactFactory,
    ContactPointFactory,
    PurposeFactory,
)

pytestmark = pytest.mark.django_db

SENDER = "+4915112345678"


def inbound(
    text: str = "Hallo, ich habe eine Frage.",
    *,
    sender: str = SENDER,
    provider_message_id: str = "wamid.test-1",
    at: dt.datetime | None = None,
    **fields,
) -> InboundMessage:
    return InboundMessage(
        provider="whatsapp_cloud",
        channel=fields.pop("channel", "whatsapp"),
        provider_message_id=provider_message_id,
        from_address=sender,
        to_address="+4930123456",
        occurred_at=at or timezone.now(),
        kind=fields.pop("kind", "text"),
        text=text,
        **fields,
    )


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team, channel="whatsapp")


@pytest.fixture
def known(team):
    contact = ContactFactory(team=team, language="en")
    ContactPointFactory(contact=contact, channel="whatsapp", address=SENDER)
    return contact


@pytest.fixture
def handed_to_conversation(monkeypatch):
    """Records the messages passed on to the conversation (reopen, hand-off, automation)."""
    calls = []

    def record(*, conversation, message):
        calls.append((conversation.pk, message.pk))

    monkeypatch.setattr(inbound_module, "conversation_inbound_received", record)
    return calls


def test_unknown_sender_becomes_a_contact_of_the_accounts_team_without_consent(
    account, team, other_team
):
    stranger = ContactFactory(team=other_team)
    ContactPointFactory(contact=stranger, channel="whatsapp", address=SENDER)

    message = inbound_message_receive(account=account, inbound=inbound(profile_name="Jana S."))

    contact = message.contact
    assert contact != stranger
    assert contact.team == team
    assert contact.first_name == "Jana S."
    assert ContactPoint.objects.get(contact=contact).address == SENDER
    assert not Consent.objects.exists()
    assert message.conversation.service_window_ends_at > timezone.now()


def test_sender_address_is_normalised_before_matching(account, known):
    message = inbound_message_receive(account=account, inbound=inbound(sender="0049 151 12345678"))
    assert message.contact == known
    assert Contact.objects.count() == 1


def test_redelivery_days_later_returns_the_stored_message_and_changes_nothing(account, known):
    first = inbound_message_receive(account=account, inbound=inbound())
    before = (Message.objects.count(), ConversationEvent.objects.count(), Contact.objects.count())

    again = inbound_message_receive(
        account=account, inbound=inbound(at=timezone.now() + dt.timedelta(days=3))
    )

    assert again == first
    assert (
        Message.objects.count(),
        ConversationEvent.objects.count(),
        Contact.objects.count(),
    ) == before


def test_duplicate_that_passes_the_check_returns_the_stored_message(account, known, monkeypatch):
    first = inbound_message_receive(account=account, inbound=inbound())
    real_stored = inbound_module._stored
    calls = []

    def stored_after_the_check(*args):
        # A concurrent copy: the check ran before the other transaction committed its message.
        calls.append(args)
        return None if len(calls) == 1 else real_stored(*args)

    monkeypatch.setattr(inbound_module, "_stored", stored_after_the_check)

    again = inbound_message_receive(account=account, inbound=inbound())

    assert len(calls) == 2  # the check, then the look-up after the unique constraint fired
    assert again == first
    assert Message.objects.count() == 1
    assert ConversationEvent.objects.count() == 1


def test_same_provider_id_on_another_account_is_another_message(account, known, team):
    other = ChannelAccountFactory(team=team, channel="whatsapp")
    inbound_message_receive(account=account, inbound=inbound())
    inbound_message_receive(account=other, inbound=inbound())
    assert Message.objects.count() == 2


def test_media_is_stored_as_media(account, known):
    message = inbound_message_receive(account=account, inbound=inbound("", kind="image"))
    assert message.kind == MessageKind.MEDIA
    assert message.status == MessageStatus.RECEIVED


def test_plain_text_goes_to_the_conversation(account, known, handed_to_conversation):
    message = inbound_message_receive(account=account, inbound=inbound())
    assert handed_to_conversation == [(message.conversation_id, message.pk)]
    assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()


def test_stop_withdraws_answers_and_skips_the_conversation(
    account, known, team, handed_to_conversation
):
    purpose = PurposeFactory(team=team)
    grant_consent(known, purpose, "whatsapp")
    grant_consent(known, purpose, "sms")

    inbound_message_receive(account=account, inbound=inbound("Stop!"))

    assert Consent.objects.get(channel="whatsapp").status == ConsentStatus.WITHDRAWN
    # STOP is about the channel it was written on.
    assert Consent.objects.get(channel="sms").status == ConsentStatus.GRANTED
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert (reply.origin, reply.sender_kind, reply.status) == (
        "consent_keyword",
        "system",
        "queued",
    )
    assert handed_to_conversation == []


def test_button_payload_stop_withdraws_whatever_the_label_says(account, known, team):
    purpose = PurposeFactory(team=team)
    grant_consent(known, purpose, "whatsapp")
    button = inbound("Keine Angebote mehr, danke", kind="button", payload="STOP")

    inbound_message_receive(account=account, inbound=button)

    assert Consent.objects.get().status == ConsentStatus.WITHDRAWN


def test_help_is_answered_in_the_contacts_language_naming_stop_and_start(account, known):
    inbound_message_receive(account=account, inbound=inbound("HELP"))
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert reply.origin == "consent_keyword"
    assert "STOP" in reply.body
    assert "START" in reply.body
    assert "Reply" in reply.body


def test_refused_keyword_reply_is_logged_and_the_withdrawal_stands(account, known, team, caplog):
    purpose = PurposeFactory(team=team)
    grant_consent(known, purpose, "whatsapp")
    contact_restrict(contact=known, actor=None)

    with caplog.at_level(logging.WARNING, logger="messaging.services.inbound"):
        inbound_message_receive(account=account, inbound=inbound("STOP"))

    assert Consent.objects.get().status == ConsentStatus.WITHDRAWN
    assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()
    assert "contact_restricted" in caplog.text


def test_consent_refusal_does_not_lose_the_message(account, known, monkeypatch, caplog):
    def refuse(**kwargs):
        raise DomainError("no")

    monkeypatch.setattr(inbound_module, "consent_inbound_message", refuse)
    with caplog.at_level(logging.WARNING, logger="messaging.services.inbound"):
        message = inbound_message_receive(account=account, inbound=inbound("JA"))
    assert Message.objects.get() == message
    assert "consent not applied" in caplog.text


def test_message_for_another_channel_is_refused_and_stores_nothing(account, known):
    with pytest.raises(inbound_module.WebhookMisrouted):
        inbound_message_receive(account=account, inbound=inbound(channel="sms"))
    assert not Message.objects.exists()


def test_template_event_without_a_status_of_ours_is_logged_not_quarantined(account, caplog):
    event = TemplateStatusEvent(
        event="ARCHIVED", provider_template_id="1052893041278364", name="x", language="de"
    )
    with caplog.at_level(logging.WARNING, logger="messaging.services.inbound"):
        result = webhook_batch_process(
            account=account, batch=WebhookBatch(template_statuses=[event])
        )
    assert not result.failed
    assert "ARCHIVED" in caplog.text


def test_batch_keeps_going_after_a_failing_item(account, known, monkeypatch):
    bad = inbound(sender="+49 1", provider_message_id="wamid.bad")
    good = inbound(provider_message_id="wamid.good")

    result = webhook_batch_process(account=account, batch=WebhookBatch(messages=[bad, good]))

    assert [message.provider_message_id for message in result.messages] == ["wamid.good"]
    assert len(result.errors) == 1
    assert "wamid.bad" in result.errors[0]
    assert Message.objects.get().provider_message_id == "wamid.good"


# --- Concurrency (PostgreSQL: SQLite serialises writers) ------------------------------------


def run_at_once(*calls):
    """Start every call at the same moment in its own thread and connection."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=5)
            results[index] = call()
        except Exception as exc:  # reported to the test below
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_one_delivery_store_one_message(team):
    account = ChannelAccountFactory(team=team, channel="whatsapp")
    copy = inbound()

    results = run_at_once(
        *[lambda: inbound_message_receive(account=account, inbound=copy) for _ in range(3)]
    )

    assert all(isinstance(result, Message) for result in results), results
    assert {result.pk for result in results} == {Message.objects.get().pk}
    assert Contact.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_messages_of_a_new_sender_make_one_contact(team):
    account = ChannelAccountFactory(team=team, channel="whatsapp")
    first = inbound(provider_message_id="wamid.a")
    second = replace(first, provider_message_id="wamid.b", text="Noch eine Frage")

    results = run_at_once(
        lambda: inbound_message_receive(account=account, inbound=first),
        lambda: inbound_message_receive(account=account, inbound=second),
    )

    assert all(isinstance(result, Message) for result in results), results
    assert Contact.objects.count() == 1
    assert Message.objects.filter(contact=Contact.objects.get()).count() == 2


# --- Double opt-in confirmations ----------------------------------------------------------------


@pytest.fixture
def double_opt_in(team):
    return PurposeFactory(
        team=team,
        name="Filmtipps",
        allowed_channels=["email", "sms", "whatsapp"],
        double_opt_in_channels=["email", "sms", "whatsapp"],
    )


def request_opt_in(contact, purpose, channel, capture):
    with capture(execute=True):
        return opt_in_request(
            contact=contact,
            purpose=purpose,
            channel=channel,
            evidence=Evidence(consent_text=ConsentTextFactory(purpose=purpose)),
        )


def test_sms_confirmation_goes_through_the_gate_with_link_and_yes(
    team, double_opt_in, django_capture_on_commit_callbacks
):
    ChannelAccountFactory(team=team, channel="sms")
    contact = ContactFactory(team=team, language="en")
    ContactPointFactory(contact=contact, channel="sms", address="+4917012345001")

    request_opt_in(contact, double_opt_in, "sms", django_capture_on_commit_callbacks)

    message = Message.objects.get(direction=Direction.OUTBOUND)
    assert message.origin == "double_opt_in"
    assert message.sender_kind == "system"
    assert message.gate_decision["request"]["opt_in_confirmation"] is True
    assert "https://" in message.body or "http://" in message.body
    assert "/c/" in message.body
    assert "YES" in message.body
    assert "Filmtipps" in message.body
    assert message.status == MessageStatus.SENT
    assert OptInRequest.objects.get().contact == contact


def test_email_confirmation_is_left_to_the_consent_mailer(
    team, double_opt_in, django_capture_on_commit_callbacks
):
    ChannelAccountFactory(team=team, channel="email")
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="email", address="jana@example.org")

    request_opt_in(contact, double_opt_in, "email", django_capture_on_commit_callbacks)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["jana@example.org"]
    assert not Message.objects.exists()


def test_confirmation_without_an_account_is_logged(
    team, double_opt_in, django_capture_on_commit_callbacks, caplog
):
    ChannelAccountFactory(team=team, channel="sms", is_active=False)
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="sms", address="+4917012345002")

    with caplog.at_level(logging.WARNING, logger="messaging.confirmation"):
        request_opt_in(contact, double_opt_in, "sms", django_capture_on_commit_callbacks)

    assert not Message.objects.exists()
    assert "no active sms account" in caplog.text


def test_refused_confirmation_is_logged_with_the_gate_code(
    team, double_opt_in, django_capture_on_commit_callbacks, caplog
):
    # WhatsApp free text needs an open service window; this contact never wrote.
    ChannelAccountFactory(team=team, channel="whatsapp")
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address="+4915112345003")

    with caplog.at_level(logging.WARNING, logger="messaging.confirmation"):
        request_opt_in(contact, double_opt_in, "whatsapp", django_capture_on_commit_callbacks)

    assert not Message.objects.exists()
    assert "outside_service_window" in caplog.text
