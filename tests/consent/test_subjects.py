"""Data-subject request cases: opening, identity, execution per kind, refusals."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    DataSubjectRequest,
)
from consent.services import (
    ConsentInvalid,
    Evidence,
    IdentityNotVerified,
    SubjectRequestClosed,
    SubjectRequestInvalid,
    consent_record,
    contact_access_export,
    contact_object,
    contact_restriction_lift,
    dsr_execute,
    dsr_open,
    dsr_reject,
    dsr_verify_identity,
)
from consent.services import subjects as subjects_module
from consent.services.subjects import add_months
from crm import services as crm_services
from crm.errors import PermissionRefused
from tests.consent.helpers import grant_consent
from tests.factories import PurposeFactory

pytestmark = pytest.mark.django_db

Kind = DataSubjectRequest.Kind
Status = DataSubjectRequest.Status


@pytest.fixture
def contact(team, marketing):
    return crm_services.contact_create(
        team=team,
        actor=marketing,
        first_name="Hanna",
        last_name="Beispiel",
        points=[("email", "hanna@example.org"), ("sms", "+4915112345678")],
    )


@pytest.fixture
def newsletter(team):
    return PurposeFactory(team=team, key="newsletter", allowed_channels=["email", "sms"])


@pytest.fixture
def service_info(team):
    return PurposeFactory(
        team=team, key="service", is_marketing=False, allowed_channels=["email", "sms"]
    )


def open_verified(contact, kind, actor):
    return dsr_open(contact=contact, kind=kind, actor=actor, identity_method="reply from e-mail")


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (dt.datetime(2025, 1, 15, 9, tzinfo=dt.UTC), dt.datetime(2025, 2, 15, 9, tzinfo=dt.UTC)),
        (dt.datetime(2025, 1, 31, 9, tzinfo=dt.UTC), dt.datetime(2025, 2, 28, 9, tzinfo=dt.UTC)),
        (dt.datetime(2024, 1, 31, 9, tzinfo=dt.UTC), dt.datetime(2024, 2, 29, 9, tzinfo=dt.UTC)),
        (dt.datetime(2025, 12, 10, 9, tzinfo=dt.UTC), dt.datetime(2026, 1, 10, 9, tzinfo=dt.UTC)),
    ],
)
def test_a_case_is_due_one_month_after_receipt(contact, marketing, received, due):
    assert add_months(received, 1) == due
    case = dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing, received_at=received)
    assert (case.received_at, case.due_at) == (received, due)
    assert case.team_id == contact.team_id
    assert case.status == Status.OPEN
    assert not case.identity_verified
    assert case.is_overdue


def test_identity_given_on_intake_counts_as_verified(contact, marketing):
    case = dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing, identity_method="  ID ")
    assert case.identity_verified
    assert case.identity_method == "ID"
    assert not case.is_overdue


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "forget_me"}, "kind"),
        (
            {"kind": Kind.ERASURE, "received_at": timezone.now() + dt.timedelta(days=1)},
            "received_at",
        ),
    ],
)
def test_bad_input_opens_no_case(contact, marketing, kwargs, field):
    with pytest.raises(SubjectRequestInvalid) as caught:
        dsr_open(contact=contact, actor=marketing, **kwargs)
    assert caught.value.field == field
    assert not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize("persona", ["outsider", "auditor", "agent", "editor"])
def test_only_team_members_with_the_role_open_cases(request, contact, persona):
    with pytest.raises(PermissionRefused):
        dsr_open(contact=contact, kind=Kind.ACCESS, actor=request.getfixturevalue(persona))
    assert not DataSubjectRequest.objects.exists()


def test_execute_needs_a_verified_identity(contact, marketing):
    case = dsr_open(contact=contact, kind=Kind.ERASURE, actor=marketing)
    with pytest.raises(IdentityNotVerified):
        dsr_execute(request=case, actor=marketing)
    case.refresh_from_db()
    contact.refresh_from_db()
    assert case.status == Status.OPEN
    assert contact.erased_at is None

    with pytest.raises(SubjectRequestInvalid):
        dsr_verify_identity(request=case, actor=marketing, method="   ")
    case = dsr_verify_identity(request=case, actor=marketing, method="called back on file number")
    case = dsr_execute(request=case, actor=marketing)
    assert case.status == Status.COMPLETED
    assert case.handled_by == marketing
    assert case.handled_by_label == "marketing"
    assert case.completed_at is not None
    assert "pseudonymised" in case.outcome


def test_a_closed_case_cannot_be_executed_or_rejected_again(contact, marketing):
    case = open_verified(contact, Kind.RESTRICTION, marketing)
    dsr_execute(request=case, actor=marketing)
    for call in (
        lambda: dsr_execute(request=case, actor=marketing),
        lambda: dsr_reject(request=case, actor=marketing, reason="late"),
        lambda: dsr_verify_identity(request=case, actor=marketing, method="again"),
    ):
        with pytest.raises(SubjectRequestClosed):
            call()


def test_reject_needs_a_reason_and_closes_the_case(contact, marketing):
    case = dsr_open(contact=contact, kind=Kind.ERASURE, actor=marketing)
    with pytest.raises(SubjectRequestInvalid):
        dsr_reject(request=case, actor=marketing, reason=" ")
    assert DataSubjectRequest.objects.get().status == Status.OPEN
    case = dsr_reject(request=case, actor=marketing, reason="Identity could not be verified.")
    assert case.status == Status.REJECTED
    assert case.outcome == "Identity could not be verified."
    contact.refresh_from_db()
    assert contact.erased_at is None


@pytest.mark.parametrize("persona", ["outsider", "auditor", "agent"])
def test_others_cannot_handle_a_case(request, contact, marketing, persona):
    case = dsr_open(contact=contact, kind=Kind.ERASURE, actor=marketing)
    actor = request.getfixturevalue(persona)
    for call in (
        lambda: dsr_verify_identity(request=case, actor=actor, method="x"),
        lambda: dsr_execute(request=case, actor=actor),
        lambda: dsr_reject(request=case, actor=actor, reason="x"),
    ):
        with pytest.raises(PermissionRefused):
            call()
    case.refresh_from_db()
    assert (case.status, case.identity_verified) == (Status.OPEN, False)


def test_access_export_holds_everything_about_the_contact(
    contact, marketing, newsletter, monkeypatch
):
    grant_consent(contact, newsletter, "email")
    crm_services.contact_update(contact=contact, actor=marketing, last_name="Beispiel-Neu")
    dsr_open(contact=contact, kind=Kind.OBJECTION, actor=marketing)
    monkeypatch.setattr(
        subjects_module,
        "ACCESS_EXPORT_SECTIONS",
        [lambda c: ("messages", [{"contact": c.pk, "body": "Hallo"}])],
    )

    export = contact_access_export(contact)

    assert json.loads(json.dumps(export)) == export
    assert export["contact"]["last_name"] == "Beispiel-Neu"
    assert {p["address"] for p in export["contact_points"]} == {
        "hanna@example.org",
        "+4915112345678",
    }
    assert export["consents"][0]["status"] == ConsentStatus.GRANTED
    event = export["consent_events"][0]
    assert event["evidence"]["ip_address"] == "203.0.113.7"
    assert event["evidence"]["consent_text"]["wording"].startswith("Ja, ich möchte")
    assert event["hash"] == ConsentEvent.objects.get(contact=contact).hash
    assert [case["kind"] for case in export["data_subject_requests"]] == [Kind.OBJECTION]
    assert [row["last_name"] for row in export["history"]["contact"]] == [
        "Beispiel",
        "Beispiel-Neu",
    ]
    assert len(export["history"]["contact_points"]) == 2
    assert export["messages"] == [{"contact": contact.pk, "body": "Hallo"}]


def test_access_request_stores_the_export_as_a_json_file(contact, marketing, newsletter):
    grant_consent(contact, newsletter, "email")
    case = dsr_execute(request=open_verified(contact, Kind.ACCESS, marketing), actor=marketing)
    assert case.result_file.name.endswith(".json")
    with case.result_file.open("rb") as stored:
        data = json.loads(stored.read())
    assert data["contact"]["first_name"] == "Hanna"
    assert data["consent_events"][0]["action"] == ConsentAction.GRANTED
    assert "Access export" in case.outcome


def test_restriction_stops_new_grants_and_can_be_lifted(contact, marketing, newsletter):
    dsr_execute(request=open_verified(contact, Kind.RESTRICTION, marketing), actor=marketing)
    contact.refresh_from_db()
    assert contact.is_restricted
    assert contact.history.first().history_change_reason == "processing restricted"
    with pytest.raises(ConsentInvalid):
        grant_consent(contact, newsletter, "email")

    contact_restriction_lift(contact=contact, actor=marketing)
    contact.refresh_from_db()
    assert not contact.is_restricted
    grant_consent(contact, newsletter, "email")


def test_restriction_lift_is_refused_to_other_teams(contact, marketing, outsider):
    dsr_execute(request=open_verified(contact, Kind.RESTRICTION, marketing), actor=marketing)
    with pytest.raises(PermissionRefused):
        contact_restriction_lift(contact=contact, actor=outsider)
    contact.refresh_from_db()
    assert contact.is_restricted


def test_objection_withdraws_every_marketing_purpose_on_every_channel(
    contact, marketing, newsletter, service_info, team
):
    offers = PurposeFactory(team=team, key="offers", allowed_channels=["whatsapp", "sms"])
    grant_consent(contact, newsletter, "email")
    grant_consent(contact, service_info, "email")
    events_before = ConsentEvent.objects.count()

    case = dsr_execute(request=open_verified(contact, Kind.OBJECTION, marketing), actor=marketing)

    withdrawn = Consent.objects.filter(contact=contact, status=ConsentStatus.WITHDRAWN)
    assert set(withdrawn.values_list("purpose__key", "channel")) == {
        ("newsletter", "email"),
        ("newsletter", "sms"),
        ("offers", "sms"),
        ("offers", "whatsapp"),
    }
    assert Consent.objects.get(contact=contact, purpose=service_info).status == (
        ConsentStatus.GRANTED
    )
    new_events = ConsentEvent.objects.filter(contact=contact).order_by("-sequence")[:4]
    assert {e.source for e in new_events} == {ConsentSource.DATA_SUBJECT_REQUEST}
    assert ConsentEvent.objects.count() == events_before + 4
    assert "4 marketing consents withdrawn" in case.outcome
    assert offers.pk in set(withdrawn.values_list("purpose_id", flat=True))


def test_objection_twice_records_nothing_new(contact, marketing, newsletter):
    contact_object(contact=contact, actor=marketing)
    count = ConsentEvent.objects.count()
    assert contact_object(contact=contact, actor=marketing) == 0
    assert ConsentEvent.objects.count() == count


def test_a_newer_grant_after_objection_counts_again(contact, marketing, newsletter):
    contact_object(contact=contact, actor=marketing)
    consent_record(
        contact=contact,
        purpose=newsletter,
        channel="email",
        action=ConsentAction.GRANTED,
        source=ConsentSource.AGENT,
        evidence=Evidence(note="Asked for the newsletter again at the counter"),
        actor=marketing,
    )
    assert Consent.objects.get(contact=contact, purpose=newsletter, channel="email").status == (
        ConsentStatus.GRANTED
    )
