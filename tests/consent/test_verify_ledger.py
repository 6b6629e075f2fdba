from __future__ import annotations

from contextlib import contextmanager
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from consent.models import ConsentEvidence
from consent.selectors import consent_ledger_verify
from crm.errors import NotFoundInScope
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team)


@pytest.fixture
def ledger(team, purpose):
    """Two chains: three events for `first`, one for `second`."""
    first, second = ContactFactory(team=team), ContactFactory(team=team)
    events = [
        grant_consent(first, purpose),
        withdraw_consent(first, purpose),
        grant_consent(first, purpose, "sms"),
        grant_consent(second, purpose),
    ]
    return first, second, events


@contextmanager
def ledger_writable():
    """On PostgreSQL a trigger refuses UPDATE on the ledger; a tamperer with table rights
    could switch it off, which is exactly what verification must still catch."""
    postgres = connection.vendor == "postgresql"
    if postgres:
        with connection.cursor() as cursor:
            # ALTER TABLE waits for no deferred foreign-key checks: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE consent_consentevent DISABLE TRIGGER USER")
    try:
        yield
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE consent_consentevent ENABLE TRIGGER USER")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def raw_update(sql, params):
    with ledger_writable(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("verify_consent_ledger", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_intact_ledger_is_ok(ledger):
    assert "OK: 4 events in 2 chains" in run()
    result = consent_ledger_verify()
    assert (result.ok, result.events, result.chains) == (True, 4, 2)


def test_one_contact(ledger):
    first, _second, _events = ledger
    assert "OK: 3 events in 1 chains" in run("--contact", str(first.pk))


def test_empty_ledger_is_ok(db):
    assert "OK: 0 events in 0 chains" in run()


def test_unknown_contact_is_a_clear_error(ledger):
    with pytest.raises(CommandError, match="no contact with id 987654"):
        run("--contact", "987654")
    with pytest.raises(NotFoundInScope):
        consent_ledger_verify(987654)


def test_progress_is_reported_per_chain(ledger):
    seen = []
    consent_ledger_verify(progress=seen.append, chunk_size=2)
    assert sorted(seen) == [1, 3]


def test_edited_event_is_detected(ledger):
    first, _second, events = ledger
    edited = events[1]
    raw_update("UPDATE consent_consentevent SET action = %s WHERE id = %s", ["granted", edited.pk])
    result = consent_ledger_verify()
    assert not result.ok
    assert (result.broken.chain, result.broken.entry_id) == (first.pk, edited.pk)
    assert result.broken.reason == "content does not match its hash"
    with pytest.raises(CommandError) as excinfo:
        run()
    assert f"contact {first.pk}, event {edited.pk}" in str(excinfo.value)


def test_edited_time_is_detected(ledger):
    _first, second, events = ledger
    raw_update(
        "UPDATE consent_consentevent SET occurred_at = %s WHERE id = %s",
        [timezone.now(), events[3].pk],
    )
    broken = consent_ledger_verify().broken
    assert (broken.chain, broken.entry_id) == (second.pk, events[3].pk)


def test_relinked_hash_is_detected(ledger):
    first, _second, events = ledger
    # Recompute nothing, just swap the previous hash: the next link no longer fits.
    raw_update(
        "UPDATE consent_consentevent SET previous_hash = %s WHERE id = %s",
        ["f" * 64, events[2].pk],
    )
    broken = consent_ledger_verify(first.pk).broken
    assert broken.entry_id == events[2].pk
    assert broken.reason == "previous_hash does not match the entry before"


def test_edited_evidence_is_detected(ledger):
    first, _second, events = ledger
    raw_update(
        "UPDATE consent_consentevidence SET note = %s WHERE id = %s",
        ["forged", events[0].evidence_id],
    )
    result = consent_ledger_verify()
    assert (result.broken.chain, result.broken.entry_id) == (first.pk, events[0].pk)
    assert result.broken.reason == "evidence does not match its digest"
    with pytest.raises(CommandError, match=f"event {events[0].pk}"):
        run()


def test_erased_evidence_still_verifies(ledger):
    _first, _second, events = ledger
    evidence = events[0].evidence
    evidence.ip_address = None
    evidence.user_agent = ""
    evidence.erased_at = timezone.now()
    evidence.save()
    assert consent_ledger_verify().ok


def test_erased_evidence_with_a_changed_digest_is_detected(ledger):
    _first, _second, events = ledger
    ConsentEvidence.objects.filter(pk=events[0].evidence_id).update(
        erased_at=timezone.now(), digest="0" * 64
    )
    broken = consent_ledger_verify().broken
    assert broken.entry_id == events[0].pk
    assert broken.reason == "evidence digest does not match the event"


def test_first_broken_link_is_reported(ledger):
    _first, _second, events = ledger
    raw_update(
        "UPDATE consent_consentevidence SET note = %s WHERE id = %s", ["x", events[2].evidence_id]
    )
    raw_update(
        "UPDATE consent_consentevent SET channel = %s WHERE id = %s", ["whatsapp", events[1].pk]
    )
    assert consent_ledger_verify().broken.entry_id == events[1].pk


@pytest.mark.postgres
def test_trigger_is_back_after_the_test_helper(ledger):
    with ledger_writable():
        pass
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE consent_consentevent SET action = 'granted'")
