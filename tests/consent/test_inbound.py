from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.utils import timezone, translation

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    OptInRequest,
    WithdrawalReview,
)
from consent.services import consent_inbound_message
from consent.services import inbound as inbound_module
from tests.consent.helpers import grant_consent
from tests.consent.test_keywords import STOP_VARIANTS
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()
_refs = itertools.count(1)


@pytest.fixture
def contact(team):
    return ContactFactory(team=team, language="de")


@pytest.fixture
def news(team):
    return PurposeFactory(team=team, name="Kino-News", allowed_channels=["sms", "email"])


@pytest.fixture
def offers(team):
    return PurposeFactory(team=team, name="Angebote", allowed_channels=["sms"])


@pytest.fixture
def film(team):
    return PurposeFactory(
        team=team,
        name="Filmtipps",
        allowed_channels=["sms", "whatsapp"],
        double_opt_in_channels=["whatsapp"],
        opt_in_keywords=["FILM"],
    )


def inbound(contact, text, channel="sms", *, occurred_at=None):
    return consent_inbound_message(
        contact=contact,
        channel=channel,
        text=text,
        message_ref=f"msg-{next(_refs)}",
        occurred_at=occurred_at or timezone.now(),
    )


def status(contact, purpose, channel="sms"):
    consent = Consent.objects.filter(contact=contact, purpose=purpose, channel=channel).first()
    return consent.status if consent else None


@pytest.fixture
def subscribed(contact, news, offers):
    earlier = NOW - dt.timedelta(days=2)
    grant_consent(contact, news, "sms", occurred_at=earlier)
    grant_consent(contact, news, "email", occurred_at=earlier)
    grant_consent(contact, offers, "sms", occurred_at=earlier)


@pytest.mark.parametrize("text", STOP_VARIANTS)
def test_stop_withdraws_every_purpose_on_that_channel(subscribed, contact, news, offers, text):
    outcome = inbound(contact, text)
    assert outcome.kind == "withdraw"
    assert outcome.is_keyword
    assert {purpose.pk for purpose in outcome.purposes} == {news.pk, offers.pk}
    assert status(contact, news) == status(contact, offers) == ConsentStatus.WITHDRAWN
    assert status(contact, news, "email") == ConsentStatus.GRANTED
    events = ConsentEvent.objects.filter(action=ConsentAction.WITHDRAWN).select_related("evidence")
    assert events.count() == 2
    for event in events:
        assert event.source == ConsentSource.KEYWORD
        assert event.evidence.message_text == text
        assert event.evidence.inbound_message_ref.startswith("msg-")
    assert outcome.reply


def test_stop_also_withdraws_purposes_never_granted(contact, news, film):
    inbound(contact, "STOP")
    assert status(contact, news) == status(contact, film) == ConsentStatus.WITHDRAWN


@pytest.mark.parametrize("language", ["de", "en"])
def test_replies_are_written_in_the_contacts_language(subscribed, contact, language, monkeypatch):
    contact.language = language
    contact.save()
    monkeypatch.setattr(
        inbound_module, "_", lambda message: f"[{translation.get_language()}] {message}"
    )
    assert inbound(contact, "STOP").reply.startswith(f"[{language}] ")
    assert inbound(contact, "START").reply.startswith(f"[{language}] ")


def test_keyword_inside_a_sentence_never_withdraws(subscribed, contact, news):
    before = ConsentEvent.objects.count()
    outcome = inbound(contact, "We have got to STOP this bill")
    # Not a keyword and no withdrawal phrase: automation handles it like any message.
    assert outcome.kind == "none"
    assert not outcome.is_keyword
    assert outcome.reply == ""
    assert ConsentEvent.objects.count() == before
    assert not WithdrawalReview.objects.exists()
    assert status(contact, news) == ConsentStatus.GRANTED


@pytest.mark.parametrize("text", ["bitte keine Nachrichten mehr", "please stop texting me"])
def test_free_text_withdrawal_goes_to_review_and_records_nothing(subscribed, contact, news, text):
    before = ConsentEvent.objects.count()
    outcome = inbound(contact, text)
    assert outcome.kind == "review"
    review = outcome.review
    assert review == WithdrawalReview.objects.get()
    assert (review.contact, review.team_id, review.channel) == (contact, contact.team_id, "sms")
    assert review.text == text
    assert review.status == WithdrawalReview.Status.OPEN
    assert review.matched
    assert review.inbound_message_ref.startswith("msg-")
    assert ConsentEvent.objects.count() == before
    assert status(contact, news) == ConsentStatus.GRANTED


@pytest.mark.parametrize("text", ["START", "anmelden", "Unstop"])
def test_start_grants_withdrawn_purposes_again(subscribed, contact, news, offers, text):
    inbound(contact, "STOP")
    outcome = inbound(contact, text)
    assert outcome.kind == "grant"
    assert {purpose.pk for purpose in outcome.purposes} == {news.pk, offers.pk}
    assert status(contact, news) == status(contact, offers) == ConsentStatus.GRANTED
    assert "Kino-News" in outcome.reply
    grants = ConsentEvent.objects.filter(
        action=ConsentAction.GRANTED, source=ConsentSource.KEYWORD
    ).select_related("evidence")
    assert {event.evidence.message_text for event in grants} == {text}


def test_start_with_nothing_withdrawn_grants_nothing(subscribed, contact):
    before = ConsentEvent.objects.count()
    outcome = inbound(contact, "START")
    assert (outcome.kind, outcome.purposes) == ("grant", [])
    assert outcome.reply
    assert ConsentEvent.objects.count() == before


@pytest.mark.parametrize("text", ["HELP", "Hilfe", "info?"])
def test_help_records_nothing(subscribed, contact, text):
    before = ConsentEvent.objects.count()
    outcome = inbound(contact, text)
    assert outcome.kind == "help"
    assert outcome.is_keyword
    assert ConsentEvent.objects.count() == before
    assert not WithdrawalReview.objects.exists()


def test_purpose_keyword_grants_with_the_message_as_evidence(contact, film):
    outcome = consent_inbound_message(
        contact=contact, channel="sms", text="Film", message_ref="wamid.42", occurred_at=NOW
    )
    assert (outcome.kind, outcome.purposes) == ("grant", [film])
    assert "Filmtipps" in outcome.reply
    consent = Consent.objects.get(contact=contact, purpose=film, channel="sms")
    assert consent.status == ConsentStatus.GRANTED
    evidence = consent.last_event.evidence
    assert consent.last_event.source == ConsentSource.KEYWORD
    assert (evidence.inbound_message_ref, evidence.message_text) == ("wamid.42", "Film")


def test_purpose_keyword_on_a_double_opt_in_channel_asks_yes_then_ja_confirms(contact, film):
    outcome = inbound(contact, "FILM", "whatsapp")
    assert (outcome.kind, outcome.purposes) == ("pending", [film])
    # The reply is in the contact's language: German asks for JA, English for YES.
    assert ("JA" if contact.language == "de" else "YES") in outcome.reply
    request = OptInRequest.objects.get(contact=contact, purpose=film, channel="whatsapp")
    assert request.confirmed_event is None
    assert status(contact, film, "whatsapp") == ConsentStatus.PENDING

    confirmed = consent_inbound_message(
        contact=contact,
        channel="whatsapp",
        text="Ja!",
        message_ref="wamid.ja",
        occurred_at=timezone.now(),
    )
    assert (confirmed.kind, confirmed.purposes) == ("confirm", [film])
    request.refresh_from_db()
    assert request.confirmed_event.action == ConsentAction.CONFIRMED
    assert request.confirmed_event.evidence.inbound_message_ref == "wamid.ja"
    assert status(contact, film, "whatsapp") == ConsentStatus.GRANTED


def test_yes_on_another_channel_does_not_confirm(contact, film):
    inbound(contact, "FILM", "whatsapp")
    inbound(contact, "YES", "sms")
    assert status(contact, film, "whatsapp") == ConsentStatus.PENDING
    assert OptInRequest.objects.get().confirmed_event is None


def test_late_older_grant_after_stop_does_not_revive(contact, film):
    inbound(contact, "STOP", occurred_at=NOW)
    outcome = inbound(contact, "FILM", occurred_at=NOW - dt.timedelta(minutes=5))
    assert status(contact, film) == ConsentStatus.WITHDRAWN
    assert ConsentEvent.objects.filter(action=ConsentAction.GRANTED).count() == 1
    # The ledger keeps it, but the contact is not told they are subscribed.
    assert outcome.purposes == []
    assert "Filmtipps" not in outcome.reply


def test_late_older_start_after_stop_does_not_revive(subscribed, contact, news):
    inbound(contact, "STOP", occurred_at=NOW)
    outcome = inbound(contact, "START", occurred_at=NOW - dt.timedelta(minutes=5))
    assert status(contact, news) == ConsentStatus.WITHDRAWN
    assert outcome.purposes == []
