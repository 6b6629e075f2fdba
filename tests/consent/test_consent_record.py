from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
)
from consent.services import ConsentInvalid, Evidence, EvidenceMissing, consent_record
from crm.errors import PermissionRefused
from crm.ledger import GENESIS_HASH, LedgerImmutable, verify_chain
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ConsentTextFactory, ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture
def contact(team):
    return ContactFactory(team=team)


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, key="newsletter", validity_months=24)


def state(contact, purpose, channel="email"):
    return Consent.objects.get(contact=contact, purpose=purpose, channel=channel)


def test_grant_writes_event_and_projection(contact, purpose):
    event = grant_consent(contact, purpose, occurred_at=NOW)
    consent = state(contact, purpose)
    assert consent.status == ConsentStatus.GRANTED
    assert consent.last_event == event
    assert consent.since == NOW
    assert consent.valid_until > NOW + dt.timedelta(days=700)
    assert event.previous_hash == GENESIS_HASH
    assert event.evidence.digest == event.evidence_digest == event.evidence.compute_digest()


def test_events_form_one_chain_per_contact(contact, purpose, team):
    first = grant_consent(contact, purpose)
    second = withdraw_consent(contact, purpose)
    other = grant_consent(ContactFactory(team=team), purpose)
    assert second.previous_hash == first.hash
    assert (first.sequence, second.sequence, other.sequence) == (1, 2, 1)
    assert verify_chain(contact.pk, ConsentEvent.objects.filter(contact=contact)) is None


def test_late_grant_does_not_override_newer_withdrawal(contact, purpose):
    withdraw_consent(contact, purpose, occurred_at=NOW)
    late = grant_consent(contact, purpose, occurred_at=NOW - dt.timedelta(days=3))
    assert ConsentEvent.objects.filter(pk=late.pk).exists()
    assert state(contact, purpose).status == ConsentStatus.WITHDRAWN


def test_newer_grant_after_withdrawal_grants_again(contact, purpose):
    withdraw_consent(contact, purpose, occurred_at=NOW - dt.timedelta(days=3))
    grant_consent(contact, purpose, occurred_at=NOW)
    assert state(contact, purpose).status == ConsentStatus.GRANTED


def test_withdrawal_wins_a_tie(contact, purpose):
    withdraw_consent(contact, purpose, occurred_at=NOW)
    grant_consent(contact, purpose, occurred_at=NOW)
    assert state(contact, purpose).status == ConsentStatus.WITHDRAWN


def test_channels_are_independent(contact, purpose):
    grant_consent(contact, purpose, "email")
    withdraw_consent(contact, purpose, "sms")
    assert state(contact, purpose, "email").status == ConsentStatus.GRANTED
    assert state(contact, purpose, "sms").status == ConsentStatus.WITHDRAWN


def _nothing_written():
    return (
        ConsentEvent.objects.count() == 0
        and Consent.objects.count() == 0
        and ConsentEvidence.objects.count() == 0
    )


def test_channel_not_allowed_for_purpose_is_refused(contact, team):
    purpose = PurposeFactory(team=team, allowed_channels=["email"])
    with pytest.raises(ConsentInvalid) as error:
        grant_consent(contact, purpose, "whatsapp")
    assert error.value.field == "channel"
    assert _nothing_written()


def test_purpose_of_another_team_is_refused(contact, other_team):
    with pytest.raises(ConsentInvalid):
        grant_consent(contact, PurposeFactory(team=other_team))
    assert _nothing_written()


@pytest.mark.parametrize("source", [ConsentSource.WEB_FORM, ConsentSource.API])
def test_grant_without_consent_text_is_refused(contact, purpose, source):
    with pytest.raises(EvidenceMissing):
        consent_record(
            contact=contact,
            purpose=purpose,
            channel="email",
            action=ConsentAction.GRANTED,
            source=source,
            evidence=Evidence(ip_address="203.0.113.7"),
        )
    assert _nothing_written()


def test_import_grant_needs_collection_date(contact, purpose):
    with pytest.raises(EvidenceMissing):
        consent_record(
            contact=contact,
            purpose=purpose,
            channel="email",
            action=ConsentAction.GRANTED,
            source=ConsentSource.IMPORT,
            evidence=Evidence(consent_text=ConsentTextFactory(purpose=purpose)),
        )
    assert _nothing_written()


def test_agent_change_needs_a_note(contact, purpose, agent):
    with pytest.raises(EvidenceMissing):
        consent_record(
            contact=contact,
            purpose=purpose,
            channel="email",
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.AGENT,
            evidence=Evidence(),
            actor=agent,
        )
    event = consent_record(
        contact=contact,
        purpose=purpose,
        channel="email",
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.AGENT,
        evidence=Evidence(note="Asked by phone to stop"),
        actor=agent,
    )
    assert event.evidence.actor == agent
    assert event.evidence.actor_label == "agent"


def test_consent_text_of_another_purpose_is_refused(contact, purpose, team):
    foreign_text = ConsentTextFactory(purpose=PurposeFactory(team=team))
    with pytest.raises(ConsentInvalid):
        consent_record(
            contact=contact,
            purpose=purpose,
            channel="email",
            action=ConsentAction.GRANTED,
            source=ConsentSource.WEB_FORM,
            evidence=Evidence(consent_text=foreign_text),
        )
    assert _nothing_written()


def test_future_event_is_refused(contact, purpose):
    with pytest.raises(ConsentInvalid):
        grant_consent(contact, purpose, occurred_at=NOW + dt.timedelta(hours=2))
    assert _nothing_written()


def test_outsider_cannot_record_for_another_team(contact, purpose, outsider):
    with pytest.raises(PermissionRefused):
        consent_record(
            contact=contact,
            purpose=purpose,
            channel="email",
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.API,
            evidence=Evidence(),
            actor=outsider,
        )
    assert _nothing_written()


def test_restricted_or_erased_contact_cannot_be_granted(contact, purpose):
    contact.is_restricted = True
    contact.save()
    with pytest.raises(ConsentInvalid):
        grant_consent(contact, purpose)
    withdraw_consent(contact, purpose)
    assert state(contact, purpose).status == ConsentStatus.WITHDRAWN


def test_double_opt_in_channel_grant_stays_pending(contact, team):
    purpose = PurposeFactory(team=team, double_opt_in_channels=["email"])
    grant_consent(contact, purpose)
    assert state(contact, purpose).status == ConsentStatus.PENDING


def test_reconfirmation_request_keeps_a_valid_grant(contact, purpose):
    grant = grant_consent(contact, purpose, occurred_at=NOW - dt.timedelta(days=1))
    consent_record(
        contact=contact,
        purpose=purpose,
        channel="email",
        action=ConsentAction.REQUESTED,
        source=ConsentSource.SYSTEM,
        evidence=Evidence(note="reconfirmation"),
    )
    consent = state(contact, purpose)
    assert consent.status == ConsentStatus.GRANTED
    assert consent.last_event == grant


def test_ledger_rows_refuse_update_and_delete_in_the_orm(contact, purpose):
    event = grant_consent(contact, purpose)
    event.action = ConsentAction.WITHDRAWN
    with pytest.raises(LedgerImmutable):
        event.save()
    with pytest.raises(LedgerImmutable):
        event.delete()
    with pytest.raises(LedgerImmutable):
        ConsentEvent.objects.filter(pk=event.pk).update(action="withdrawn")
    with pytest.raises(LedgerImmutable):
        ConsentEvent.objects.all().delete()
    assert ConsentEvent.objects.get(pk=event.pk).action == ConsentAction.GRANTED


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE consent_consentevent SET action = 'withdrawn'",
        "DELETE FROM consent_consentevent",
    ],
)
def test_postgres_refuses_update_and_delete_on_the_ledger(contact, purpose, sql):
    event = grant_consent(contact, purpose)
    with pytest.raises(DatabaseError, match="append-only"):  # noqa: SIM117
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert ConsentEvent.objects.get(pk=event.pk).action == ConsentAction.GRANTED


def test_unknown_action_or_source_is_refused(contact, purpose):
    for action, source in (("maybe", "api"), ("granted", "pigeon")):
        with pytest.raises(ConsentInvalid):
            consent_record(
                contact=contact,
                purpose=purpose,
                channel="email",
                action=action,
                source=source,
                evidence=Evidence(consent_text=ConsentTextFactory(purpose=purpose)),
            )
    assert _nothing_written()


def test_contact_with_consent_history_cannot_be_deleted(contact, purpose, marketing):
    from crm.services import ContactInvalid, contact_delete

    grant_consent(contact, purpose)
    with pytest.raises(ContactInvalid, match="erasure"):
        contact_delete(contact=contact, actor=marketing)
    assert ConsentEvent.objects.filter(contact=contact).count() == 1


def test_withdrawal_is_accepted_after_the_purpose_dropped_the_channel(contact, team):
    purpose = PurposeFactory(team=team, allowed_channels=["email", "sms"])
    grant_consent(contact, purpose, "sms")
    purpose.allowed_channels = ["email"]
    purpose.save()
    withdraw_consent(contact, purpose, "sms")
    assert state(contact, purpose, "sms").status == ConsentStatus.WITHDRAWN
    with pytest.raises(ConsentInvalid):
        withdraw_consent(contact, purpose, "fax")
