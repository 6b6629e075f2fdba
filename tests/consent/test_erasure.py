"""Erasure (GDPR Art. 17) leaves no personal data anywhere in the database and keeps the proof."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models

from consent import selectors
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    DataSubjectRequest,
    Suppression,
    WithdrawalReview,
)
from consent.services import (
    Evidence,
    consent_record,
    contact_erase,
    dsr_execute,
    dsr_open,
    is_suppressed,
)
from consent.services import subjects as subjects_module
from crm import services as crm_services
from crm.errors import PermissionRefused
from crm.hashing import address_hash
from crm.ledger import verify_chain
from crm.models import Contact, ContactImport, ContactPoint, ImportRejection
from tests.factories import ConsentTextFactory, PurposeFactory

pytestmark = pytest.mark.django_db

OLD_EMAIL = "quirina.old@example.net"
EMAIL = "quirina.zwiebelmeyer@example.net"
PHONE = "+491701234567"
IP = "198.51.100.23"
# Every spelling that identifies the person; none may survive anywhere in the database.
SECRETS = [
    EMAIL,
    OLD_EMAIL,
    PHONE,
    "01701234567",
    "1701234567",
    "Zwiebelmeyer",
    "Quirina",
    "Trautwein",
    IP,
    "ZW-4711",
]
TEXT_FIELDS = (
    models.CharField,
    models.TextField,
    models.JSONField,
    models.EmailField,
    models.GenericIPAddressField,
)


def find_personal_data(secrets: list[str]) -> list[str]:
    """Every (table, column, secret) where a text-like column of any model contains a secret.

    Values are read back and searched in Python, so JSON (escaped differently per database)
    and every database vendor are searched the same way.
    """
    lowered = [secret.lower() for secret in secrets]
    hits = []
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if opts.proxy or not opts.managed:
            continue
        fields = [field for field in opts.concrete_fields if isinstance(field, TEXT_FIELDS)]
        if not fields:
            continue
        names = [field.attname for field in fields]
        for row in model._base_manager.values_list(*names).iterator():
            for name, value in zip(names, row, strict=True):
                if value is None:
                    continue
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                text = text.lower()
                hits.extend(
                    f"{opts.db_table}.{name}: {secret}" for secret in lowered if secret in text
                )
    return hits


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, key="newsletter", allowed_channels=["email", "sms"])


@pytest.fixture
def person(team, marketing, purpose):
    """A contact with a history of edits, consent evidence, a review entry and log traces."""
    contact = crm_services.contact_create(
        team=team,
        actor=marketing,
        first_name="Quirina",
        last_name="Zwiebelmeyer",
        organisation="Praxis Zwiebelmeyer",
        external_id="ZW-4711",
        attributes={"kundennummer": "ZW-4711", "note": "Frau Zwiebelmeyer mag Kino"},
        points=[("email", OLD_EMAIL), ("sms", "0170 1234567")],
    )
    crm_services.contact_update(
        contact=contact, actor=marketing, last_name="Zwiebelmeyer-Trautwein"
    )
    email_point = contact.points.get(channel="email")
    crm_services.contact_point_update(point=email_point, actor=marketing, address=EMAIL)

    text = ConsentTextFactory(purpose=purpose)
    consent_record(
        contact=contact,
        purpose=purpose,
        channel="email",
        action=ConsentAction.GRANTED,
        source=ConsentSource.WEB_FORM,
        evidence=Evidence(
            consent_text=text,
            ip_address=IP,
            user_agent="QuirinaBrowser/1.0",
            source_url=f"https://kino.example/newsletter?email={EMAIL}",
            note=f"Signed up as {EMAIL} at the counter",
        ),
        actor=marketing,
    )
    consent_record(
        contact=contact,
        purpose=purpose,
        channel="sms",
        action=ConsentAction.GRANTED,
        source=ConsentSource.KEYWORD,
        evidence=Evidence(
            message_text="JA, hier Zwiebelmeyer", inbound_message_ref=f"sms-from-{PHONE}"
        ),
    )
    WithdrawalReview.objects.create(
        contact=contact,
        team=team,
        channel="sms",
        text="Zwiebelmeyer hier, bitte keine SMS mehr",
        inbound_message_ref=f"sms-from-{PHONE}",
    )
    LogEntry.objects.create(
        user=marketing,
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=str(contact.pk),
        object_repr=str(contact),
        action_flag=CHANGE,
        change_message=json.dumps(
            [{"added": {"name": "contact point", "object": f"E-mail: {EMAIL}"}}]
        ),
    )
    rejected = ContactImport.objects.create(team=team, source_file="imports/list.csv")
    ImportRejection.objects.create(
        contact_import=rejected,
        line_number=7,
        reason=f"{EMAIL} already belongs to contact #{contact.pk} of this team.",
        raw={"email": EMAIL, "last_name": "Zwiebelmeyer", "phone": "01701234567"},
    )
    contact.refresh_from_db()
    return contact


def erase_by_request(contact, actor):
    request = dsr_open(
        contact=contact,
        kind=DataSubjectRequest.Kind.ERASURE,
        actor=actor,
        identity_method="ID card of Quirina Zwiebelmeyer checked at the counter",
    )
    return dsr_execute(request=request, actor=actor)


def test_the_search_finds_personal_data_before_erasure(person):
    hits = find_personal_data(SECRETS)
    for secret in SECRETS:
        assert any(hit.endswith(f": {secret.lower()}") for hit in hits), secret


def test_erasure_leaves_no_personal_data_and_keeps_the_proof(
    person, marketing, django_capture_on_commit_callbacks
):
    events_before = list(
        ConsentEvent.objects.filter(contact=person).order_by("sequence").values_list("pk", "hash")
    )
    access = dsr_open(
        contact=person, kind=DataSubjectRequest.Kind.ACCESS, actor=marketing, identity_method="x"
    )
    access = dsr_execute(request=access, actor=marketing)
    export_name = access.result_file.name
    assert access.result_file.storage.exists(export_name)

    with django_capture_on_commit_callbacks(execute=True):
        case = erase_by_request(person, marketing)

    assert case.status == DataSubjectRequest.Status.COMPLETED
    assert find_personal_data(SECRETS) == []

    # The earlier access export (full of personal data) is gone as well.
    assert not access.result_file.storage.exists(export_name)
    access.refresh_from_db()
    assert not access.result_file

    # Proof: the old events are untouched, the chain verifies, withdrawals were appended.
    events_after = ConsentEvent.objects.filter(contact=person).order_by("sequence")
    assert list(events_after.values_list("pk", "hash")[: len(events_before)]) == events_before
    assert events_after.count() == len(events_before) + 2
    assert verify_chain(person.pk, events_after) is None
    assert selectors.consent_ledger_verify(person.pk).ok
    assert set(Consent.objects.filter(contact=person).values_list("status", flat=True)) == {
        ConsentStatus.WITHDRAWN
    }
    evidence = ConsentEvidence.objects.filter(event__contact=person)
    assert not evidence.filter(erased_at__isnull=True).exists()
    assert all(e.digest == e.event.evidence_digest for e in evidence)

    # The addresses (current and earlier) stay suppressed, as hashes only.
    hashes = {address_hash(a) for a in (EMAIL, OLD_EMAIL, PHONE)}
    assert selectors.suppressed_hashes(hashes) == hashes
    assert set(
        Suppression.objects.filter(address_hash__in=hashes).values_list("reason", flat=True)
    ) == {Suppression.Reason.ERASURE}

    person.refresh_from_db()
    assert person.erased_at is not None
    assert (person.first_name, person.last_name, person.external_id) == ("", "", None)
    assert person.attributes == {}
    points = {p.channel: p for p in ContactPoint.objects.filter(contact=person)}
    assert points["email"].address.endswith("@erased.invalid")
    assert points["email"].address_hash == address_hash(EMAIL)
    assert points["sms"].address_hash == address_hash(PHONE)


def test_an_erased_address_can_be_added_again_but_stays_suppressed(person, marketing, team):
    erase_by_request(person, marketing)
    again = crm_services.contact_create(team=team, actor=marketing, points=[("email", EMAIL)])
    assert again.points.get().address == EMAIL
    assert is_suppressed(EMAIL)
    assert is_suppressed(PHONE)
    assert selectors.suppressed_hashes([address_hash(EMAIL), address_hash("x@example.org")]) == {
        address_hash(EMAIL)
    }


def test_erasing_twice_is_harmless(person, marketing):
    contact_erase(contact=person, actor=marketing)
    result = contact_erase(contact=person, actor=marketing)
    assert result.consents_withdrawn == 0
    assert find_personal_data(SECRETS) == []
    assert selectors.consent_ledger_verify(person.pk).ok


def test_erasure_calls_the_hooks_of_later_apps(person, marketing, monkeypatch):
    seen = []
    monkeypatch.setattr(subjects_module, "ERASURE_HOOKS", [lambda contact: seen.append(contact.pk)])
    contact_erase(contact=person, actor=marketing)
    assert seen == [person.pk]


def test_erasure_by_another_team_is_refused_and_changes_nothing(person, outsider, auditor):
    for actor in (outsider, auditor):
        with pytest.raises(PermissionRefused):
            contact_erase(contact=person, actor=actor)
    person.refresh_from_db()
    assert person.erased_at is None
    assert person.first_name == "Quirina"
    assert not Suppression.objects.exists()
