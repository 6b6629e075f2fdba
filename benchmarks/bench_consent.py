"""Consent recorded through the ledger in bulk: events per second through the real batch
service (consent.services.consent_record_many, which contact imports use), beside the naive
path (consent_record, one event per call) on a small sample.

Contacts are generated inside PostgreSQL (generate_series); the events are ConsentChange
values with evidence (consent text, IP, user agent, note, inbound message), generated while
they are recorded: 2.5 events per contact on average, grants, double opt-in requests and
confirmations, withdrawals and late (older) grants across two purposes and three channels.

Correct means: exactly `size` events and evidence rows, every chain linked without a gap (SQL
over all events), the hashes and evidence digests of a sample of chains recomputed
(consent_ledger_verify), and the projection equal to the latest state per contact, purpose
and channel as computed by hand-written SQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator
from typing import Any

from django.db import connection
from django.utils import timezone

from benchmarks.harness import Figure, median, peak_rss_mb
from consent.models import ConsentAction, ConsentSource, ConsentText, Purpose
from consent.selectors import consent_ledger_verify
from consent.services import ConsentChange, Evidence, consent_record, consent_record_many
from crm.ledger import GENESIS_HASH, sha256_hex
from crm.models import Contact, Team

TARGET_EVENTS_PER_SECOND = 15_000.0
EVENTS_PER_CONTACT = 2.5
NAIVE_SAMPLE = 2_000
VERIFIED_CHAINS = 200

# Per contact (by its position modulo 4): (purpose, channel, action, source, minutes after the
# contact's first event). The second pattern's grant arrives after the withdrawal but is older:
# it is recorded and must not change the state. 10 events per 4 contacts.
PATTERNS: tuple[tuple[tuple[str, str, str, str, int], ...], ...] = (
    (
        ("newsletter", "email", ConsentAction.REQUESTED, ConsentSource.WEB_FORM, 0),
        ("newsletter", "email", ConsentAction.CONFIRMED, ConsentSource.DOUBLE_OPT_IN, 5),
        ("offers", "whatsapp", ConsentAction.GRANTED, ConsentSource.IMPORT, 10),
    ),
    (
        ("newsletter", "sms", ConsentAction.WITHDRAWN, ConsentSource.API, 20),
        ("newsletter", "sms", ConsentAction.GRANTED, ConsentSource.WEB_FORM, 3),
    ),
    (
        ("offers", "email", ConsentAction.GRANTED, ConsentSource.WEB_FORM, 0),
        ("offers", "whatsapp", ConsentAction.GRANTED, ConsentSource.KEYWORD, 1),
        ("offers", "email", ConsentAction.WITHDRAWN, ConsentSource.API, 30),
    ),
    (
        # A plain grant on a double opt-in channel stays pending.
        ("newsletter", "email", ConsentAction.GRANTED, ConsentSource.WEB_FORM, 0),
        ("offers", "sms", ConsentAction.WITHDRAWN, ConsentSource.KEYWORD, 2),
    ),
)


def _setup() -> tuple[Team, dict[str, Purpose], dict[str, ConsentText]]:
    team = Team.objects.create(name="Bench Consent", slug="bench-consent")
    purposes = {
        "newsletter": Purpose.objects.create(
            team=team,
            key="newsletter",
            name="Newsletter",
            allowed_channels=["email", "sms", "whatsapp"],
            double_opt_in_channels=["email"],
            validity_months=24,
        ),
        "offers": Purpose.objects.create(
            team=team, key="offers", name="Offers", allowed_channels=["email", "sms", "whatsapp"]
        ),
    }
    texts = {
        key: ConsentText.objects.create(
            purpose=purpose,
            version=1,
            language="de",
            body=f"Ja, ich möchte {purpose.name} erhalten.",
            content_hash=sha256_hex(purpose.name),
        )
        for key, purpose in purposes.items()
    }
    return team, purposes, texts


def _contacts(team: Team, count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT %s, '', 'Vorname' || g, 'Nachname' || g, 'de', 'Europe/Berlin', '', '',
                   'email', '{}'::jsonb, 'CONSENT' || g || '-' || %s, false, NULL, now(), now()
            FROM generate_series(1, %s) AS g
            RETURNING id
            """,
            [team.pk, time.monotonic_ns(), count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _evidence(
    source: str, action: str, text: ConsentText, position: int, at: dt.datetime
) -> Evidence:
    ip_address = f"198.51.100.{position % 250 + 1}"
    if source == ConsentSource.KEYWORD:
        word = "STOP" if action == ConsentAction.WITHDRAWN else "ANGEBOTE"
        return Evidence(message_text=word, inbound_message_ref=f"wamid.bench{position}")
    if source == ConsentSource.API and action == ConsentAction.WITHDRAWN:
        return Evidence(note="Withdrawn through the customer portal API", ip_address=ip_address)
    return Evidence(
        consent_text=text,
        ip_address=ip_address,
        user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        source_url="https://kino.example.org/newsletter",
        collected_at=at if source == ConsentSource.IMPORT else None,
        note=f"bench contact #{position}" if source == ConsentSource.IMPORT else "",
    )


def _changes(
    contact_ids: list[int],
    purposes: dict[str, Purpose],
    texts: dict[str, ConsentText],
    base: dt.datetime,
) -> Iterator[ConsentChange]:
    for position, contact_id in enumerate(contact_ids):
        first = base + dt.timedelta(seconds=position)
        for key, channel, action, source, minutes in PATTERNS[position % len(PATTERNS)]:
            at = first + dt.timedelta(minutes=minutes)
            yield ConsentChange(
                contact_id=contact_id,
                purpose=purposes[key],
                channel=channel,
                action=action,
                source=source,
                evidence=_evidence(source, action, texts[key], position, at),
                occurred_at=at,
            )


def _reset_ledger() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE consent_consent, consent_consentevent, consent_consentevidence CASCADE"
        )


def _chain_gaps() -> int:
    """Events whose previous_hash is not the hash of the event before them (all chains)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*)
            FROM consent_consentevent e
            LEFT JOIN consent_consentevent p
                   ON p.contact_id = e.contact_id AND p.sequence = e.sequence - 1
            WHERE (e.sequence = 1 AND e.previous_hash <> %s)
               OR (e.sequence > 1 AND p.hash IS DISTINCT FROM e.previous_hash)
            """,
            [GENESIS_HASH],
        )
        return cursor.fetchone()[0]


def _projection_mismatches() -> tuple[int, int, int]:
    """(expected rows, projection rows, rows that differ) against hand-written SQL.

    The deciding event per contact, purpose and channel is the latest by occurred_at (a
    withdrawal wins a tie, then the later position in the chain); a `requested` event, or a
    grant on a double opt-in channel that did not come from the confirmation, is pending.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH expected AS (
                SELECT DISTINCT ON (e.contact_id, e.purpose_id, e.channel)
                       e.contact_id, e.purpose_id, e.channel, e.id AS event_id,
                       CASE
                           WHEN e.action = 'requested' THEN 'pending'
                           WHEN e.action = 'granted' AND e.source <> 'double_opt_in'
                                AND p.double_opt_in_channels ? e.channel THEN 'pending'
                           WHEN e.action IN ('granted', 'confirmed') THEN 'granted'
                           ELSE e.action
                       END AS status
                FROM consent_consentevent e
                JOIN consent_purpose p ON p.id = e.purpose_id
                ORDER BY e.contact_id, e.purpose_id, e.channel, e.occurred_at DESC,
                         (e.action = 'withdrawn') DESC, e.sequence DESC
            )
            SELECT
                (SELECT count(*) FROM expected),
                (SELECT count(*) FROM consent_consent),
                (SELECT count(*)
                 FROM expected x
                 LEFT JOIN consent_consent c
                        ON c.contact_id = x.contact_id AND c.purpose_id = x.purpose_id
                       AND c.channel = x.channel
                 WHERE c.id IS NULL OR c.status <> x.status OR c.last_event_id <> x.event_id)
            """
        )
        return cursor.fetchone()


def _verify_sample(contact_ids: list[int]) -> tuple[int, int]:
    """(chains intact, events checked) for VERIFIED_CHAINS contacts spread over the range."""
    step = max(1, len(contact_ids) // VERIFIED_CHAINS)
    intact = checked = 0
    for contact_id in contact_ids[::step][:VERIFIED_CHAINS]:
        verification = consent_ledger_verify(contact_id)
        intact += verification.broken is None
        checked += verification.events
    return intact, checked


def _counts() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM consent_consentevent),"
            " (SELECT count(*) FROM consent_consentevidence)"
        )
        return cursor.fetchone()


def _naive(
    team: Team, purposes: dict[str, Purpose], texts: dict[str, ConsentText], size: int
) -> tuple[float, int, int]:
    """Seconds, events and intact chains for consent_record called once per event."""
    contact_ids = _contacts(team, int(size / EVENTS_PER_CONTACT) + 1)
    contacts = Contact.objects.in_bulk(contact_ids)
    base = timezone.now() - dt.timedelta(days=300)
    changes = list(itertools.islice(_changes(contact_ids, purposes, texts, base), size))
    started = time.perf_counter()
    for change in changes:
        consent_record(
            contact=contacts[change.contact_id],
            purpose=change.purpose,
            channel=change.channel,
            action=change.action,
            source=change.source,
            evidence=change.evidence,
            occurred_at=change.occurred_at,
        )
    seconds = time.perf_counter() - started
    intact, _checked = _verify_sample(contact_ids)
    return seconds, len(changes), intact


def run(size: int, runs: int) -> list[Figure]:
    team, purposes, texts = _setup()
    contact_ids = _contacts(team, int(size / EVENTS_PER_CONTACT) + 1)
    timings = []
    for _run in range(runs):
        _reset_ledger()
        base = timezone.now() - dt.timedelta(days=400)
        changes = itertools.islice(_changes(contact_ids, purposes, texts, base), size)
        started = time.perf_counter()
        outcome = consent_record_many(changes)
        timings.append(time.perf_counter() - started)
    events, evidence = _counts()
    expected_rows, projection_rows, mismatches = _projection_mismatches()
    intact, verified_events = _verify_sample(contact_ids)
    notes: dict[str, Any] = {
        "events": events,
        "evidence": evidence,
        "recorded": outcome.recorded,
        "refused": len(outcome.refused),
        "contacts": len(contact_ids),
        "chain_gaps": _chain_gaps(),
        "projection_rows": projection_rows,
        "projection_expected": expected_rows,
        "projection_mismatches": mismatches,
        "chains_verified": min(VERIFIED_CHAINS, len(contact_ids)),
        "chains_intact": intact,
        "verified_events": verified_events,
        "seconds": [round(t, 2) for t in timings],
        "us_per_event": round(median(timings) / size * 1e6, 1),
    }
    notes["correct"] = (
        events == evidence == outcome.recorded == size
        and notes["chain_gaps"] == 0
        and projection_rows == expected_rows
        and mismatches == 0
        and intact == notes["chains_verified"]
    )
    bulk = Figure(
        name="consent ledger bulk record (events/s)",
        size=size,
        unit="ev/s",
        median=size / median(timings),
        target=TARGET_EVENTS_PER_SECOND,
        higher_is_better=True,
        runs=[size / t for t in timings],
        peak_rss_mb=peak_rss_mb(),
        notes=notes,
    )

    sample = min(NAIVE_SAMPLE, size)
    seconds, naive_events, naive_intact = _naive(team, purposes, texts, sample)
    naive = Figure(
        name="consent ledger naive consent_record per event (events/s)",
        size=naive_events,
        unit="ev/s",
        median=naive_events / seconds,
        target=TARGET_EVENTS_PER_SECOND,
        higher_is_better=True,
        runs=[naive_events / seconds],
        notes={
            "sample": f"{naive_events} events one consent_record call each, rate extrapolated",
            "seconds": round(seconds, 2),
            "us_per_event": round(seconds / naive_events * 1e6, 1),
            "chains_intact": naive_intact,
        },
    )
    return [bulk, naive]
