"""The ledger's references are checked by its writer, once per batch, instead of by database
foreign keys row by row (migration 0005); only the event's key to its contact stays in the
database.

So these tests hold the writer to it: an event naming a purpose or consent text that does not
exist is refused like any other invalid event and writes nothing, deleting what the ledger
points at is still refused, and the rows are written through the binary COPY exactly as the
ORM would write them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    Purpose,
)
from consent.selectors import consent_ledger_verify
from consent.services import (
    ConsentBatchRefused,
    ConsentChange,
    ConsentInvalid,
    Evidence,
    consent_record,
    consent_record_many,
)
from tests.db_plans import postgres_only, referenced_tables
from tests.factories import ConsentTextFactory, ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["email", "sms"])


def _nothing_written() -> bool:
    return not (
        ConsentEvent.objects.exists()
        or ConsentEvidence.objects.exists()
        or Consent.objects.exists()
    )


def _grant(contact, purpose, text, **evidence) -> ConsentChange:
    return ConsentChange(
        contact_id=contact.pk,
        purpose=purpose,
        channel="email",
        action=ConsentAction.GRANTED,
        source=ConsentSource.WEB_FORM,
        evidence=Evidence(consent_text=text, **evidence),
        occurred_at=timezone.now() - dt.timedelta(minutes=1),
    )


def _deleted_purpose(team) -> Purpose:
    """A purpose as a caller may still hold it after it was deleted."""
    gone = PurposeFactory(team=team, allowed_channels=["email"])
    Purpose.objects.filter(pk=gone.pk).delete()
    return gone


@postgres_only
def test_only_the_contact_key_of_the_ledger_is_a_database_foreign_key():
    assert referenced_tables("consent_consentevent") == {"crm_contact"}
    assert referenced_tables("consent_consent") == set()
    assert referenced_tables("consent_consentevidence") == {"auth_user"}


@pytest.mark.parametrize(
    "missing",
    [
        _deleted_purpose,
        lambda team: Purpose(team=team, key="unsaved", name="Unsaved", allowed_channels=["email"]),
    ],
    ids=["deleted", "unsaved"],
)
def test_an_event_for_a_purpose_that_does_not_exist_is_refused_and_writes_nothing(team, missing):
    contact = ContactFactory(team=team)

    with pytest.raises(ConsentInvalid) as refused:
        consent_record(
            contact=contact,
            purpose=missing(team),
            channel="email",
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.API,
            evidence=Evidence(note="withdrawn"),
        )

    assert refused.value.field == "purpose"
    assert _nothing_written()


def test_a_grant_citing_a_deleted_consent_text_is_refused(team, purpose):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)
    text.delete()

    with pytest.raises(ConsentBatchRefused) as refused:
        consent_record_many([_grant(contact, purpose, text)])

    assert refused.value.refused[0][1].field == "consent_text"
    assert _nothing_written()


def test_a_batch_leaves_out_only_the_events_with_unknown_references(team, purpose):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)
    gone_text = ConsentTextFactory(purpose=purpose)
    gone_text.delete()
    good = _grant(contact, purpose, text)
    changes = [
        good,
        dataclasses.replace(good, purpose=_deleted_purpose(team)),
        _grant(contact, purpose, gone_text),
        dataclasses.replace(good, channel="sms"),
    ]

    outcome = consent_record_many(changes, skip_invalid=True)

    assert outcome.recorded == 2
    assert [(position, error.field) for position, error in outcome.refused] == [
        (1, "purpose"),
        (2, "consent_text"),
    ]
    assert list(ConsentEvent.objects.order_by("sequence").values_list("channel", flat=True)) == [
        "email",
        "sms",
    ]
    assert consent_ledger_verify(contact.pk).ok


def test_what_the_ledger_points_at_still_cannot_be_deleted(team, purpose):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)
    consent_record_many([_grant(contact, purpose, text)])

    # The ORM's PROTECT does not need the database's key.
    for referenced in (purpose, text, contact):
        with pytest.raises(ProtectedError), transaction.atomic():
            referenced.delete()


@postgres_only
def test_the_database_refuses_to_delete_a_contact_with_a_ledger(team, purpose):
    # The key the database keeps: a delete racing a batch (which the ORM's check, made before
    # the batch commits, cannot see) still fails.
    contact = ContactFactory(team=team)
    consent_record_many([_grant(contact, purpose, ConsentTextFactory(purpose=purpose))])

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        # Checked at once rather than at the test transaction's end.
        cursor.execute(
            "SET CONSTRAINTS ALL IMMEDIATE; DELETE FROM crm_contact WHERE id = %s", [contact.pk]
        )


@postgres_only
@pytest.mark.parametrize(
    "address", ["198.51.100.7", "2001:db8::7", "2001:0DB8:0:0:0:0:0:7", "::ffff:198.51.100.7"]
)
def test_addresses_are_stored_as_the_orm_stores_them(team, purpose, address):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)
    by_orm = ConsentEvidence.objects.create(ip_address=address, digest="0" * 64)

    consent_record_many([_grant(contact, purpose, text, ip_address=address)])

    copied = ConsentEvent.objects.select_related("evidence").get().evidence
    assert copied.ip_address == ConsentEvidence.objects.get(pk=by_orm.pk).ip_address


@postgres_only
@pytest.mark.parametrize("address", ["198.51.100.300", "not an address", "198.51.100.7/24"])
def test_a_malformed_address_fails_as_with_the_orm_and_writes_nothing(team, purpose, address):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)

    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        consent_record_many([_grant(contact, purpose, text, ip_address=address)])
    with (
        pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"),
        transaction.atomic(),
    ):
        ConsentEvidence.objects.create(ip_address=address, digest="0" * 64)

    assert _nothing_written()
