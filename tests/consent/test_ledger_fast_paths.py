"""The ledger's fast paths write what the general ones would: orjson spells a payload exactly
as crm.ledger.canonical_json does, so the hashes verify; events are made without
Model.__init__ yet look like ones made with it; the cyclic collector is paused only while a
chunk is recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc

import pytest
from django.utils import timezone

from consent.models import ConsentAction, ConsentEvent, ConsentEvidence, ConsentSource
from consent.selectors import consent_ledger_verify
from consent.services import (
    ConsentBatchRefused,
    ConsentChange,
    Evidence,
    consent_record,
    consent_record_many,
)
from consent.services.ledger import _canonical_json
from consent.signals import consent_changed
from crm.ledger import canonical_json
from tests.factories import ConsentTextFactory, ContactFactory, PurposeFactory

# Everything JSON escapes or might spell differently: quotes, backslashes, control characters
# (but NUL, which PostgreSQL text refuses), DEL, non-ASCII, astral and line separators.
AWKWARD = (
    'a "quoted" \\ back\\slash / '
    + "".join(chr(code) for code in range(1, 32))
    + "\x7f ümlaut ß € 😀 \u2028\u2029 \ufeff"
)


@pytest.mark.parametrize(
    "payload",
    [
        {"b": AWKWARD, "a": 1, "c": None, "d": "", "nul": "\x00"},
        {"contact": 2**62, "sequence": 0, "note": "ok", "negative": -5},
        {"action": ConsentAction.GRANTED, "source": ConsentSource.WEB_FORM},
        {"at": dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=dt.UTC)},
        # Beyond 64 bits orjson refuses; canonical_json answers instead.
        {"huge": 2**70},
    ],
)
def test_payloads_are_spelled_byte_for_byte_like_canonical_json(payload):
    assert _canonical_json(payload) == canonical_json(payload)


def test_what_canonical_json_refuses_is_still_refused():
    with pytest.raises(UnicodeEncodeError):
        _canonical_json({"note": "lone \ud800 surrogate"})


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["email", "sms"])


def _awkward_changes(contacts, purpose):
    text = ConsentTextFactory(purpose=purpose)
    now = timezone.now()
    return [
        ConsentChange(
            contact_id=contact.pk,
            purpose=purpose,
            channel=channel,
            action=ConsentAction.GRANTED,
            source=ConsentSource.IMPORT,
            evidence=Evidence(
                consent_text=text,
                ip_address="2001:db8::7",
                user_agent=AWKWARD * 20,
                source_url="https://example.org/" + "x" * 600,
                message_text=AWKWARD,
                inbound_message_ref="r" * 300,
                note=AWKWARD,
                collected_at=now - dt.timedelta(days=2),
            ),
            occurred_at=now - dt.timedelta(minutes=minutes),
        )
        for minutes, channel in enumerate(["email", "sms", "email"])
        for contact in contacts
    ]


@pytest.mark.django_db
def test_batch_hashes_and_digests_are_the_ones_the_models_compute(team, purpose):
    contacts = [ContactFactory(team=team), ContactFactory(team=team)]

    consent_record_many(_awkward_changes(contacts, purpose), chunk_size=4)

    events = list(ConsentEvent.objects.select_related("evidence").order_by("pk"))
    assert len(events) == 6
    for event in events:
        assert event.hash == event.compute_hash()
        assert event.evidence_digest == event.evidence.digest == event.evidence.compute_digest()
    # Stored as the model would store them: cut to the field lengths, empty address None.
    evidence = events[0].evidence
    assert len(evidence.user_agent) == len(evidence.source_url) == 500
    assert len(evidence.inbound_message_ref) == 200
    assert evidence.note == AWKWARD
    assert consent_ledger_verify().ok


@pytest.mark.django_db
def test_sent_events_are_saved_instances_with_contact_and_purpose_cached(
    team, purpose, django_assert_num_queries
):
    contacts = [ContactFactory(team=team), ContactFactory(team=team)]
    received: list[ConsentEvent] = []

    def receiver(sender, *, events, **kwargs):
        received.extend(events)

    consent_changed.connect(receiver)
    try:
        consent_record_many(_awkward_changes(contacts, purpose))
    finally:
        consent_changed.disconnect(receiver)

    stored = {event.pk: event for event in ConsentEvent.objects.all()}
    assert [event.pk for event in received] == sorted(stored)
    with django_assert_num_queries(0):
        for event in received:
            assert not event._state.adding
            assert event.contact.pk == event.contact_id
            assert event.purpose is purpose
    for event in received:
        row = stored[event.pk]
        assert [getattr(event, f.attname) for f in ConsentEvent._meta.concrete_fields] == [
            getattr(row, f.attname) for f in ConsentEvent._meta.concrete_fields
        ]


@pytest.mark.django_db
def test_consent_record_returns_the_event_with_its_evidence_written(team, purpose):
    contact = ContactFactory(team=team)
    text = ConsentTextFactory(purpose=purpose)

    event = consent_record(
        contact=contact,
        purpose=purpose,
        channel="email",
        action=ConsentAction.GRANTED,
        source=ConsentSource.WEB_FORM,
        evidence=Evidence(consent_text=text, ip_address="", note=AWKWARD),
    )

    evidence = ConsentEvidence.objects.get(pk=event.evidence_id)
    assert evidence.ip_address is None
    assert evidence.note == AWKWARD
    assert evidence.consent_text == text
    assert event.hash == ConsentEvent.objects.get(pk=event.pk).compute_hash()


@pytest.mark.django_db
@pytest.mark.parametrize("enabled", [True, False])
def test_the_cyclic_collector_is_left_as_it_was(team, purpose, enabled):
    contacts = [ContactFactory(team=team)]
    seen_during_chunk = []

    def receiver(sender, **kwargs):
        seen_during_chunk.append(gc.isenabled())

    was = gc.isenabled()
    consent_changed.connect(receiver)
    try:
        gc.enable() if enabled else gc.disable()
        consent_record_many(_awkward_changes(contacts, purpose), chunk_size=2)
        assert gc.isenabled() is enabled
        refused = _awkward_changes(contacts, purpose)
        refused[0] = dataclasses.replace(refused[0], channel="fax")
        with pytest.raises(ConsentBatchRefused):
            consent_record_many(refused)
        assert gc.isenabled() is enabled
    finally:
        consent_changed.disconnect(receiver)
        gc.enable() if was else gc.disable()
    assert seen_during_chunk == [False, False]
