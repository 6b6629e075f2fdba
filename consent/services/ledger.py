"""The consent write API. `consent_record` (one event) and `consent_record_many` (its batch
form, which `consent_record` uses for a batch of one) are the only code that writes the ledger.

They append events to the contacts' hash chains and update the projection in the same
transaction, under a lock on the contacts, so a chain has no forks and the projection never
disagrees with the ledger.

In bulk the per-event Python is what costs, so a chunk makes its rows without
Model.__init__ (InstanceMaker), hashes them with orjson (the same bytes as crm.ledger's
canonical_json), streams evidence and events into binary COPYs while it makes them, upserts
the projection in one statement and keeps the cyclic garbage collector out of the way
(PostgreSQL; other databases get the same rows through bulk_create). What the database's
foreign keys would check row by row, a chunk checks once: its contacts are locked, its
purposes and consent texts looked up in one query (see ConsentEvent.contact).
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import itertools
import operator
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import orjson
from django.db import connection, models, transaction
from django.db.models import OuterRef, Subquery, Value
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from psycopg import postgres, pq
from psycopg.adapt import Dumper

from consent.models import (
    PROJECTION_STATUS,
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    ConsentText,
    Purpose,
    Suppression,
)
from consent.services.reachability import (
    audience_columns_sql,
    consent_reachability_refresh,
    consent_reachability_refresh_address,
)
from consent.signals import consent_changed
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.hashing import address_hash
from crm.imports.lookups import any_of
from crm.imports.writes import InstanceMaker, load, reserve_ids
from crm.ledger import GENESIS_HASH, LedgerEntry, canonical_json
from crm.models import Channel, Contact, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

M = TypeVar("M", bound=models.Model)


class ConsentInvalid(DomainError):
    code = "consent_invalid"


class EvidenceMissing(DomainError):
    code = "evidence_missing"


# Clocks differ; an event stamped a little ahead of ours is still accepted.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)

# `Choices.values` builds a new list on each access; a batch checks every event against these.
_ACTIONS = frozenset(ConsentAction.values)
_SOURCES = frozenset(ConsentSource.values)
_CHANNELS = frozenset(Channel.values)

# Sources whose grants must name the consent text the contact saw.
TEXT_REQUIRED_SOURCES = frozenset({ConsentSource.WEB_FORM, ConsentSource.API, ConsentSource.IMPORT})


@dataclass(frozen=True)
class Evidence:
    """What backs a consent event. Personal data; stored apart from the ledger."""

    consent_text: ConsentText | None = None
    ip_address: str | None = None
    user_agent: str = ""
    source_url: str = ""
    message_text: str = ""
    inbound_message_ref: str = ""
    note: str = ""
    collected_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _check_evidence(*, action: str, source: str, evidence: Evidence, purpose: Purpose) -> None:
    if source == ConsentSource.AGENT and not evidence.note.strip():
        raise EvidenceMissing(
            _("An agent's consent change needs a note saying how the contact asked."),
            field="note",
        )
    if action not in (ConsentAction.GRANTED, ConsentAction.CONFIRMED):
        return
    if source in TEXT_REQUIRED_SOURCES and evidence.consent_text is None:
        raise EvidenceMissing(
            _("A grant needs the version of the consent text the contact agreed to."),
            field="consent_text",
        )
    if source == ConsentSource.IMPORT and evidence.collected_at is None:
        raise EvidenceMissing(
            _("An imported grant needs the date the consent was collected."), field="collected_at"
        )
    if source == ConsentSource.KEYWORD and not evidence.inbound_message_ref:
        raise EvidenceMissing(
            _("A keyword grant needs the inbound message it came from."),
            field="inbound_message_ref",
        )
    if evidence.consent_text is not None and evidence.consent_text.purpose_id != purpose.pk:
        raise ConsentInvalid(
            _("The consent text belongs to another purpose."), field="consent_text"
        )


def _validate(
    *, contact: Contact, purpose: Purpose, channel: str, action: str, source: str
) -> None:
    if action not in _ACTIONS:
        raise ConsentInvalid(_("Unknown action “%(v)s”.") % {"v": action}, field="action")
    if source not in _SOURCES:
        raise ConsentInvalid(_("Unknown source “%(v)s”.") % {"v": source}, field="source")
    if purpose.team_id != contact.team_id:
        raise ConsentInvalid(_("The purpose belongs to another team."), field="purpose")
    if channel not in _CHANNELS:
        raise ConsentInvalid(_("Unknown channel “%(v)s”.") % {"v": channel}, field="channel")
    granting = action in (ConsentAction.GRANTED, ConsentAction.CONFIRMED, ConsentAction.REQUESTED)
    # Withdrawing is always possible (Art. 7(3)), even after a purpose dropped the channel.
    if granting and channel not in (purpose.allowed_channels or []):
        raise ConsentInvalid(
            _("“%(purpose)s” may not be collected on %(channel)s.")
            % {"purpose": purpose.name, "channel": channel},
            field="channel",
        )
    if granting and not purpose.is_active:
        raise ConsentInvalid(_("This purpose is no longer active."), field="purpose")
    if granting and contact.erased_at is not None:
        raise ConsentInvalid(_("The contact was erased."), field="contact")
    if granting and contact.is_restricted:
        raise ConsentInvalid(
            _("Processing is restricted for this contact (GDPR Art. 18)."), field="contact"
        )


@dataclass(frozen=True)
class ConsentChange:
    """One consent event to record: the arguments of `consent_record`, as a value for a batch."""

    contact_id: int
    purpose: Purpose
    channel: str
    action: str
    source: str
    evidence: Evidence
    occurred_at: dt.datetime | None = None


class ConsentBatchRefused(DomainError):
    """Events of a batch broke a rule; the batch was refused and nothing of it was written."""

    code = "consent_batch_refused"

    def __init__(self, refused: list[tuple[int, DomainError]]) -> None:
        self.refused = refused
        index, first = refused[0]
        super().__init__(
            _("%(count)s consent event(s) refused, nothing recorded. Event %(number)s: %(why)s")
            % {"count": len(refused), "number": index + 1, "why": first.message},
            field=first.field,
        )


@dataclass
class ConsentBatchOutcome:
    recorded: int = 0
    # (position in the input, counting from 0, why) of each event left out; only with
    # skip_invalid.
    refused: list[tuple[int, DomainError]] = field(default_factory=list)


# Events per transaction in consent_record_many: large enough to spread the per-chunk queries
# over many events, small enough that the contacts are not locked for long.
CONSENT_BATCH_SIZE = 5000

# Datetimes (and dataclasses) go to `default=str` as json.dumps sends them; str subclasses such
# as ConsentAction values are written as their text by both.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _canonical_json(payload: dict[str, Any]) -> bytes:
    """crm.ledger.canonical_json byte for byte, several times faster.

    orjson writes sorted keys without spaces and non-ASCII as UTF-8, and escapes the same
    characters the same way; the hashed payloads hold only str, int and None. What orjson
    refuses (an int beyond 64 bits, a lone surrogate) goes to canonical_json, which then
    answers or fails exactly as before.
    """
    try:
        return orjson.dumps(payload, default=str, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return canonical_json(payload)


def _seal(entry: LedgerEntry, previous_hash: str) -> None:
    """LedgerEntry.seal with _canonical_json: the same hash, which verify_chain recomputes."""
    entry.previous_hash = previous_hash
    entry.hash = hashlib.sha256(
        previous_hash.encode("ascii") + b"\n" + _canonical_json(entry.chain_payload())
    ).hexdigest()


class _ProjectionRow(NamedTuple):
    """A Consent row as a batch sees it: the stored one, then after each winning event.

    A NamedTuple rather than a frozen dataclass: one is made per event, and it is cheaper.
    """

    status: str
    since: dt.datetime
    valid_until: dt.datetime | None
    decided_at: dt.datetime
    deciding_action: str
    last_event_id: int | None = None
    # Set when an event of this batch decides the row (its pk exists only after the insert).
    last_event: ConsentEvent | None = None


def _projected_status(
    *, purpose: Purpose, channel: str, action: str, source: str, current: _ProjectionRow | None
) -> str | None:
    """The status the event leads to, or None where it leaves a valid grant untouched."""
    unconfirmed = action == ConsentAction.REQUESTED or (
        # UWG §7: on a double opt-in channel only the confirmation grants.
        action == ConsentAction.GRANTED
        and purpose.needs_double_opt_in(channel)
        and source != ConsentSource.DOUBLE_OPT_IN
    )
    if unconfirmed:
        # A reconfirmation request does not take away a consent that is still valid.
        granted_now = current is not None and current.status == ConsentStatus.GRANTED
        return None if granted_now else ConsentStatus.PENDING
    return PROJECTION_STATUS[action]


def _event_wins(new: ConsentEvent, current: _ProjectionRow | None) -> bool:
    """Latest `occurred_at` wins; on a tie a withdrawal wins (never message on a doubt)."""
    if current is None:
        return True
    if new.occurred_at != current.decided_at:
        return new.occurred_at > current.decided_at
    return (
        current.deciding_action != ConsentAction.WITHDRAWN or new.action == ConsentAction.WITHDRAWN
    )


def _projected(
    event: ConsentEvent, purpose: Purpose, current: _ProjectionRow | None
) -> _ProjectionRow | None:
    """The row after `event`, or None where the event leaves the current state as it is."""
    if not _event_wins(event, current):
        return None
    status = _projected_status(
        purpose=purpose,
        channel=event.channel,
        action=event.action,
        source=event.source,
        current=current,
    )
    if status is None:
        return None
    return _ProjectionRow(
        status=status,
        since=current.since
        if current is not None and current.status == status
        else event.occurred_at,
        valid_until=(
            purpose.valid_until(event.occurred_at) if status == ConsentStatus.GRANTED else None
        ),
        decided_at=event.occurred_at,
        deciding_action=event.action,
        last_event=event,
    )


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else ""


def _ensure_may_record(actor: AbstractBaseUser | None, team_id: int) -> None:
    if actor is not None and not crm_selectors.user_may_write(
        actor, "consent.add_consentevent", team_id
    ):
        raise PermissionRefused(_("You may not record consent for this team."))


@transaction.atomic
def consent_record(
    *,
    contact: Contact,
    purpose: Purpose,
    channel: str,
    action: str,
    source: str,
    evidence: Evidence,
    actor: AbstractBaseUser | None = None,
    occurred_at: dt.datetime | None = None,
) -> ConsentEvent:
    """Append one consent event to the contact's chain and update the projection.

    Refuses (and writes nothing) on an unknown purpose or channel, missing evidence, or a
    contact of another team. A late event older than the deciding one is recorded in the
    ledger but does not change the current state.
    """
    change = ConsentChange(
        contact_id=contact.pk,
        purpose=purpose,
        channel=channel,
        action=action,
        source=source,
        evidence=evidence,
        occurred_at=occurred_at,
    )
    # A batch of one: its refusal is raised as it is, not wrapped in ConsentBatchRefused.
    events, refused = _record_chunk([change], actor=actor, first_index=0, skip_invalid=True)
    if refused:
        raise refused[0][1]
    return events[0]


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector for one chunk.

    A chunk keeps about ten objects per event alive until it is written (its changes, rows and
    events) and makes no reference cycles, so the collector has nothing to find; left on, its
    full passes walk every object of the process (all of Django) once or more per chunk,
    measured at some 40% of a chunk's Python time. Reference counting still frees everything
    as usual and the collector catches up after the chunk. A caller that had it off keeps it
    off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def consent_record_many(
    changes: Iterable[ConsentChange],
    *,
    actor: AbstractBaseUser | None = None,
    skip_invalid: bool = False,
    chunk_size: int = CONSENT_BATCH_SIZE,
) -> ConsentBatchOutcome:
    """`consent_record` for many events: the same rules, chains and projection, in bulk.

    Events are appended in input order (per contact, the chain follows the input). Each chunk
    of `chunk_size` events is one transaction: it locks its contacts, reads their chain heads
    and projection rows in one query each and writes evidence, events and projection in bulk.
    A chunk with an invalid event raises ConsentBatchRefused and writes nothing (chunks
    before it stay committed); with `skip_invalid` the invalid events are left out and
    reported in the outcome instead.
    """
    outcome = ConsentBatchOutcome()
    iterator = iter(changes)
    first_index = 0
    while True:
        with _cyclic_gc_paused():
            chunk = list(itertools.islice(iterator, chunk_size))
            if not chunk:
                break
            with transaction.atomic():
                events, refused = _record_chunk(
                    chunk, actor=actor, first_index=first_index, skip_invalid=skip_invalid
                )
        outcome.recorded += len(events)
        outcome.refused.extend(refused)
        first_index += len(chunk)
    return outcome


def _record_chunk(
    changes: list[ConsentChange],
    *,
    actor: AbstractBaseUser | None,
    first_index: int,
    skip_invalid: bool,
) -> tuple[list[ConsentEvent], list[tuple[int, DomainError]]]:
    """Record a batch in the caller's transaction; the recorded events and the refusals."""
    now = timezone.now()
    contact_ids = sorted({change.contact_id for change in changes})
    # Lock the contacts (in id order, so two batches cannot deadlock): their chains must not
    # fork when events arrive at once. Thousands per chunk: made without Model.__init__, with
    # the fields the rules read (any other loads when read, as with .only()).
    locked = Contact.objects.select_for_update().filter(any_of("pk", contact_ids)).order_by("pk")
    contacts_by_id = {
        contact.pk: contact
        for contact in load(locked, ("id", "team", "erased_at", "is_restricted"))
    }
    for team_id in {contact.team_id for contact in contacts_by_id.values()}:
        _ensure_may_record(actor, team_id)

    references = _existing_references(changes)
    accepted: list[ConsentChange] = []
    refused: list[tuple[int, DomainError]] = []
    for position, change in enumerate(changes, start=first_index):
        try:
            _check_change(change, contacts_by_id.get(change.contact_id), references, now=now)
        except DomainError as error:
            refused.append((position, error))
        else:
            accepted.append(change)
    if refused and not skip_invalid:
        raise ConsentBatchRefused(refused)
    if not accepted:
        return [], refused

    heads = _chain_heads(contact_ids)
    projection = _projection_rows(contact_ids)
    new_evidence = InstanceMaker(ConsentEvidence, actor=actor, actor_label=_actor_label(actor))
    evidences: list[ConsentEvidence] = []
    with _inserting(ConsentEvidence, len(accepted)) as insert_evidence:
        for change in accepted:
            stored_evidence = _stored_evidence(new_evidence, change.evidence)
            insert_evidence(stored_evidence)
            evidences.append(stored_evidence)

    # Keys in the order the batch first changed them: the order of the projection's inserts.
    changed_keys: dict[tuple[int, int, str], None] = {}
    new_event = InstanceMaker(ConsentEvent, recorded_at=now)
    # The event caches its contact and purpose, as ConsentEvent(contact=…, purpose=…) would;
    # not its evidence, which it gets by id.
    cache_contact = ConsentEvent.contact.field.set_cached_value
    cache_purpose = ConsentEvent.purpose.field.set_cached_value
    events: list[ConsentEvent] = []
    # Nothing in this loop queries: the contacts and purposes are loaded, the heads and the
    # projection read above.
    with _inserting(ConsentEvent, len(accepted)) as insert_event:
        for change, stored_evidence in zip(accepted, evidences, strict=True):
            contact = contacts_by_id[change.contact_id]
            purpose = change.purpose
            purpose_id = purpose.pk
            previous_sequence, previous_hash = heads.get(change.contact_id, (0, GENESIS_HASH))
            event = new_event(
                contact_id=change.contact_id,
                team_id=contact.team_id,
                purpose_id=purpose_id,
                channel=change.channel,
                action=change.action,
                source=change.source,
                evidence_id=stored_evidence.pk,
                evidence_digest=stored_evidence.digest,
                occurred_at=change.occurred_at or now,
                sequence=previous_sequence + 1,
            )
            cache_contact(event, contact)
            cache_purpose(event, purpose)
            _seal(event, previous_hash)
            insert_event(event)
            heads[change.contact_id] = (event.sequence, event.hash)
            key = (change.contact_id, purpose_id, change.channel)
            row = _projected(event, purpose, projection.get(key))
            if row is not None:
                projection[key] = row
                changed_keys[key] = None
            events.append(event)
    _write_projection({key: projection[key] for key in changed_keys})
    consent_changed.send(sender=ConsentEvent, events=events)
    return events, refused


class _References(NamedTuple):
    """The ids of a batch's purposes and consent texts that exist."""

    purposes: frozenset[int]
    texts: frozenset[int]


def _existing_references(changes: list[ConsentChange]) -> _References:
    """Which of the batch's purposes and consent texts exist, in one query.

    The ledger has no database foreign keys to them (see ConsentEvent.contact), so this is
    the check that keeps an event from naming a purpose or text that is not there (an
    unsaved one, or one deleted since the caller loaded it).
    """
    purpose_ids = {change.purpose.pk for change in changes} - {None}
    text_ids = {
        change.evidence.consent_text.pk
        for change in changes
        if change.evidence.consent_text is not None
    } - {None}
    purposes = Purpose.objects.filter(any_of("pk", sorted(purpose_ids)))
    texts = ConsentText.objects.filter(any_of("pk", sorted(text_ids)))
    rows = (
        purposes.order_by()
        .values_list("pk", Value(False))
        .union(texts.order_by().values_list("pk", Value(True)), all=True)
    )
    found: dict[bool, set[int]] = {False: set(), True: set()}
    for pk, is_text in rows:
        found[bool(is_text)].add(pk)
    return _References(purposes=frozenset(found[False]), texts=frozenset(found[True]))


def _check_change(
    change: ConsentChange,
    contact: Contact | None,
    references: _References,
    *,
    now: dt.datetime,
) -> None:
    if contact is None:
        raise ConsentInvalid(
            _("There is no contact with id %(id)s.") % {"id": change.contact_id}, field="contact"
        )
    if change.purpose.pk not in references.purposes:
        raise ConsentInvalid(
            _("There is no purpose with id %(id)s.") % {"id": change.purpose.pk}, field="purpose"
        )
    text = change.evidence.consent_text
    if text is not None and text.pk not in references.texts:
        raise ConsentInvalid(
            _("There is no consent text with id %(id)s.") % {"id": text.pk}, field="consent_text"
        )
    if change.occurred_at is not None and change.occurred_at > now + FUTURE_TOLERANCE:
        raise ConsentInvalid(_("The event lies in the future."), field="occurred_at")
    _validate(
        contact=contact,
        purpose=change.purpose,
        channel=change.channel,
        action=change.action,
        source=change.source,
    )
    _check_evidence(
        action=change.action, source=change.source, evidence=change.evidence, purpose=change.purpose
    )


def _stored_evidence(new_evidence: InstanceMaker, evidence: Evidence) -> ConsentEvidence:
    """The evidence row (its actor set by `new_evidence`), with its digest."""
    stored: ConsentEvidence = new_evidence(
        consent_text_id=evidence.consent_text.pk if evidence.consent_text is not None else None,
        ip_address=evidence.ip_address or None,
        user_agent=evidence.user_agent[:500],
        source_url=evidence.source_url[:500],
        message_text=evidence.message_text,
        inbound_message_ref=evidence.inbound_message_ref[:200],
        note=evidence.note,
        collected_at=evidence.collected_at,
    )
    stored.digest = hashlib.sha256(_canonical_json(stored.digest_payload())).hexdigest()
    return stored


# One index probe per contact (the last entry of its (contact, sequence) key, read backwards):
# PostgreSQL plans this the same whatever it believes of the ledger's size. The general form
# below leaves the plan to the statistics, and on a ledger that grew since it was last
# analyzed (a bulk import) PostgreSQL read the whole table for every chunk.
_CHAIN_HEADS = """
    SELECT chain.contact_id, head.sequence, head.hash
    FROM unnest(%s::bigint[]) AS chain(contact_id)
    CROSS JOIN LATERAL (
        SELECT event.sequence, event.hash FROM {events} event
        WHERE event.contact_id = chain.contact_id
        ORDER BY event.sequence DESC
        LIMIT 1
    ) AS head
"""


def _chain_heads(contact_ids: list[int]) -> dict[int, tuple[int, str]]:
    """(sequence, hash) of each contact's last event; read under the contacts' locks."""
    if connection.vendor == "postgresql":
        events = connection.ops.quote_name(ConsentEvent._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(_CHAIN_HEADS.format(events=events), [contact_ids])
            heads = cursor.fetchall()
    else:
        last_sequence = (
            ConsentEvent.objects.filter(contact_id=OuterRef("contact_id"))
            .order_by("-sequence")
            .values("sequence")[:1]
        )
        heads = (
            ConsentEvent.objects.filter(
                any_of("contact_id", contact_ids), sequence=Subquery(last_sequence)
            )
            .order_by()
            .values_list("contact_id", "sequence", "hash")
        )
    return {contact_id: (sequence, hash_) for contact_id, sequence, hash_ in heads}


def _projection_rows(contact_ids: list[int]) -> dict[tuple[int, int, str], _ProjectionRow]:
    """The contacts' Consent rows, locked, with when and how their deciding events decided.

    The deciding events are read by primary key in a second query rather than joined: as a
    join PostgreSQL may hash the whole ledger (it did, at 200,000 events) to find a few
    thousand rows.
    """
    rows = list(
        Consent.objects.select_for_update()
        .filter(any_of("contact_id", contact_ids))
        .order_by()
        .values_list(
            "contact_id", "purpose_id", "channel", "status", "since", "valid_until", "last_event_id"
        )
    )
    deciding = {
        pk: (occurred_at, action)
        for pk, occurred_at, action in ConsentEvent.objects.filter(
            any_of("pk", sorted({row[-1] for row in rows}))
        )
        .order_by()
        .values_list("pk", "occurred_at", "action")
    }
    projection = {}
    for contact_id, purpose_id, channel, status, since, valid_until, last_event_id in rows:
        decided_at, deciding_action = deciding[last_event_id]
        projection[contact_id, purpose_id, channel] = _ProjectionRow(
            status=status,
            since=since,
            valid_until=valid_until,
            decided_at=decided_at,
            deciding_action=deciding_action,
            last_event_id=last_event_id,
        )
    return projection


# The decided rows arrive as one JSON array (orjson writes it far faster than the driver quotes
# thousands of parameters) and are upserted in one statement. A new row gets its audience
# columns (team, reachable) from the one rule in consent.services.reachability as it is
# inserted; an existing row keeps them (a status change does not change them, and every write
# to their inputs refreshes them).
_UPSERT_PROJECTION = """
    INSERT INTO consent_consent
        (contact_id, purpose_id, channel, status, since, valid_until, last_event_id, updated_at,
         team_id, reachable)
    SELECT row.contact_id, row.purpose_id, row.channel, row.status, row.since, row.valid_until,
           row.last_event_id, %s, {team}, {reachable}
    FROM json_to_recordset(%s::json) AS row(
        contact_id bigint, purpose_id bigint, channel varchar, status varchar,
        since timestamptz, valid_until timestamptz, last_event_id bigint
    )
    ON CONFLICT (contact_id, purpose_id, channel) DO UPDATE
    SET status = EXCLUDED.status, since = EXCLUDED.since, valid_until = EXCLUDED.valid_until,
        last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at
"""


def _write_projection(rows: dict[tuple[int, int, str], _ProjectionRow]) -> None:
    """Insert or update the decided Consent rows in one statement."""
    decided = [
        {
            "contact_id": contact_id,
            "purpose_id": purpose_id,
            "channel": channel,
            "status": row.status,
            "since": row.since,
            "valid_until": row.valid_until,
            "last_event_id": row.last_event.pk if row.last_event else row.last_event_id,
        }
        for (contact_id, purpose_id, channel), row in rows.items()
    ]
    if not decided:
        return
    if connection.vendor == "postgresql":
        team, reachable = audience_columns_sql("row.contact_id", "row.channel")
        with connection.cursor() as cursor:
            cursor.execute(
                _UPSERT_PROJECTION.format(team=team, reachable=reachable),
                [timezone.now(), orjson.dumps(decided).decode()],
            )
        return
    Consent.objects.bulk_create(
        [Consent(**values) for values in decided],
        update_conflicts=True,
        unique_fields=["contact", "purpose", "channel"],
        update_fields=["status", "since", "valid_until", "last_event", "updated_at"],
    )
    # The rows just inserted (team still null) get their audience columns; updated ones keep
    # theirs.
    consent_reachability_refresh(
        contact_ids={values["contact_id"] for values in decided}, only_new=True
    )


class _InetFromText(Dumper):
    """An IP address held as text (as Evidence and ConsentEvidence hold it), dumped in
    PostgreSQL's binary inet format for a binary COPY.

    psycopg's own binary inet dumper takes ipaddress objects, and making one costs several
    times what this costs. A malformed address raises ValueError, as saving it through the ORM
    does.
    """

    format = pq.Format.BINARY
    oid = postgres.types["inet"].oid

    def dump(self, obj: str) -> bytes:
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in obj else socket.AF_INET, obj)
        except OSError:
            # What the ORM raises for it (ipaddress.ip_address, in adapt_ipaddressfield_value).
            raise ValueError(f"{obj!r} does not appear to be an IPv4 or IPv6 address") from None
        # utils/inet.h: family (PostgreSQL's own codes, 2 for IPv4 and 3 for IPv6), prefix
        # bits, is_cidr, address length, then the address.
        return bytes((2 if len(packed) == 4 else 3, len(packed) * 8, 0, len(packed))) + packed


@contextmanager
def _inserting(model: type[M], count: int) -> Iterator[Callable[[M], None]]:
    """A function that inserts `count` new instances of `model`, one per call, setting ids.

    On PostgreSQL the ids come from the table's sequence in one query and each row goes into
    a COPY as it is passed, so the server stores rows while the caller makes the next ones;
    the COPY ends with the block, and the block must not query meanwhile. Elsewhere the
    instances are kept and bulk_create inserts them when the block ends, so callers read the
    ids only after the block.
    """
    if connection.vendor != "postgresql":
        instances: list[M] = []
        yield instances.append
        model._default_manager.bulk_create(instances)
        return
    table = model._meta.db_table
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    # The instances are complete (made by InstanceMaker): each row straight from __dict__.
    row_of = operator.itemgetter(*(f.attname for f in fields))
    pk_name = model._meta.pk.attname
    alias = connection.alias
    ids = iter(reserve_ids(model, count))
    with connection.cursor() as cursor:
        # Binary, with each column's type given: the values are dumped by type rather than
        # formatted as text, several times faster for datetimes (and the server parses less).
        cursor.cursor.adapters.register_dumper(None, _InetFromText)
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([f.db_type(connection).split("(")[0] for f in fields])

            def insert(instance: M) -> None:
                values = instance.__dict__
                values[pk_name] = next(ids)
                instance._state.adding = False
                instance._state.db = alias
                copy.write_row(row_of(values))

            yield insert


@transaction.atomic
def suppression_add(
    *,
    address: str,
    channel: str = "",
    reason: str = Suppression.Reason.MANUAL,
    team: Team | None = None,
    note: str = "",
) -> Suppression:
    """Never message this address again, in any team. Idempotent."""
    entry, created = Suppression.objects.get_or_create(
        address_hash=address_hash(address),
        defaults={"channel": channel, "reason": reason, "team": team, "note": note},
    )
    if created:
        # Whoever holds the address (in any team) may no longer be reachable on it.
        consent_reachability_refresh_address(address_hash=entry.address_hash)
    return entry


def is_suppressed(address: str) -> bool:
    return Suppression.objects.filter(address_hash=address_hash(address)).exists()
