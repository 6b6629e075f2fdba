from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
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
from consent.services import consent_inbound_message, suppression_add
from crm.hashing import address_hash
from tests.consent.helpers import grant_consent
from tests.factories import ConsentTextFactory, ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def purpose(team):
    return PurposeFactory(
        team=team, key="newsletter", name="Newsletter", allowed_channels=["email"]
    )


@pytest.fixture
def contact(team):
    contact = ContactFactory(team=team, first_name="Jana", last_name="Schmidt")
    ContactPointFactory(contact=contact, channel="email", address="jana@example.de")
    return contact


@pytest.fixture
def granted(contact, purpose):
    return grant_consent(contact, purpose)


@pytest.fixture
def foreign(other_team):
    """One object of every consent admin in the other team."""
    contact = ContactFactory(team=other_team)
    purpose = PurposeFactory(team=other_team, key="angebote", allowed_channels=["email"])
    text = ConsentTextFactory(purpose=purpose)
    event = grant_consent(contact, purpose)
    review = consent_inbound_message(
        contact=contact,
        channel="email",
        text="please stop texting me",
        message_ref="x-1",
        occurred_at=timezone.now(),
    ).review
    entry = suppression_add(address="fremd@example.de", channel="email", team=other_team)
    return {
        "contact": contact,
        "purpose": purpose,
        "consenttext": text,
        "consentevent": event,
        "consent": Consent.objects.get(contact=contact),
        "withdrawalreview": review,
        "suppression": entry,
    }


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def panel(contact) -> str:
    return reverse("admin:consent_consent_contact", args=[contact.pk])


def ledger_counts() -> tuple[int, int, int, int]:
    return (
        ConsentEvent.objects.count(),
        ConsentEvidence.objects.count(),
        Consent.objects.count(),
        OptInRequest.objects.count(),
    )


# --- the per-contact panel --------------------------------------------------------------------


def test_panel_shows_status_grid_and_timeline_with_evidence(agent, contact, purpose, granted):
    response = client_for(agent).get(panel(contact))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Newsletter" in html
    assert 'class="granted"' in html
    assert "203.0.113.7" in html
    assert "Firefox" in html
    assert f"version {granted.evidence.consent_text.version}" in html
    assert response.context["form"] is not None


def test_panel_of_other_teams_contact_is_404(outsider, contact, granted):
    client = client_for(outsider)
    assert client.get(panel(contact)).status_code == 404
    response = client.post(
        panel(contact), {"purpose": granted.purpose_id, "channel": "email", "action": "withdrawn"}
    )
    assert response.status_code == 404
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_auditor_sees_panel_but_cannot_record(auditor, contact, purpose, granted):
    client = client_for(auditor)
    response = client.get(panel(contact))
    assert response.status_code == 200
    assert response.context["form"] is None
    before = ledger_counts()
    response = client.post(
        panel(contact),
        {"purpose": purpose.pk, "channel": "email", "action": "withdrawn", "note": "x"},
    )
    assert response.status_code == 403
    assert ledger_counts() == before


def test_agent_records_withdrawal_with_note(agent, contact, purpose, granted):
    response = client_for(agent).post(
        panel(contact),
        {
            "purpose": purpose.pk,
            "channel": "email",
            "action": "withdrawn",
            "note": "Anruf 14:05, keine Mails mehr",
        },
    )
    assert response.status_code == 302
    assert response.url == panel(contact)
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="email")
    assert consent.status == ConsentStatus.WITHDRAWN
    event = consent.last_event
    assert (event.source, event.action) == ("agent", "withdrawn")
    assert event.evidence.note == "Anruf 14:05, keine Mails mehr"
    assert event.evidence.actor == agent


@pytest.mark.parametrize("note", ["", "   "])
def test_recording_without_note_shows_error_and_writes_nothing(
    agent, contact, purpose, granted, note
):
    before = ledger_counts()
    response = client_for(agent).post(
        panel(contact),
        {"purpose": purpose.pk, "channel": "email", "action": "withdrawn", "note": note},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["note"]
    assert ledger_counts() == before
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_recording_on_a_channel_the_purpose_does_not_allow_writes_nothing(agent, contact, purpose):
    before = ledger_counts()
    response = client_for(agent).post(
        panel(contact),
        {"purpose": purpose.pk, "channel": "sms", "action": "granted", "note": "am Telefon"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["channel"]
    assert ledger_counts() == before


def test_recording_for_a_purpose_of_another_team_is_refused(agent, contact, foreign):
    before = ledger_counts()
    response = client_for(agent).post(
        panel(contact),
        {
            "purpose": foreign["purpose"].pk,
            "channel": "email",
            "action": "granted",
            "note": "am Telefon",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["purpose"]
    assert ledger_counts() == before


def test_agent_grant_on_double_opt_in_channel_asks_for_confirmation(agent, contact, purpose):
    purpose.double_opt_in_channels = ["email"]
    purpose.save()
    response = client_for(agent).post(
        panel(contact),
        {"purpose": purpose.pk, "channel": "email", "action": "granted", "note": "am Telefon"},
    )
    assert response.status_code == 302
    assert OptInRequest.objects.filter(contact=contact).count() == 1
    assert Consent.objects.get(contact=contact).status == ConsentStatus.PENDING


def test_consent_changelist_links_rows_to_the_panel(marketing, contact, granted):
    response = client_for(marketing).get(reverse("admin:consent_consent_changelist"))
    assert response.status_code == 200
    assert panel(contact) in response.content.decode()


def test_consent_changelist_filters(marketing, contact, purpose, granted):
    client = client_for(marketing)
    url = reverse("admin:consent_consent_changelist")
    for query in ({"status": "granted"}, {"channel": "email"}, {"purpose": purpose.pk}):
        response = client.get(url, query)
        assert response.status_code == 200
        assert panel(contact) in response.content.decode()
    assert panel(contact) not in client.get(url, {"status": "withdrawn"}).content.decode()


# --- scope: other teams' objects are 404 --------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["purpose", "consenttext", "consent", "consentevent", "withdrawalreview", "suppression"],
)
def test_outsider_gets_404_on_other_teams_change_pages(marketing, foreign, model):
    url = reverse(f"admin:consent_{model}_change", args=[foreign[model].pk])
    assert client_for(marketing).get(url).status_code == 404


def test_changelists_show_only_own_team(marketing, granted, foreign):
    client = client_for(marketing)
    response = client.get(reverse("admin:consent_consentevent_changelist"))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [granted]
    response = client.get(reverse("admin:consent_purpose_changelist"))
    assert foreign["purpose"] not in list(response.context["cl"].result_list)


def test_auditor_sees_every_team(auditor, granted, foreign):
    client = client_for(auditor)
    response = client.get(reverse("admin:consent_consentevent_changelist"))
    assert set(response.context["cl"].result_list) == {granted, foreign["consentevent"]}
    for model in ("purpose", "consenttext", "consent", "consentevent", "withdrawalreview"):
        url = reverse(f"admin:consent_{model}_change", args=[foreign[model].pk])
        assert client.get(url).status_code == 200, model


# --- the ledger is read-only --------------------------------------------------------------------


def test_ledger_admin_has_no_add_change_or_delete(superuser, granted):
    client = client_for(superuser)
    change = reverse("admin:consent_consentevent_change", args=[granted.pk])
    assert client.get(reverse("admin:consent_consentevent_add")).status_code == 403
    assert client.post(change, {"action": "withdrawn", "channel": "sms"}).status_code == 403
    delete = reverse("admin:consent_consentevent_delete", args=[granted.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    response = client.get(reverse("admin:consent_consentevent_changelist"))
    assert "delete_selected" not in response.content.decode()
    response = client.post(
        reverse("admin:consent_consentevent_changelist"),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [granted.pk], "post": "yes"},
    )
    event = ConsentEvent.objects.get(pk=granted.pk)
    assert (event.action, event.channel, event.hash) == ("granted", "email", granted.hash)


def test_ledger_detail_shows_evidence(marketing, granted):
    url = reverse("admin:consent_consentevent_change", args=[granted.pk])
    response = client_for(marketing).get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "203.0.113.7" in html
    assert granted.hash in html


def test_consent_projection_admin_is_read_only(superuser, granted):
    consent = Consent.objects.get()
    url = reverse("admin:consent_consent_change", args=[consent.pk])
    assert client_for(superuser).post(url, {"status": "withdrawn"}).status_code == 403
    assert Consent.objects.get().status == ConsentStatus.GRANTED


# --- purposes and texts -------------------------------------------------------------------------


def purpose_form(team, **overrides) -> dict:
    data = {
        "team": team.pk,
        "key": "filmtipps",
        "name": "Filmtipps",
        "description": "",
        "legal_basis": "consent",
        "is_marketing": "on",
        "allowed_channels": ["email", "sms"],
        "double_opt_in_channels": ["email"],
        "reconfirm_days_before": 30,
        "frequency_period_hours": 24,
        "opt_in_keywords": "FILM, Kino",
        "is_active": "on",
    }
    data.update(overrides)
    return data


def test_marketing_adds_purpose_through_the_service(marketing, team):
    response = client_for(marketing).post(reverse("admin:consent_purpose_add"), purpose_form(team))
    assert response.status_code == 302, response.context["adminform"].form.errors
    purpose = Purpose.objects.get(key="filmtipps")
    assert purpose.opt_in_keywords == ["FILM", "Kino"]
    assert purpose.double_opt_in_channels == ["email"]
    assert purpose.history.first().history_user == marketing


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"double_opt_in_channels": ["whatsapp"]}, "double_opt_in_channels"),
        ({"opt_in_keywords": "STOPP"}, "opt_in_keywords"),
    ],
)
def test_purpose_admin_shows_errors_in_place(marketing, team, overrides, field):
    response = client_for(marketing).post(
        reverse("admin:consent_purpose_add"), purpose_form(team, **overrides)
    )
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Purpose.objects.exists()


def test_purpose_change_keeps_key(marketing, purpose):
    url = reverse("admin:consent_purpose_change", args=[purpose.pk])
    data = purpose_form(purpose.team, key="anders", name="Kino-News")
    data["allowed_channels"] = ["email"]
    data["double_opt_in_channels"] = []
    response = client_for(marketing).post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    purpose.refresh_from_db()
    assert (purpose.key, purpose.name) == ("newsletter", "Kino-News")


def test_adding_a_consent_text_publishes_the_next_version(marketing, purpose):
    ConsentTextFactory(purpose=purpose, version=1, language="de")
    response = client_for(marketing).post(
        reverse("admin:consent_consenttext_add"),
        {"purpose": purpose.pk, "language": "de", "body": "Neue Fassung."},
    )
    assert response.status_code == 302
    text = ConsentText.objects.get(body="Neue Fassung.")
    assert (text.version, text.created_by) == (2, marketing)


def test_consent_texts_are_never_changed_in_admin(superuser, purpose):
    text = ConsentTextFactory(purpose=purpose)
    url = reverse("admin:consent_consenttext_change", args=[text.pk])
    client = client_for(superuser)
    assert client.post(url, {"body": "Anders."}).status_code == 403
    delete = reverse("admin:consent_consenttext_delete", args=[text.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    text.refresh_from_db()
    assert text.body != "Anders."


def test_consent_text_for_other_teams_purpose_cannot_be_added(outsider, purpose):
    response = client_for(outsider).post(
        reverse("admin:consent_consenttext_add"),
        {"purpose": purpose.pk, "language": "de", "body": "Fremd."},
    )
    assert response.status_code == 200
    assert "purpose" in response.context["adminform"].form.errors
    assert not ConsentText.objects.exists()


# --- suppression list ---------------------------------------------------------------------------


def test_suppression_admin_stores_and_shows_only_hashes(marketing, team):
    client = client_for(marketing)
    response = client.post(
        reverse("admin:consent_suppression_add"),
        {"team": team.pk, "channel": "email", "address": "Geheim@Example.de", "reason": "manual"},
    )
    assert response.status_code == 302
    entry = Suppression.objects.get()
    assert entry.address_hash == address_hash("geheim@example.de")
    changelist = client.get(reverse("admin:consent_suppression_changelist"))
    change = client.get(reverse("admin:consent_suppression_change", args=[entry.pk]))
    history = client.get(reverse("admin:consent_suppression_history", args=[entry.pk]))
    for page in (changelist, change, history):
        assert page.status_code == 200
        assert "geheim" not in page.content.decode().lower()


def test_suppression_admin_search_by_address(marketing, team):
    entry = suppression_add(address="+491711234567", channel="sms", team=team)
    response = client_for(marketing).get(
        reverse("admin:consent_suppression_changelist"), {"q": "0171 1234567"}
    )
    assert list(response.context["cl"].result_list) == [entry]


def test_suppression_admin_refuses_invalid_address(marketing, team):
    response = client_for(marketing).post(
        reverse("admin:consent_suppression_add"),
        {"team": team.pk, "channel": "sms", "address": "abc", "reason": "manual"},
    )
    assert response.status_code == 200
    assert "address" in response.context["adminform"].form.errors
    assert not Suppression.objects.exists()


def test_suppressions_are_never_changed_or_lifted(superuser, team):
    entry = suppression_add(address="a@example.de", channel="email", team=team)
    client = client_for(superuser)
    url = reverse("admin:consent_suppression_change", args=[entry.pk])
    assert client.post(url, {"channel": "sms"}).status_code == 403
    delete = reverse("admin:consent_suppression_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Suppression.objects.get().channel == "email"


# --- review queue -------------------------------------------------------------------------------


@pytest.fixture
def reviews(contact, purpose, granted):
    def review(text: str) -> WithdrawalReview:
        return consent_inbound_message(
            contact=contact,
            channel="email",
            text=text,
            message_ref=text[:10],
            occurred_at=timezone.now(),
        ).review

    first = review("Bitte keine Nachrichten mehr")
    second = review("Please stop emailing me")
    first.status = WithdrawalReview.Status.DISMISSED
    first.save()
    return first, second


def test_review_queue_lists_open_entries_first(marketing, reviews):
    response = client_for(marketing).get(reverse("admin:consent_withdrawalreview_changelist"))
    assert list(response.context["cl"].result_list) == [reviews[1], reviews[0]]


def test_confirm_action_asks_for_a_note_then_records(agent, contact, purpose, reviews):
    review = reviews[1]
    url = reverse("admin:consent_withdrawalreview_changelist")
    client = client_for(agent)
    selection = {"action": "confirm_withdrawal", ACTION_CHECKBOX_NAME: [review.pk]}
    page = client.post(url, selection)
    assert page.status_code == 200
    assert "note" in page.context["form"].fields
    before = ledger_counts()
    missing = client.post(url, {**selection, "apply": "1", "note": " "})
    assert missing.status_code == 200
    assert missing.context["form"].errors["note"]
    assert ledger_counts() == before
    done = client.post(url, {**selection, "apply": "1", "note": "eindeutig"})
    assert done.status_code == 302
    review.refresh_from_db()
    assert (review.status, review.decided_by) == (WithdrawalReview.Status.WITHDRAWN, agent)
    consent = Consent.objects.get(contact=contact, purpose=purpose)
    assert consent.status == ConsentStatus.WITHDRAWN
    assert consent.last_event.evidence.note == "eindeutig"


def test_dismiss_action_closes_without_touching_consent(agent, contact, reviews):
    review = reviews[1]
    url = reverse("admin:consent_withdrawalreview_changelist")
    selection = {"action": "dismiss", ACTION_CHECKBOX_NAME: [review.pk]}
    client = client_for(agent)
    assert client.post(url, selection).status_code == 200
    before = ledger_counts()
    assert client.post(url, {**selection, "apply": "1"}).status_code == 302
    review.refresh_from_db()
    assert review.status == WithdrawalReview.Status.DISMISSED
    assert ledger_counts() == before
    assert Consent.objects.get(contact=contact).status == ConsentStatus.GRANTED


def test_deciding_an_already_decided_entry_changes_nothing(agent, reviews):
    url = reverse("admin:consent_withdrawalreview_changelist")
    before = ledger_counts()
    response = client_for(agent).post(
        url,
        {
            "action": "confirm_withdrawal",
            ACTION_CHECKBOX_NAME: [reviews[0].pk, reviews[1].pk],
            "apply": "1",
            "note": "beide",
        },
        follow=True,
    )
    assert "already decided" in response.content.decode()
    assert ledger_counts() == before
    reviews[1].refresh_from_db()
    assert reviews[1].status == WithdrawalReview.Status.OPEN


def test_auditor_cannot_decide_reviews(auditor, reviews):
    url = reverse("admin:consent_withdrawalreview_changelist")
    client = client_for(auditor)
    response = client.get(url)
    assert response.status_code == 200
    assert "confirm_withdrawal" not in response.content.decode()
    client.post(
        url,
        {
            "action": "confirm_withdrawal",
            ACTION_CHECKBOX_NAME: [reviews[1].pk],
            "apply": "1",
            "note": "x",
        },
    )
    reviews[1].refresh_from_db()
    assert reviews[1].status == WithdrawalReview.Status.OPEN
