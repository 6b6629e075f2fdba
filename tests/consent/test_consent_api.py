from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentEvent,
    ConsentEvidence,
    ConsentStatus,
    ConsentText,
    OptInRequest,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from consent.services import consent_inbound_message
from crm import roles
from crm.hashing import address_hash
from tests.consent.helpers import grant_consent
from tests.factories import ConsentTextFactory, ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db

PURPOSES = reverse("purpose-list")
TEXTS = reverse("consent-text-list")
CONSENTS = reverse("consent-list")
EVENTS = reverse("consent-event-list")
WITHDRAW = reverse("consent-withdraw")
SUPPRESSIONS = reverse("suppression-list")
REVIEWS = reverse("withdrawal-review-list")


@pytest.fixture
def purpose(team):
    return PurposeFactory(
        team=team,
        key="newsletter",
        name="Newsletter",
        allowed_channels=["email", "sms"],
        double_opt_in_channels=[],
    )


@pytest.fixture
def text(purpose):
    return ConsentTextFactory(purpose=purpose, version=1)


@pytest.fixture
def contact(team):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="email", address="jana@example.de")
    return contact


@pytest.fixture
def foreign_contact(other_team):
    return ContactFactory(team=other_team)


@pytest.fixture
def foreign_purpose(other_team):
    return PurposeFactory(team=other_team, key="angebote", allowed_channels=["email"])


def ids(response) -> list[int]:
    return [row["id"] for row in response.data["results"]]


def ledger_counts() -> tuple[int, int, int, int]:
    return (
        ConsentEvent.objects.count(),
        ConsentEvidence.objects.count(),
        Consent.objects.count(),
        OptInRequest.objects.count(),
    )


def grant_body(contact, purpose, text, overrides: dict | None = None) -> dict:
    body = {
        "contact": contact.pk,
        "purpose": purpose.key,
        "channel": "email",
        "action": "granted",
        "evidence": {
            "consent_text": text.pk,
            "ip_address": "203.0.113.9",
            "user_agent": "Mozilla/5.0",
            "source_url": "https://kino.example/newsletter",
        },
    }
    body.update(overrides or {})
    return body


# --- purposes ---------------------------------------------------------------------------------


def test_marketing_creates_purpose(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        PURPOSES,
        {
            "team": team.pk,
            "key": "filmtipps",
            "name": "Filmtipps",
            "allowed_channels": ["email", "sms", "sms"],
            "double_opt_in_channels": ["email"],
            "opt_in_keywords": ["FILM"],
            "validity_months": 24,
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    purpose = Purpose.objects.get(pk=response.data["id"])
    assert purpose.allowed_channels == ["email", "sms"]
    assert purpose.double_opt_in_channels == ["email"]
    assert purpose.history.first().history_user == marketing
    assert response.data["team_name"] == team.name


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"double_opt_in_channels": ["whatsapp"]}, "double_opt_in_channels"),
        ({"allowed_channels": []}, "allowed_channels"),
        ({"allowed_channels": ["fax"]}, "allowed_channels"),
        ({"opt_in_keywords": ["Stop!"]}, "opt_in_keywords"),
        ({"opt_in_keywords": [" ja "]}, "opt_in_keywords"),
        ({"opt_in_keywords": ["hilfe"]}, "opt_in_keywords"),
        ({"opt_in_keywords": ["kino"]}, "opt_in_keywords"),
        ({"key": "newsletter"}, "key"),
        ({"key": "kein slug"}, "key"),
    ],
)
def test_purpose_create_refuses_bad_input(api_client_for, marketing, team, overrides, field):
    PurposeFactory(team=team, key="newsletter", opt_in_keywords=["KINO"])
    before = Purpose.objects.count()
    body = {"team": team.pk, "key": "filmtipps", "name": "Filmtipps", "allowed_channels": ["sms"]}
    response = api_client_for(marketing).post(PURPOSES, {**body, **overrides}, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert Purpose.objects.count() == before


def test_same_keyword_is_fine_in_another_team(api_client_for, outsider, other_team, team):
    PurposeFactory(team=team, key="newsletter", opt_in_keywords=["KINO"])
    response = api_client_for(outsider).post(
        PURPOSES,
        {
            "team": other_team.pk,
            "key": "kino",
            "name": "Kino",
            "allowed_channels": ["sms"],
            "opt_in_keywords": ["kino"],
        },
        format="json",
    )
    assert response.status_code == 201, response.data


def test_purpose_update_keeps_team_and_key(api_client_for, marketing, purpose, other_team):
    response = api_client_for(marketing).patch(
        reverse("purpose-detail", args=[purpose.pk]),
        {"name": "Kino-News", "key": "renamed", "team": other_team.pk, "validity_months": 12},
        format="json",
    )
    assert response.status_code == 200, response.data
    purpose.refresh_from_db()
    assert (purpose.name, purpose.key, purpose.validity_months) == ("Kino-News", "newsletter", 12)
    assert purpose.team_id != other_team.pk


def test_purpose_update_checks_double_opt_in_against_stored_channels(
    api_client_for, marketing, purpose
):
    response = api_client_for(marketing).patch(
        reverse("purpose-detail", args=[purpose.pk]),
        {"double_opt_in_channels": ["whatsapp"]},
        format="json",
    )
    assert response.status_code == 400
    assert "double_opt_in_channels" in response.data
    purpose.refresh_from_db()
    assert purpose.double_opt_in_channels == []


def test_outsider_gets_404_on_other_teams_purpose(api_client_for, outsider, purpose):
    client = api_client_for(outsider)
    url = reverse("purpose-detail", args=[purpose.pk])
    assert client.get(url).status_code == 404
    assert client.patch(url, {"name": "x"}, format="json").status_code == 404
    assert purpose.pk not in ids(client.get(PURPOSES))
    purpose.refresh_from_db()
    assert purpose.name == "Newsletter"


def test_outsider_cannot_create_purpose_in_other_team(api_client_for, outsider, team):
    response = api_client_for(outsider).post(
        PURPOSES,
        {"team": team.pk, "key": "x", "name": "X", "allowed_channels": ["sms"]},
        format="json",
    )
    assert response.status_code == 400
    assert "team" in response.data
    assert not Purpose.objects.filter(team=team).exists()


def test_agent_may_read_but_not_create_purposes(api_client_for, agent, team, purpose):
    client = api_client_for(agent)
    assert client.get(PURPOSES).status_code == 200
    response = client.post(
        PURPOSES,
        {"team": team.pk, "key": "x", "name": "X", "allowed_channels": ["sms"]},
        format="json",
    )
    assert response.status_code == 403
    assert Purpose.objects.count() == 1


# --- consent texts ----------------------------------------------------------------------------


def test_publishing_numbers_versions_per_language(api_client_for, marketing, purpose):
    client = api_client_for(marketing)
    first = client.post(TEXTS, {"purpose": purpose.pk, "language": "de", "body": "Ja, bitte."})
    second = client.post(TEXTS, {"purpose": purpose.pk, "language": "de", "body": "Ja, gern."})
    english = client.post(TEXTS, {"purpose": purpose.pk, "language": "en", "body": "Yes."})
    assert (first.status_code, second.status_code, english.status_code) == (201, 201, 201)
    assert (first.data["version"], second.data["version"], english.data["version"]) == (1, 2, 1)
    text = ConsentText.objects.get(pk=second.data["id"])
    assert text.created_by == marketing
    assert len(text.content_hash) == 64
    assert text.content_hash != ConsentText.objects.get(pk=first.data["id"]).content_hash


def test_consent_texts_are_never_edited_or_deleted(api_client_for, marketing, text):
    client = api_client_for(marketing)
    url = reverse("consent-text-detail", args=[text.pk])
    assert client.patch(url, {"body": "Anders."}, format="json").status_code == 405
    assert client.put(url, {"body": "Anders."}, format="json").status_code == 405
    assert client.delete(url).status_code == 405
    text.refresh_from_db()
    assert text.body.startswith("Ja, ich möchte")


def test_publishing_the_same_wording_again_is_refused(api_client_for, marketing, purpose, text):
    response = api_client_for(marketing).post(
        TEXTS, {"purpose": purpose.pk, "language": text.language, "body": text.body}
    )
    assert response.status_code == 400
    assert response.data["code"] == "consent_text_invalid"
    assert ConsentText.objects.count() == 1


def test_outsider_cannot_publish_for_other_teams_purpose(api_client_for, outsider, purpose):
    response = api_client_for(outsider).post(
        TEXTS, {"purpose": purpose.pk, "language": "de", "body": "Fremd."}
    )
    assert response.status_code == 400
    assert "purpose" in response.data
    assert not ConsentText.objects.exists()


# --- consent events ---------------------------------------------------------------------------


def test_grant_with_evidence_records_event_and_projection(
    api_client_for, marketing, contact, purpose, text
):
    response = api_client_for(marketing).post(
        EVENTS, grant_body(contact, purpose, text), format="json"
    )
    assert response.status_code == 201, response.data
    event = ConsentEvent.objects.get(pk=response.data["id"])
    assert (event.action, event.source, event.channel) == ("granted", "api", "email")
    assert event.evidence.consent_text == text
    assert event.evidence.ip_address == "203.0.113.9"
    assert event.evidence.actor == marketing
    assert response.data["evidence"]["consent_text_version"] == 1
    assert response.data["hash"] == event.hash
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="email")
    assert consent.status == ConsentStatus.GRANTED


def test_grant_by_purpose_id_with_past_occurred_at(api_client_for, agent, contact, purpose, text):
    moment = timezone.now() - dt.timedelta(days=2)
    body = grant_body(
        contact, purpose, text, {"purpose": purpose.pk, "occurred_at": moment.isoformat()}
    )
    response = api_client_for(agent).post(EVENTS, body, format="json")
    assert response.status_code == 201, response.data
    assert ConsentEvent.objects.get().occurred_at == moment


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("unknown_purpose", "purpose"),
        ("foreign_purpose", "purpose"),
        ("channel_not_allowed", "channel"),
        ("no_evidence", "consent_text"),
        ("no_consent_text", "consent_text"),
        ("text_of_other_purpose", "evidence"),
        ("foreign_contact", "contact"),
        ("unknown_action", "action"),
        ("confirmed_action", "action"),
        ("future", "occurred_at"),
    ],
)
def test_bad_event_is_refused_and_nothing_written(
    api_client_for, marketing, contact, purpose, text, foreign_contact, foreign_purpose, case, field
):
    body = grant_body(contact, purpose, text)
    if case == "unknown_purpose":
        body["purpose"] = "does-not-exist"
    elif case == "foreign_purpose":
        body["purpose"] = foreign_purpose.pk
    elif case == "channel_not_allowed":
        body["channel"] = "whatsapp"
    elif case == "no_evidence":
        del body["evidence"]
    elif case == "no_consent_text":
        del body["evidence"]["consent_text"]
    elif case == "text_of_other_purpose":
        other = PurposeFactory(team=purpose.team, key="other")
        body["evidence"]["consent_text"] = ConsentTextFactory(purpose=other).pk
    elif case == "foreign_contact":
        body["contact"] = foreign_contact.pk
    elif case == "unknown_action":
        body["action"] = "maybe"
    elif case == "confirmed_action":
        body["action"] = "confirmed"
    elif case == "future":
        body["occurred_at"] = (timezone.now() + dt.timedelta(days=1)).isoformat()
    before = ledger_counts()
    response = api_client_for(marketing).post(EVENTS, body, format="json")
    assert response.status_code == 400, response.data
    assert field in response.data
    assert ledger_counts() == before


def test_requested_starts_double_opt_in(api_client_for, marketing, contact, purpose, text):
    body = grant_body(contact, purpose, text, {"action": "requested"})
    response = api_client_for(marketing).post(EVENTS, body, format="json")
    assert response.status_code == 201, response.data
    assert response.data["action"] == "requested"
    request = OptInRequest.objects.get()
    assert request.request_event_id == response.data["id"]
    consent = Consent.objects.get(contact=contact, purpose=purpose)
    assert consent.status == ConsentStatus.PENDING


def test_grant_on_double_opt_in_channel_sends_confirmation_instead(
    api_client_for,
    marketing,
    contact,
    purpose,
    text,
    django_capture_on_commit_callbacks,
    mailoutbox,
):
    purpose.double_opt_in_channels = ["email"]
    purpose.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(marketing).post(
            EVENTS, grant_body(contact, purpose, text), format="json"
        )
    assert response.status_code == 201, response.data
    assert response.data["action"] == "requested"
    assert OptInRequest.objects.count() == 1
    assert Consent.objects.get(contact=contact).status == ConsentStatus.PENDING
    assert [mail.to for mail in mailoutbox] == [["jana@example.de"]]


def test_withdrawal_event_needs_no_consent_text(api_client_for, agent, contact, purpose, text):
    grant_consent(contact, purpose)
    body = {
        "contact": contact.pk,
        "purpose": "newsletter",
        "channel": "email",
        "action": "withdrawn",
        "evidence": {"note": "Anruf an der Kasse"},
    }
    response = api_client_for(agent).post(EVENTS, body, format="json")
    assert response.status_code == 201, response.data
    assert Consent.objects.get(contact=contact).status == ConsentStatus.WITHDRAWN


def test_events_cannot_be_changed_or_deleted(api_client_for, superuser, contact, purpose, text):
    event = grant_consent(contact, purpose)
    url = reverse("consent-event-detail", args=[event.pk])
    client = api_client_for(superuser)
    assert client.patch(url, {"action": "withdrawn"}, format="json").status_code == 405
    assert client.put(url, {"action": "withdrawn"}, format="json").status_code == 405
    assert client.delete(url).status_code == 405
    assert ConsentEvent.objects.get(pk=event.pk).action == "granted"


def test_event_list_is_newest_first_with_cursor_and_flat_queries(
    api_client_for, marketing, team, purpose, text, django_assert_max_num_queries
):
    events = [grant_consent(ContactFactory(team=team), purpose) for _ in range(5)]
    client = api_client_for(marketing)
    with django_assert_max_num_queries(6):
        response = client.get(EVENTS, {"page_size": 3})
    assert response.status_code == 200
    assert ids(response) == [event.pk for event in reversed(events)][:3]
    assert response.data["results"][0]["evidence"]["user_agent"] == "Firefox"
    following = client.get(response.data["next"])
    assert ids(following) == [events[1].pk, events[0].pk]


def test_event_list_filters_and_scopes(
    api_client_for, marketing, outsider, contact, purpose, foreign_contact, foreign_purpose
):
    own = grant_consent(contact, purpose)
    foreign = grant_consent(foreign_contact, foreign_purpose)
    client = api_client_for(marketing)
    assert ids(client.get(EVENTS)) == [own.pk]
    assert ids(client.get(EVENTS, {"contact": contact.pk, "action": "granted"})) == [own.pk]
    assert ids(client.get(EVENTS, {"action": "withdrawn"})) == []
    assert client.get(reverse("consent-event-detail", args=[foreign.pk])).status_code == 404
    assert ids(api_client_for(outsider).get(EVENTS)) == [foreign.pk]


# --- consents ---------------------------------------------------------------------------------


def test_consent_list_filters(api_client_for, agent, team, contact, purpose):
    grant_consent(contact, purpose)
    grant_consent(contact, purpose, "sms")
    other = ContactFactory(team=team)
    grant_consent(other, purpose)
    client = api_client_for(agent)
    by_contact = client.get(CONSENTS, {"contact": contact.pk})
    assert len(by_contact.data["results"]) == 2
    sms = client.get(CONSENTS, {"channel": "sms", "purpose": purpose.pk, "status": "granted"})
    assert [row["contact"] for row in sms.data["results"]] == [contact.pk]
    assert sms.data["results"][0]["is_granted"] is True
    assert client.get(CONSENTS, {"status": "withdrawn"}).data["results"] == []


def test_withdraw_action_withdraws_at_once(api_client_for, agent, contact, purpose):
    grant_consent(contact, purpose)
    response = api_client_for(agent).post(
        WITHDRAW,
        {"contact": contact.pk, "purpose": "newsletter", "channel": "email", "note": "per Mail"},
        format="json",
    )
    assert response.status_code == 200, response.data
    assert response.data["status"] == "withdrawn"
    assert response.data["is_granted"] is False
    event = ConsentEvent.objects.latest("sequence")
    assert (event.action, event.source, event.evidence.note) == ("withdrawn", "api", "per Mail")


def test_withdraw_for_other_teams_contact_changes_nothing(
    api_client_for, outsider, contact, purpose
):
    grant_consent(contact, purpose)
    before = ledger_counts()
    response = api_client_for(outsider).post(
        WITHDRAW, {"contact": contact.pk, "purpose": "newsletter", "channel": "email"}
    )
    assert response.status_code == 400
    assert ledger_counts() == before
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_consents_events_alias_records_like_consent_events(
    api_client_for, marketing, contact, purpose, text
):
    response = api_client_for(marketing).post(
        reverse("consent-events"), grant_body(contact, purpose, text), format="json"
    )
    assert response.status_code == 201, response.data
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_outsider_gets_404_on_other_teams_consent(api_client_for, outsider, contact, purpose):
    grant_consent(contact, purpose)
    consent = Consent.objects.get()
    client = api_client_for(outsider)
    assert client.get(reverse("consent-detail", args=[consent.pk])).status_code == 404
    assert ids(client.get(CONSENTS)) == []


# --- suppressions -----------------------------------------------------------------------------


def test_suppression_stores_and_returns_only_the_hash(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        SUPPRESSIONS,
        {"address": "  Jana@Example.DE ", "channel": "email", "note": "Beschwerde"},
        format="json",
    )
    assert response.status_code == 201, response.data
    assert "address" not in response.data
    assert "jana@example.de" not in str(response.data).lower()
    entry = Suppression.objects.get()
    assert entry.address_hash == address_hash("jana@example.de")
    assert entry.team == team
    assert "jana" not in " ".join(str(value) for value in vars(entry).values()).lower()
    listed = api_client_for(marketing).get(SUPPRESSIONS)
    assert ids(listed) == [entry.pk]
    assert "jana" not in str(listed.data).lower()


def test_suppression_normalises_phone_numbers(api_client_for, marketing):
    response = api_client_for(marketing).post(
        SUPPRESSIONS, {"address": "0171 2345678", "channel": "sms"}, format="json"
    )
    assert response.status_code == 201, response.data
    assert Suppression.objects.get().address_hash == address_hash("+491712345678")


def test_invalid_suppression_address_writes_nothing(api_client_for, marketing):
    response = api_client_for(marketing).post(
        SUPPRESSIONS, {"address": "not-an-address", "channel": "email"}, format="json"
    )
    assert response.status_code == 400
    assert "address" in response.data
    assert not Suppression.objects.exists()


def test_suppression_needs_a_team_when_user_has_several(
    api_client_for, make_user, team, other_team
):
    user = make_user("two-teams", roles.MARKETING, team)
    from crm.services import team_member_add

    team_member_add(team=other_team, user=user)
    client = api_client_for(user)
    response = client.post(SUPPRESSIONS, {"address": "a@example.de", "channel": "email"})
    assert response.status_code == 400
    assert "team" in response.data
    response = client.post(
        SUPPRESSIONS, {"address": "a@example.de", "channel": "email", "team": other_team.pk}
    )
    assert response.status_code == 201
    assert Suppression.objects.get().team == other_team


def test_suppression_list_hides_other_teams_entries(api_client_for, marketing, outsider):
    api_client_for(outsider).post(SUPPRESSIONS, {"address": "x@example.de", "channel": "email"})
    assert Suppression.objects.count() == 1
    assert ids(api_client_for(marketing).get(SUPPRESSIONS)) == []


# --- withdrawal reviews -----------------------------------------------------------------------


@pytest.fixture
def review(contact, purpose):
    grant_consent(contact, purpose)
    outcome = consent_inbound_message(
        contact=contact,
        channel="email",
        text="Bitte keine Nachrichten mehr!",
        message_ref="in-1",
        occurred_at=timezone.now(),
    )
    assert outcome.kind == "review"
    return outcome.review


def test_confirming_a_review_records_the_withdrawal(api_client_for, agent, review, contact):
    response = api_client_for(agent).post(
        reverse("withdrawal-review-confirm", args=[review.pk]),
        {"note": "Eindeutig eine Abmeldung"},
        format="json",
    )
    assert response.status_code == 200, response.data
    assert response.data["status"] == "withdrawn"
    assert response.data["decided_by"] == "agent"
    consent = Consent.objects.get(contact=contact)
    assert consent.status == ConsentStatus.WITHDRAWN
    event = consent.last_event
    assert (event.source, event.evidence.note) == ("agent", "Eindeutig eine Abmeldung")
    assert event.evidence.message_text == "Bitte keine Nachrichten mehr!"
    assert event.occurred_at == review.created_at


def test_confirming_without_note_changes_nothing(api_client_for, agent, review):
    before = ledger_counts()
    response = api_client_for(agent).post(
        reverse("withdrawal-review-confirm", args=[review.pk]), {"note": "  "}, format="json"
    )
    assert response.status_code == 400
    assert "note" in response.data
    assert ledger_counts() == before
    review.refresh_from_db()
    assert review.status == WithdrawalReview.Status.OPEN


def test_confirming_with_a_chosen_purpose(api_client_for, agent, review, contact, purpose, team):
    second = PurposeFactory(team=team, key="angebote", allowed_channels=["email"])
    grant_consent(contact, second, occurred_at=review.created_at - dt.timedelta(minutes=1))
    response = api_client_for(agent).post(
        reverse("withdrawal-review-confirm", args=[review.pk]),
        {"note": "nur Angebote", "purposes": ["angebote"]},
        format="json",
    )
    assert response.status_code == 200, response.data
    assert Consent.objects.get(contact=contact, purpose=second).status == "withdrawn"
    assert Consent.objects.get(contact=contact, purpose=purpose).status == "granted"


def test_review_is_decided_once(api_client_for, agent, review):
    client = api_client_for(agent)
    assert client.post(reverse("withdrawal-review-dismiss", args=[review.pk])).status_code == 200
    before = ledger_counts()
    response = client.post(
        reverse("withdrawal-review-confirm", args=[review.pk]), {"note": "doch"}, format="json"
    )
    assert response.status_code == 409
    assert ledger_counts() == before
    review.refresh_from_db()
    assert review.status == WithdrawalReview.Status.DISMISSED


def test_outsider_gets_404_on_other_teams_review(api_client_for, outsider, review):
    client = api_client_for(outsider)
    assert client.get(reverse("withdrawal-review-detail", args=[review.pk])).status_code == 404
    response = client.post(reverse("withdrawal-review-dismiss", args=[review.pk]))
    assert response.status_code == 404
    review.refresh_from_db()
    assert review.status == WithdrawalReview.Status.OPEN


# --- auditor ----------------------------------------------------------------------------------


def test_auditor_reads_every_team(
    api_client_for, auditor, contact, purpose, text, foreign_contact, foreign_purpose, review
):
    grant_consent(foreign_contact, foreign_purpose)
    client = api_client_for(auditor)
    assert set(ids(client.get(PURPOSES))) == {purpose.pk, foreign_purpose.pk}
    assert len(ids(client.get(EVENTS))) == 2
    assert len(ids(client.get(CONSENTS))) == 2
    assert ids(client.get(REVIEWS)) == [review.pk]
    assert client.get(TEXTS).status_code == 200
    assert client.get(SUPPRESSIONS).status_code == 200


def test_auditor_writes_nothing(api_client_for, auditor, team, contact, purpose, text, review):
    client = api_client_for(auditor)
    before = (
        ledger_counts(),
        Purpose.objects.count(),
        ConsentText.objects.count(),
        Suppression.objects.count(),
    )
    attempts = [
        client.post(
            PURPOSES,
            {"team": team.pk, "key": "x", "name": "X", "allowed_channels": ["sms"]},
            format="json",
        ),
        client.patch(reverse("purpose-detail", args=[purpose.pk]), {"name": "Y"}, format="json"),
        client.post(TEXTS, {"purpose": purpose.pk, "language": "de", "body": "Neu."}),
        client.post(EVENTS, grant_body(contact, purpose, text), format="json"),
        client.post(reverse("consent-events"), grant_body(contact, purpose, text), format="json"),
        client.post(WITHDRAW, {"contact": contact.pk, "purpose": purpose.pk, "channel": "email"}),
        client.post(SUPPRESSIONS, {"address": "a@example.de", "channel": "email"}),
        client.post(reverse("withdrawal-review-confirm", args=[review.pk]), {"note": "x"}),
        client.post(reverse("withdrawal-review-dismiss", args=[review.pk])),
    ]
    assert [response.status_code for response in attempts] == [403] * len(attempts)
    after = (
        ledger_counts(),
        Purpose.objects.count(),
        ConsentText.objects.count(),
        Suppression.objects.count(),
    )
    assert after == before
    purpose.refresh_from_db()
    review.refresh_from_db()
    assert purpose.name == "Newsletter"
    assert review.status == WithdrawalReview.Status.OPEN


def test_anonymous_is_refused(api_client_for):
    assert api_client_for(None).get(EVENTS).status_code in (401, 403)


# --- the services behind the endpoints ----------------------------------------------------------


def test_services_check_role_and_team(outsider, agent, team, purpose, review):
    from consent.services import (
        consent_text_publish,
        purpose_create,
        purpose_update,
        suppression_add_manual,
        withdrawal_review_dismiss,
    )
    from crm.errors import PermissionRefused

    texts = ConsentText.objects.count()
    with pytest.raises(PermissionRefused):
        purpose_create(team=team, key="x", name="X", allowed_channels=["sms"], actor=outsider)
    with pytest.raises(PermissionRefused):
        purpose_update(purpose=purpose, name="Y", actor=outsider)
    with pytest.raises(PermissionRefused):
        consent_text_publish(purpose=purpose, language="de", body="Neu.", actor=agent)
    with pytest.raises(PermissionRefused):
        suppression_add_manual(team=team, channel="email", address="a@example.de", actor=outsider)
    with pytest.raises(PermissionRefused):
        withdrawal_review_dismiss(review=review, actor=outsider)
    assert Purpose.objects.count() == 1
    assert ConsentText.objects.count() == texts
    assert not Suppression.objects.exists()
    review.refresh_from_db()
    assert review.status == WithdrawalReview.Status.OPEN


def test_purpose_update_refuses_key_and_team(marketing, purpose):
    from consent.services import PurposeInvalid, purpose_update

    with pytest.raises(PurposeInvalid) as error:
        purpose_update(purpose=purpose, key="anders", actor=marketing)
    assert error.value.field == "key"
    purpose.refresh_from_db()
    assert purpose.key == "newsletter"


def test_review_confirm_refuses_purposes_of_another_team(marketing, review, foreign_purpose):
    from consent.services import ReviewInvalid, withdrawal_review_confirm

    before = ledger_counts()
    with pytest.raises(ReviewInvalid):
        withdrawal_review_confirm(review=review, actor=None, note="x", purposes=[foreign_purpose])
    assert ledger_counts() == before
