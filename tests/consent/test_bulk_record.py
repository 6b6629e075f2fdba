"""consent_record_many: the batch form of consent_record, with the same chains and projection."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
)
from consent.selectors import consent_ledger_verify
from consent.services import (
    ConsentBatchRefused,
    ConsentChange,
    Evidence,
    EvidenceMissing,
    consent_record,
    consent_record_many,
)
from consent.signals import consent_changed
from tests.factories import ConsentTextFactory, ContactFactory, PurposeFactory

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def purpose(team):
    return PurposeFactory(
        team=team, key="newsletter", validity_months=24, double_opt_in_channels=["email"]
    )


@pytest.fixture
def text(purpose):
    return ConsentTextFactory(purpose=purpose)


def _web_form(text):
    return Evidence(consent_text=text, ip_address="203.0.113.7", user_agent="Firefox/132.0")


def _sms_grant(contact_id, purpose, evidence, **overrides):
    """One SMS grant from a web form; `overrides` change any other field of the change."""
    fields = {
        "contact_id": contact_id,
        "purpose": purpose,
        "channel": "sms",
        "action": ConsentAction.GRANTED,
        "source": ConsentSource.WEB_FORM,
        "evidence": evidence,
    }
    return ConsentChange(**(fields | overrides))


def _changes(contacts, purpose, text):
    """Requests, confirmations, grants, withdrawals and a late grant, two contacts interleaved."""
    withdrawal = Evidence(note="asked by phone")
    steps = [
        ("email", ConsentAction.REQUESTED, ConsentSource.WEB_FORM, _web_form(text), -60),
        ("sms", ConsentAction.GRANTED, ConsentSource.WEB_FORM, _web_form(text), -50),
        ("email", ConsentAction.CONFIRMED, ConsentSource.DOUBLE_OPT_IN, _web_form(text), -40),
        ("sms", ConsentAction.WITHDRAWN, ConsentSource.API, withdrawal, -30),
        ("sms", ConsentAction.GRANTED, ConsentSource.WEB_FORM, _web_form(text), -45),
        ("email", ConsentAction.REQUESTED, ConsentSource.WEB_FORM, _web_form(text), -20),
    ]
    return [
        ConsentChange(
            contact_id=contact.pk,
            purpose=purpose,
            channel=channel,
            action=action,
            source=source,
            evidence=evidence,
            occurred_at=NOW + dt.timedelta(minutes=minutes),
        )
        for channel, action, source, evidence, minutes in steps
        for contact in contacts
    ]


def _ledger_and_projection():
    events = list(
        ConsentEvent.objects.values_list(
            "contact_id", "sequence", "action", "previous_hash", "hash", "evidence_digest"
        )
    )
    projection = list(
        Consent.objects.order_by("contact_id", "channel").values_list(
            "contact_id", "channel", "status", "since", "valid_until", "last_event__hash"
        )
    )
    return events, projection


class _RollBack(Exception):
    pass


def _one_by_one_then_roll_back(changes, contacts):
    """The ledger and projection consent_record writes for `changes`, then rolled back."""
    by_pk = {contact.pk: contact for contact in contacts}
    try:
        with transaction.atomic():
            for change in changes:
                consent_record(
                    contact=by_pk[change.contact_id],
                    purpose=change.purpose,
                    channel=change.channel,
                    action=change.action,
                    source=change.source,
                    evidence=change.evidence,
                    occurred_at=change.occurred_at,
                )
            written = _ledger_and_projection()
            raise _RollBack
    except _RollBack:
        return written


@pytest.mark.django_db
def test_batch_writes_the_same_chains_and_projection_as_one_by_one(
    team, purpose, text, monkeypatch
):
    # recorded_at is part of each hash: one clock for both runs.
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    contacts = [ContactFactory(team=team), ContactFactory(team=team)]
    changes = _changes(contacts, purpose, text)
    one_by_one = _one_by_one_then_roll_back(changes, contacts)
    assert not ConsentEvent.objects.exists()

    outcome = consent_record_many(changes, chunk_size=5)

    assert outcome.recorded == len(changes) == 12
    assert outcome.refused == []
    assert _ledger_and_projection() == one_by_one
    # The projection follows the rules: the confirmation grants email (the later request
    # leaves it granted), and the late sms grant does not undo the withdrawal.
    statuses = {(c, ch): s for c, ch, s, *_rest in one_by_one[1]}
    assert statuses[contacts[0].pk, "email"] == ConsentStatus.GRANTED
    assert statuses[contacts[0].pk, "sms"] == ConsentStatus.WITHDRAWN
    assert consent_ledger_verify().broken is None


@pytest.mark.django_db
def test_an_invalid_event_refuses_the_whole_batch(team, purpose, text):
    contact = ContactFactory(team=team)
    good = _sms_grant(contact.pk, purpose, _web_form(text))
    no_text = _sms_grant(contact.pk, purpose, Evidence(ip_address="203.0.113.7"))
    unknown_channel = _sms_grant(
        contact.pk,
        purpose,
        Evidence(),
        channel="pigeon",
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.API,
    )

    with pytest.raises(ConsentBatchRefused) as refusal:
        consent_record_many([good, no_text, good, unknown_channel])

    assert [index for index, _error in refusal.value.refused] == [1, 3]
    assert isinstance(refusal.value.refused[0][1], EvidenceMissing)
    assert "Event 2:" in refusal.value.message
    assert "consent text" in refusal.value.message
    assert not ConsentEvent.objects.exists()
    assert not ConsentEvidence.objects.exists()
    assert not Consent.objects.exists()


@pytest.mark.django_db
def test_skip_invalid_records_the_valid_events_and_reports_the_others(team, purpose, text):
    contact = ContactFactory(team=team)
    changes = [
        _sms_grant(contact.pk, purpose, evidence)
        for evidence in (_web_form(text), Evidence(), _web_form(text))
    ]

    outcome = consent_record_many(changes, skip_invalid=True, chunk_size=2)

    assert outcome.recorded == 2
    assert [(index, type(error)) for index, error in outcome.refused] == [(1, EvidenceMissing)]
    assert list(ConsentEvent.objects.values_list("sequence", flat=True)) == [1, 2]
    assert consent_ledger_verify(contact.pk).broken is None


@pytest.mark.django_db
def test_each_chunk_is_one_transaction(team, purpose, text):
    contact = ContactFactory(team=team)
    valid = _sms_grant(contact.pk, purpose, _web_form(text))
    invalid = _sms_grant(
        contact.pk + 1000,
        purpose,
        Evidence(),
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.API,
    )

    with pytest.raises(ConsentBatchRefused) as refusal:
        consent_record_many([valid, valid, invalid], chunk_size=2)

    assert refusal.value.refused[0][0] == 2
    assert refusal.value.field == "contact"
    assert ConsentEvent.objects.count() == 2


@pytest.mark.django_db
def test_consent_changed_is_sent_for_every_recorded_event(team, purpose, text):
    contacts = [ContactFactory(team=team), ContactFactory(team=team)]
    received = []

    def receiver(sender, *, events, **kwargs):
        received.extend((e.pk, e.contact_id, e.purpose.key, e.action) for e in events)

    consent_changed.connect(receiver)
    try:
        consent_record_many(_changes(contacts, purpose, text))
    finally:
        consent_changed.disconnect(receiver)

    assert received == list(
        ConsentEvent.objects.order_by("pk").values_list(
            "pk", "contact_id", "purpose__key", "action"
        )
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_on_the_same_contacts_keep_their_chains(team, purpose, text):
    contacts = [ContactFactory(team=team) for _ in range(3)]
    changes = _changes(contacts, purpose, text)
    barrier = threading.Barrier(3)
    errors = []

    def record(batch):
        try:
            barrier.wait(timeout=5)
            for _ in range(3):
                consent_record_many(batch, chunk_size=4)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    # Two writers in reverse contact order and one single-event writer, all at once.
    threads = [
        threading.Thread(target=record, args=(changes,)),
        threading.Thread(target=record, args=(changes[::-1],)),
        threading.Thread(target=record, args=(changes[:1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    verification = consent_ledger_verify()
    assert verification.broken is None
    assert verification.events == 3 * (2 * len(changes) + 1)
    for contact in contacts:
        sequences = list(
            ConsentEvent.objects.filter(contact=contact).values_list("sequence", flat=True)
        )
        assert sequences == list(range(1, len(sequences) + 1))
