"""The ledger tables carry only the indexes their queries use, and the bulk path's statements
per chunk do not grow with the chunk.

Every index costs each appended event, so the redundant single-column foreign-key indexes
(prefixes of composite ones) and the hash's LIKE index are left out (migration 0004); the
chain's constraints (one hash, one sequence number per contact, one event per evidence row)
stay, and the lookups that used the dropped indexes are still index scans.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import ConsentAction, ConsentEvent, ConsentEvidence, ConsentSource
from consent.services import ConsentChange, Evidence, consent_record_many, ledger
from tests.db_plans import index_names, plan, postgres_only
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db

EVENT_INDEXES = {
    "consent_consentevent_pkey",
    "consent_consentevent_evidence_id_key",
    "consent_consentevent_unique_hash",
    "consent_consentevent_unique_sequence",
    "consent_event_team_recorded",
    "consent_event_purpose",
    "consent_event_withdrawn",
}
PROJECTION_INDEXES = {
    "consent_consent_pkey",
    "consent_consent_unique",
    "consent_consent_last_event_id_906cb4bc",
    "consent_audience",
    "consent_audience_reachable",
    "consent_expiry",
}


def _changes(contacts, purpose, per_contact=3):
    now = timezone.now()
    return [
        ConsentChange(
            contact_id=contact.pk,
            purpose=purpose,
            channel="sms",
            action=ConsentAction.WITHDRAWN if n % 2 else ConsentAction.GRANTED,
            source=ConsentSource.AGENT,
            evidence=Evidence(note="am Telefon"),
            occurred_at=now - dt.timedelta(minutes=per_contact - n),
        )
        for contact in contacts
        for n in range(per_contact)
    ]


@postgres_only
def test_the_ledger_tables_have_only_the_indexes_their_queries_use():
    assert index_names("consent_consentevent") == EVENT_INDEXES
    assert index_names("consent_consent") == PROJECTION_INDEXES


@postgres_only
@pytest.mark.parametrize(
    ("sql", "index"),
    [
        # Chain heads, a contact's timeline, verification, PROTECT on contact deletion.
        (
            "SELECT id FROM consent_consentevent WHERE contact_id = %s ORDER BY sequence",
            "consent_consentevent_unique_sequence",
        ),
        # The API and admin lists by team, PROTECT on team deletion.
        ("SELECT id FROM consent_consentevent WHERE team_id = %s", "consent_event_team_recorded"),
        # PROTECT on purpose deletion, consent metrics per purpose.
        ("SELECT id FROM consent_consentevent WHERE purpose_id = %s", "consent_event_purpose"),
        # A contact's current state, CASCADE on contact deletion.
        ("SELECT id FROM consent_consent WHERE contact_id = %s", "consent_consent_unique"),
        # PROTECT on purpose deletion.
        ("SELECT id FROM consent_consent WHERE purpose_id = %s", "consent_audience"),
    ],
)
def test_lookups_of_the_dropped_indexes_use_the_composite_ones(sql, index):
    with transaction.atomic():
        assert index in plan(sql, [1])


@postgres_only
def test_a_hash_is_still_unique(team):
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    consent_record_many(_changes([ContactFactory(team=team)], purpose, per_contact=1))
    event = ConsentEvent.objects.get()
    evidence = ConsentEvidence.objects.create(digest="0" * 64)
    # A copy of the event with the next sequence number and its own evidence: only the hash is
    # duplicated.
    copy = """
        INSERT INTO consent_consentevent (previous_hash, hash, channel, action, source,
            evidence_digest, occurred_at, recorded_at, sequence, contact_id, team_id,
            evidence_id, purpose_id)
        SELECT previous_hash, hash, channel, action, source, evidence_digest, occurred_at,
               recorded_at, sequence + 1, contact_id, team_id, %s, purpose_id
        FROM consent_consentevent WHERE id = %s
    """
    with (
        connection.cursor() as cursor,
        pytest.raises(IntegrityError, match="consent_consentevent_unique_hash"),
        transaction.atomic(),
    ):
        cursor.execute(copy, [evidence.pk, event.pk])


def _statements(changes) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        outcome = consent_record_many(changes)
    assert outcome.recorded == len(changes)
    return [query["sql"] for query in queries.captured_queries]


def test_a_chunk_costs_the_same_statements_whatever_its_size(team):
    # 60 events: within one bulk_create batch on SQLite (999 parameters) too.
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    small = _statements(_changes([ContactFactory(team=team) for _ in range(2)], purpose))
    large = _statements(_changes([ContactFactory(team=team) for _ in range(20)], purpose))
    assert len(small) == len(large)


@postgres_only
def test_ids_are_reserved_with_the_sequence_looked_up_once(team):
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    statements = _statements(_changes([ContactFactory(team=team)], purpose))
    reserving = [sql for sql in statements if "nextval" in sql]
    assert len(reserving) == 2  # evidence and events
    for sql in reserving:
        assert "nextval((SELECT pg_get_serial_sequence(" in sql


@postgres_only
def test_chain_heads_are_one_backward_probe_of_the_sequence_index_per_contact():
    # Written so that the plan does not depend on statistics: on a ledger grown since it was
    # last analyzed, the general form read the whole table for every chunk.
    sql = ledger._CHAIN_HEADS.format(events="consent_consentevent")
    with transaction.atomic():
        heads = plan(sql, [[1, 2, 3]])
    assert "Backward using consent_consentevent_unique_sequence" in heads
    assert "Limit" in heads


@postgres_only
def test_the_deciding_events_of_the_projection_are_read_by_primary_key(team):
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    contact = ContactFactory(team=team)
    consent_record_many(_changes([contact], purpose, per_contact=1))

    statements = _statements(_changes([contact], purpose, per_contact=1))

    reading_events = [
        sql
        for sql in statements
        if sql.startswith('SELECT "consent_consentevent"."id"') and "occurred_at" in sql
    ]
    assert len(reading_events) == 1
    assert "JOIN" not in reading_events[0]
    with transaction.atomic():
        assert "consent_consentevent_pkey" in plan(reading_events[0], [])
