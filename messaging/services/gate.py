"""The send gate: the one place that decides whether a message may leave, and why.

Every outbound path (API, admin, campaigns, automation, double opt-in, agents) reaches it
through `message_send`, and the delivery worker asks it again when it claims a queued message,
so a STOP received mid-campaign stops the rest. The decision and the inputs it saw are stored
on the message (`Message.gate_decision`).

The rules are one pure function of the request and the facts read for it. The facts are read
for a whole batch of requests in a constant number of queries (`send_gate_evaluate_many`, what
campaign batches use); a single decision is a batch of one, so both forms apply the same rules.
What requests of a batch share (account, version, purpose, quiet hours per time zone) is worked
out once per batch (`_Kind`); on PostgreSQL the facts query is a prepared statement, run on
one cursor per connection.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import weakref
import zoneinfo
from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Final, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals import selectors as approval_selectors
from approvals.models import MessageTemplate, TemplateVersion
from consent.models import Consent, ConsentStatus, Purpose, Suppression
from crm.hashing import address_hash
from crm.models import Channel, Contact, ContactPoint
from messaging.models import (
    COUNTED_STATUSES,
    ChannelAccount,
    Conversation,
    Direction,
    Message,
)

# Refusal reasons (machine readable, stable; API clients branch on them).
ACCOUNT_INACTIVE: Final = "account_inactive"
ACCOUNT_OTHER_TEAM: Final = "account_other_team"
CHANNEL_MISMATCH: Final = "channel_mismatch"
CONTACT_ERASED: Final = "contact_erased"
CONTACT_RESTRICTED: Final = "contact_restricted"
NO_ADDRESS: Final = "no_address"
SUPPRESSED: Final = "suppressed"
NO_CONSENT: Final = "no_consent"
OUTSIDE_SERVICE_WINDOW: Final = "outside_service_window"
NO_DIALOG: Final = "no_dialog"
FREQUENCY_CAP: Final = "frequency_cap"
QUIET_HOURS: Final = "quiet_hours"

REASON_MESSAGES: Final[dict[str, Any]] = {
    ACCOUNT_INACTIVE: _("The channel account is switched off."),
    ACCOUNT_OTHER_TEAM: _("The channel account belongs to another team than the contact."),
    CHANNEL_MISMATCH: _("The template is for another channel than the account."),
    CONTACT_ERASED: _("The contact's data was erased on request."),
    CONTACT_RESTRICTED: _("Processing of this contact's data is restricted."),
    NO_ADDRESS: _("The contact has no address on this channel."),
    SUPPRESSED: _("The address is on the suppression list."),
    NO_CONSENT: _("The contact has no current consent for this purpose on this channel."),
    approval_selectors.TEMPLATE_NOT_APPROVED: _("The template version is not approved."),
    approval_selectors.TEMPLATE_EXPIRED: _("The template version's approval has expired."),
    approval_selectors.TEMPLATE_NOT_YET_VALID: _("The template version is not valid yet."),
    approval_selectors.PROVIDER_NOT_APPROVED: _(
        "The provider has not approved the template version."
    ),
    approval_selectors.TEMPLATE_INACTIVE: _("The template is switched off."),
    OUTSIDE_SERVICE_WINDOW: _(
        "The 24-hour service window is closed: only an approved template may be sent."
    ),
    NO_DIALOG: _("Free text goes only to contacts who wrote to us; send an approved template."),
    FREQUENCY_CAP: _("The contact already received the most messages allowed for this purpose."),
    QUIET_HOURS: _("Deferred until the contact's quiet hours end."),
}


_Frozen = TypeVar("_Frozen")


@functools.cache
def _field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def frozen_instance(cls: type[_Frozen], **values: Any) -> _Frozen:
    """`cls(**values)` for a frozen dataclass whose fields without a plain default are all
    in `values` (a default_factory is not called). A frozen dataclass's __init__ sets each
    field through object.__setattr__: building a request and its decision that way was most
    of a batch decision's Python time. The instance is as frozen and compares the same."""
    instance = object.__new__(cls)
    state = instance.__dict__
    state.update(_field_defaults(cls))
    state.update(values)
    return instance


@dataclass(frozen=True)
class GateDecision:
    """Allowed or refused (with `reason`), possibly deferred, and everything it was based on."""

    allowed: bool
    reason: str | None = None
    deferred_until: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    checks: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    # The request this decision answers, so a caller handed a decision can check it is its own.
    request: SendRequest | None = field(default=None, compare=False, repr=False)

    @property
    def message(self) -> str:
        return str(REASON_MESSAGES.get(self.reason or "", "")) if self.reason else ""

    def as_record(self) -> dict[str, Any]:
        """JSON for the message row and the API's 422 body."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "message": self.message,
            "deferred_until": self.deferred_until.isoformat() if self.deferred_until else None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "checks": self.checks,
            "inputs": self.inputs,
        }


@dataclass(frozen=True, kw_only=True)
class SendRequest:
    """What is to be sent, to whom, through which account (already loaded objects)."""

    contact: Contact
    account: ChannelAccount
    template_version: TemplateVersion | None = None
    conversation: Conversation | None = None
    address: str | None = None
    # A double opt-in confirmation asks for consent; it cannot require it.
    opt_in_confirmation: bool = False
    # Re-checks of a queued message must not count the message itself against the cap.
    message_id: int | None = None

    # Cached: the rules ask several times per decision, and a frozen request keeps its version.
    @functools.cached_property
    def purpose(self) -> Purpose | None:
        """Whose consent is needed: the template's purpose; none for service messages."""
        if self.template_version is None:
            return None
        return self.template_version.template.purpose

    @property
    def question(self) -> tuple[Any, ...]:
        """What the answer depends on besides time: equal questions get equal decisions."""
        version = self.template_version
        # The conversation matters only for free text (the service window).
        conversation = self.conversation.pk if self.conversation and version is None else None
        return (
            self.contact.pk,
            self.account.pk,
            version.pk if version else None,
            conversation,
            self.address or None,
            self.opt_in_confirmation,
            self.message_id,
        )


def _primary_point(contact: Contact, channel: str) -> QuerySet[ContactPoint]:
    return ContactPoint.objects.filter(contact=contact, channel=channel).order_by(
        "-is_primary", "id"
    )


def primary_address(contact: Contact, channel: str) -> str | None:
    return _primary_point(contact, channel).values_list("address", flat=True).first()


@dataclass(frozen=True)
class _Facts:
    """What a batch read besides each contact's row of the facts query (see _FactsShape)."""

    # Hashes of the addresses named in requests that are suppressed.
    suppressed: set[str]
    # Requests' own messages (delivery re-checks) counted in their contact's row.
    counted_self: set[int]
    # A raw datetime column as the ORM would return it.
    read_datetime: Callable[[Any], dt.datetime | None]


def _loaded_version(version: TemplateVersion) -> bool:
    """True when the rules can read the version's template and purpose without a query."""
    if not TemplateVersion.template.is_cached(version):
        return False
    template = version.template
    return template.purpose_id is None or MessageTemplate.purpose.is_cached(template)


def _with_loaded_versions(requests: Sequence[SendRequest]) -> list[SendRequest]:
    """The requests with template, purpose loaded for every version (one query at most)."""
    # A batch shares a few version objects: each is looked at once.
    versions = {id(r.template_version): r.template_version for r in requests}
    missing = {
        version.pk
        for version in versions.values()
        if version is not None and not _loaded_version(version)
    }
    if not missing:
        return list(requests)
    loaded = TemplateVersion.objects.select_related("template", "template__purpose").in_bulk(
        missing
    )
    return [
        replace(request, template_version=loaded[request.template_version.pk])
        if request.template_version is not None and request.template_version.pk in missing
        else request
        for request in requests
    ]


def _frequency_capped(request: SendRequest) -> Purpose | None:
    purpose = request.purpose
    return purpose if purpose is not None and purpose.frequency_cap else None


def _needs_consent(request: SendRequest) -> bool:
    return request.purpose is not None and not request.opt_in_confirmation


def _cap_since(purpose: Purpose, at: dt.datetime) -> dt.datetime:
    return at - dt.timedelta(hours=purpose.frequency_period_hours)


def _counted_messages() -> QuerySet[Message]:
    return Message.objects.filter(direction=Direction.OUTBOUND, status__in=COUNTED_STATUSES)


# What the gate records of a grant, in the order the facts query reads them.
_GRANT_COLUMNS: Final = ("id", "last_event_id", "since", "valid_until")
# Per channel: the primary point's address, its stored hash, whether that is suppressed.
_POINT_COLUMNS: Final = 3


def _literal(value: str) -> str:
    """A choice value of our code as an SQL string literal (letters and underscores only):
    constants are written into the facts query rather than sent with every execution."""
    if not value.replace("_", "").isalpha():
        raise ValueError(f"not a choice value: {value!r}")
    return f"'{value}'"


# The counted statuses in a stable order, so equal shapes give equal SQL text.
_COUNTED: Final = ", ".join(_literal(status) for status in sorted(COUNTED_STATUSES))


@dataclass(frozen=True)
class _FactsShape:
    """What a batch reads per contact: primary address and its suppression per channel,
    current grant per (purpose, channel), counted messages per capped purpose. It grows with
    the channels and purposes of a batch, never with its length."""

    channels: tuple[str, ...]
    grants: tuple[tuple[int, str], ...]
    capped: tuple[Purpose, ...]

    @classmethod
    def of(cls, kinds: Collection[_Kind]) -> _FactsShape:
        """The shape for a batch's kinds of request; places each kind's columns."""
        capped = {kind.capped for kind in kinds if kind.capped is not None}
        shape = cls(
            channels=tuple(sorted({kind.channel for kind in kinds if kind.reads_address})),
            grants=tuple(
                sorted({(kind.purpose.pk, kind.channel) for kind in kinds if kind.needs_consent})
            ),
            capped=tuple(sorted(capped, key=lambda purpose: purpose.pk)),
        )
        for kind in kinds:
            shape._place(kind)
        return shape

    def _place(self, kind: _Kind) -> None:
        # Column positions in a row of _facts_sql: the contact id, then _POINT_COLUMNS per
        # channel, _GRANT_COLUMNS per grant, one per capped purpose.
        grants = 1 + _POINT_COLUMNS * len(self.channels)
        sent = grants + len(_GRANT_COLUMNS) * len(self.grants)
        if kind.reads_address:
            kind.address_column = 1 + _POINT_COLUMNS * self.channels.index(kind.channel)
        if kind.needs_consent:
            index = self.grants.index((kind.purpose.pk, kind.channel))
            kind.grant_column = grants + len(_GRANT_COLUMNS) * index
        if kind.capped is not None:
            kind.sent_column = sent + self.capped.index(kind.capped)

    def rows(
        self, db: BaseDatabaseWrapper, contact_ids: set[int], at: dt.datetime
    ) -> dict[int, tuple[Any, ...]]:
        """Contact id -> its row of _facts_sql, in one query (none when nothing is read)."""
        if not (self.channels or self.grants or self.capped):
            return {}
        ids = list(contact_ids)
        one = len(ids) == 1 and db.vendor == "postgresql"
        sql = _facts_sql(db.vendor, len(self.channels), len(self.grants), len(self.capped), one)
        adapt = db.ops.adapt_datetimefield_value
        if db.vendor != "postgresql":
            contacts: Any = json.dumps(ids)
        else:
            contacts = ids[0] if one else ids
        params: dict[str, Any] = {
            "contacts": contacts,
            "at": adapt(at),
        }
        for i, channel in enumerate(self.channels):
            params[f"channel_{i}"] = channel
        for i, (purpose_id, channel) in enumerate(self.grants):
            params[f"grant_purpose_{i}"], params[f"grant_channel_{i}"] = purpose_id, channel
        for i, purpose in enumerate(self.capped):
            params[f"capped_purpose_{i}"] = purpose.pk
            params[f"capped_since_{i}"] = adapt(_cap_since(purpose, at))
        return {row[0]: row for row in _fetch_facts(db, sql, params)}


# psycopg prepares a statement once it ran this often; the facts cursor asks for it at once,
# so with this threshold nothing else ever becomes prepared while its query runs.
_PREPARE_ONLY_WHEN_ASKED: Final = 1_000_000_000


@functools.cache
def _preparing_cursor_class() -> type | None:
    """psycopg 3's server-side-binding cursor, preparing every statement it runs and reading
    its rows in binary (None under psycopg 2, which cannot prepare). Binary rows: Django's
    timestamptz loader for text is Python, which made parsing the grants' two datetimes a
    tenth of a batch's time; psycopg's binary one returns the same aware UTC values."""
    from django.db.backends.postgresql import base as postgresql

    if not postgresql.is_psycopg3:
        return None

    class PreparingCursor(postgresql.ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            connection = self.connection
            threshold = connection.prepare_threshold
            # Django turns psycopg's prepared statements off for the whole connection
            # (prepare_threshold None, for poolers); this cursor alone asks for them, and the
            # connection's setting is put back before any other statement runs.
            if threshold is None:
                connection.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
            try:
                return super().execute(
                    query, params, **{**options, "prepare": True, "binary": True}
                )
            finally:
                connection.prepare_threshold = threshold

    return PreparingCursor


# Django connection -> its psycopg cursor for the facts query. Building a psycopg cursor (its
# adapters and transformer) cost as much client time as running the query; the cursor holds
# no server state, only psycopg's connection, so one per connection serves every decision.
_facts_cursors: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


def _prepared_facts_cursor(db: BaseDatabaseWrapper) -> Any:
    """The cursor for the facts query: on PostgreSQL a prepared statement, planned once per
    connection and shape instead of once per decision (Django's own cursor inlines the values,
    so every execution was planned anew and planning was most of a single decision's time).
    None where it cannot be used: another database, psycopg 2, or DISABLE_SERVER_SIDE_CURSORS
    marking a transaction-pooling PgBouncer (before 1.21, or without
    max_prepared_statements), which would hand the statement's name to another server
    connection.

    Still Django's cursor wrapper (query log, error translation, broken-transaction check) on
    Django's connection, so it runs in the caller's transaction. Statements prepared in a
    transaction outlive its rollback on the server; psycopg drops its own list of them on
    every rollback anyway and prepares again.
    """
    if db.vendor != "postgresql" or db.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        return None
    cursor_class = _preparing_cursor_class()
    if cursor_class is None:
        return None
    # What db.cursor() does before it creates a cursor.
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    cursor = _facts_cursors.get(db)
    # A new one after a reconnect (the old cursor belongs to the closed connection).
    if cursor is None or cursor.closed or cursor.connection is not db.connection:
        with db.wrap_database_errors:
            cursor = _facts_cursors[db] = cursor_class(db.connection)
    return db.make_debug_cursor(cursor) if db.queries_logged else db.make_cursor(cursor)


def _fetch_facts(db: BaseDatabaseWrapper, sql: str, params: dict[str, Any]) -> list[Any]:
    """The facts query's rows: prepared where possible, else through Django's cursor."""
    prepared = _prepared_facts_cursor(db)
    if prepared is None:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    # Not closed afterwards (`with` would): the next decision on this connection reuses it.
    prepared.execute(sql, params)
    return prepared.fetchall()


@functools.lru_cache(maxsize=64)
def _facts_sql(vendor: str, channels: int, grants: int, capped: int, one: bool = False) -> str:
    """The facts query for a shape with that many channels, grants and capped purposes
    (`one`: for a single contact, on PostgreSQL).

    Raw SQL because compiling the equivalent ORM query (a subquery per column) cost more than
    running it; the text is built once per shape and vendor, the values that vary are named
    parameters (see _FactsShape.rows), our constants (statuses, direction) literals. Same
    facts as the ORM's: primary point by is_primary desc, id; that point's stored hash
    (ContactPoint.address_hash is address_hash(address), kept so by every writer) and its
    suppression; the granted consent valid at `at` (one at most per contact,
    purpose and channel); counted outbound messages since the cap period began.
    """
    point, consent = ContactPoint._meta.db_table, Consent._meta.db_table

    def first(table: str, columns: Sequence[str], alias: str, condition: str) -> str:
        """Joins as `alias` the first row of `table` (as q) that `condition` picks for c."""
        if vendor == "postgresql":
            # LATERAL with LIMIT stays one index probe per contact; a plain join made
            # PostgreSQL hash the whole table for every batch.
            selected = ", ".join(f"q.{column}" for column in columns)
            return (
                f"LEFT JOIN LATERAL (SELECT {selected} FROM {table} q "  # noqa: S608 - our tables
                f"WHERE {condition} LIMIT 1) {alias} ON TRUE"
            )
        return (
            f"LEFT JOIN {table} {alias} ON {alias}.id = "  # noqa: S608 - our tables
            f"(SELECT q.id FROM {table} q WHERE {condition} LIMIT 1)"
        )

    columns, joins = ["c.id"], []
    for i in range(channels):
        columns += [
            f"p{i}.address",
            f"p{i}.address_hash",
            f"EXISTS (SELECT 1 FROM {Suppression._meta.db_table} s "  # noqa: S608 - our tables
            f"WHERE s.address_hash = p{i}.address_hash)",
        ]
        joins.append(
            first(
                point,
                ("address", "address_hash"),
                f"p{i}",
                f"q.contact_id = c.id AND q.channel = %(channel_{i})s "
                "ORDER BY q.is_primary DESC, q.id",
            )
        )
    granted = _literal(ConsentStatus.GRANTED)
    for i in range(grants):
        columns += [f"g{i}.{name}" for name in _GRANT_COLUMNS]
        joins.append(
            first(
                consent,
                _GRANT_COLUMNS,
                f"g{i}",
                f"q.contact_id = c.id AND q.purpose_id = %(grant_purpose_{i})s "
                f"AND q.channel = %(grant_channel_{i})s AND q.status = {granted} "
                "AND (q.valid_until IS NULL OR q.valid_until > %(at)s)",
            )
        )
    for i in range(capped):
        columns.append(
            f"(SELECT COUNT(*) FROM {Message._meta.db_table} m "  # noqa: S608 - our tables
            f"WHERE m.contact_id = c.id AND m.purpose_id = %(capped_purpose_{i})s "
            f"AND m.direction = {_literal(Direction.OUTBOUND)} AND m.status IN ({_COUNTED}) "
            f"AND m.created_at >= %(capped_since_{i})s)"
        )
    # The contact ids are one parameter whatever their number (an array on PostgreSQL, a JSON
    # list on SQLite), read as a table: less for PostgreSQL to plan than crm_contact, and a
    # contact that is gone reads as one without address, grant or messages.
    if vendor != "postgresql":
        contacts = "(SELECT value AS id FROM json_each(%(contacts)s)) AS c"
    elif one:
        # One contact is one row for the planner too: prepared, the statement's generic plan
        # then costs what a custom one does and PostgreSQL stops planning it per execution
        # (with the array it guesses 100 rows from unnest and replans every time).
        contacts = "(VALUES (%(contacts)s::bigint)) AS c (id)"
    else:
        contacts = "unnest(%(contacts)s::bigint[]) AS c (id)"
    return f"SELECT {', '.join(columns)} FROM {contacts} {' '.join(joins)}"  # noqa: S608


@functools.cache
def _datetime_column() -> Any:
    return Consent._meta.get_field("since").get_col(Consent._meta.db_table)


def _datetime_reader(db: BaseDatabaseWrapper) -> Callable[[Any], dt.datetime | None]:
    """Turns a raw datetime column into what the ORM would return (SQLite gives naive or text
    values; the ORM's converters make them aware)."""
    column = _datetime_column()
    converters = db.ops.get_db_converters(column) + column.get_db_converters(db)

    def read(value: Any) -> dt.datetime | None:
        for converter in converters:
            value = converter(value, column, db)
        return value

    return read


def _suppressed(hashes: set[str]) -> set[str]:
    """Which of `hashes` (of addresses the requests name) are suppressed."""
    if not hashes:
        return set()
    return set(
        Suppression.objects.filter(address_hash__in=hashes).values_list("address_hash", flat=True)
    )


def _counted_self(requests: Sequence[SendRequest], at: dt.datetime) -> set[int]:
    """Requests' own messages (delivery re-checks) that count against their request's cap."""
    own = {
        r.message_id: r
        for r in requests
        if r.message_id is not None and _frequency_capped(r) is not None
    }
    if not own:
        return set()
    rows = (
        _counted_messages()
        .filter(pk__in=own)
        .values_list("pk", "contact_id", "purpose_id", "created_at")
    )
    return {
        pk
        for pk, contact_id, purpose_id, created_at in rows
        if (contact_id, purpose_id) == (own[pk].contact.pk, own[pk].purpose.pk)
        and created_at >= _cap_since(own[pk].purpose, at)
    }


class _Kind:
    """What requests with the same account, version and form share: their purpose, what the
    facts query reads for them, and the answers of the rules that look at nothing else
    (account, template, quiet hours per time zone). Worked out once per batch, not per
    recipient; each decision is still made from them in the order the rules give."""

    def __init__(self, request: SendRequest, at: dt.datetime) -> None:
        account, version = request.account, request.template_version
        purpose = request.purpose
        self.account, self.version, self.purpose = account, version, purpose
        self.channel = account.channel
        self.reads_address = not request.address
        self.needs_consent = _needs_consent(request)
        self.capped = _frequency_capped(request)
        self.opt_in_confirmation = request.opt_in_confirmation
        self.inactive = not account.is_active
        self.mismatch = version is not None and version.template.channel != account.channel
        self.template_refusal = (
            approval_selectors.sendability(version, at) if version is not None else None
        )
        self.ids = (account.pk, version.pk if version else None, purpose.pk if purpose else None)
        start, end = account.quiet_hours_start, account.quiet_hours_end
        self.quiet = (
            (start, end)
            if purpose is not None and start is not None and end is not None and start != end
            else None
        )
        self._quiet_ends: dict[str, tuple[str, dt.datetime | None]] = {}
        # Filled in by _facts once the batch's shape is known: columns of the facts row.
        self.address_column = self.grant_column = self.sent_column = 0

    def quiet_until(self, time_zone: str, at: dt.datetime) -> tuple[str, dt.datetime | None]:
        """(zone, when the quiet hours end) for a contact in `time_zone`; None when not
        inside them. The same for every contact of the zone at the batch's `at`."""
        known = self._quiet_ends.get(time_zone)
        if known is not None:
            return known
        start, end = self.quiet
        zone = zoneinfo.ZoneInfo(time_zone or "Europe/Berlin")
        local = at.astimezone(zone)
        now = local.time()
        inside = (start <= now < end) if start < end else (now >= start or now < end)
        resume = None
        if inside:
            end_day = local.date() if now < end else local.date() + dt.timedelta(days=1)
            resume = dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)
        self._quiet_ends[time_zone] = (str(zone), resume)
        return self._quiet_ends[time_zone]


def _kinds(requests: Sequence[SendRequest], at: dt.datetime) -> list[_Kind]:
    """Each request's kind; requests sharing account and version objects share one."""
    kinds: dict[tuple[int, int, bool, bool], _Kind] = {}
    found = []
    for request in requests:
        key = (
            id(request.account),
            id(request.template_version),
            request.opt_in_confirmation,
            not request.address,
        )
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = _Kind(request, at)
        found.append(kind)
    return found


def _refused(
    request: SendRequest, at: dt.datetime, reason: str, checks: list[str], inputs: dict[str, Any]
) -> GateDecision:
    return frozen_instance(
        GateDecision,
        allowed=False,
        reason=reason,
        decided_at=at,
        checks=checks,
        inputs=inputs,
        request=request,
    )


def _decide(
    request: SendRequest, kind: _Kind, at: dt.datetime, row: Sequence[Any], facts: _Facts
) -> GateDecision:
    """The rules, in order: account, contact, suppressed address, consent, template, service
    window, frequency cap; then quiet hours defer. `checks` and `inputs` record what was
    looked at, as stored with the message."""
    contact = request.contact
    checks = ["account"]
    inputs: dict[str, Any] = {}
    if kind.inactive:
        return _refused(request, at, ACCOUNT_INACTIVE, checks, inputs)
    if kind.account.team_id != contact.team_id:
        return _refused(request, at, ACCOUNT_OTHER_TEAM, checks, inputs)
    if kind.mismatch:
        return _refused(request, at, CHANNEL_MISMATCH, checks, inputs)

    checks.append("contact")
    if contact.erased_at is not None:
        return _refused(request, at, CONTACT_ERASED, checks, inputs)
    if contact.is_restricted:
        return _refused(request, at, CONTACT_RESTRICTED, checks, inputs)

    checks.append("suppression")
    if kind.reads_address:
        address = row[kind.address_column]
        if not address:
            return _refused(request, at, NO_ADDRESS, checks, inputs)
        # The stored hash: address_hash(address), as the suppression check reads it.
        inputs["address_hash"] = row[kind.address_column + 1]
        suppressed = row[kind.address_column + 2]
    else:
        hashed = address_hash(request.address)
        inputs["address_hash"] = hashed
        suppressed = hashed in facts.suppressed
    if suppressed:
        return _refused(request, at, SUPPRESSED, checks, inputs)

    if not kind.needs_consent:
        inputs["consent"] = "opt_in_confirmation" if kind.purpose else "not_required"
    else:
        checks.append("consent")
        column = kind.grant_column
        consent_id = row[column]
        if consent_id is None:
            return _refused(request, at, NO_CONSENT, checks, inputs)
        since, valid_until = facts.read_datetime(row[column + 2]), row[column + 3]
        valid_until = facts.read_datetime(valid_until) if valid_until is not None else None
        inputs["consent"] = {
            "id": consent_id,
            "event": row[column + 1],
            "since": since.isoformat(),
            "valid_until": valid_until.isoformat() if valid_until else None,
        }

    if kind.version is not None:
        checks.append("template")
        inputs["template_state"] = kind.version.state
        if kind.template_refusal:
            return _refused(request, at, kind.template_refusal, checks, inputs)
    else:
        refusal = _service_window(request, at, checks, inputs)
        if refusal:
            return _refused(request, at, refusal, checks, inputs)

    capped = kind.capped
    if capped is not None:
        checks.append("frequency_cap")
        count = row[kind.sent_column] - (request.message_id in facts.counted_self)
        inputs["frequency"] = {
            "sent": count,
            "cap": capped.frequency_cap,
            "hours": capped.frequency_period_hours,
        }
        if count >= capped.frequency_cap:
            return _refused(request, at, FREQUENCY_CAP, checks, inputs)

    deferred_until = None
    if kind.quiet is not None:
        checks.append("quiet_hours")
        zone, deferred_until = kind.quiet_until(contact.time_zone, at)
        if deferred_until is not None:
            inputs["quiet_hours"] = {"zone": zone, "until": deferred_until.isoformat()}
    account_id, version_id, purpose_id = kind.ids
    inputs.update(
        contact=contact.pk, account=account_id, template_version=version_id, purpose=purpose_id
    )
    return frozen_instance(
        GateDecision,
        allowed=True,
        reason=QUIET_HOURS if deferred_until else None,
        deferred_until=deferred_until,
        decided_at=at,
        checks=checks,
        inputs=inputs,
        request=request,
    )


def _service_window(
    request: SendRequest, at: dt.datetime, checks: list[str], inputs: dict[str, Any]
) -> str | None:
    """Free text: WhatsApp's 24-hour window, elsewhere only to people who wrote."""
    checks.append("service_window")
    conversation = request.conversation
    window_end = conversation.service_window_ends_at if conversation else None
    inputs["service_window_ends_at"] = window_end.isoformat() if window_end else None
    if request.account.channel == Channel.WHATSAPP:
        return None if window_end and window_end > at else OUTSIDE_SERVICE_WINDOW
    # Other channels have no window, but free text is a reply: only to people who wrote
    # (and the confirmation someone asked for when subscribing).
    if request.opt_in_confirmation:
        return None
    return None if conversation and conversation.last_inbound_at else NO_DIALOG


def send_gate_evaluate(request: SendRequest, *, at: dt.datetime | None = None) -> GateDecision:
    """Decide whether `request` may be sent at `at` (default now); refusals name their reason.

    Order: account, contact restricted/erased, suppressed address, consent for the template's
    purpose on the channel (not for service messages and opt-in confirmations), template
    sendable, service window for free text, frequency cap; quiet hours defer, never refuse.
    """
    return send_gate_evaluate_many([request], at=at)[0]


def send_gate_evaluate_many(
    requests: Sequence[SendRequest], *, at: dt.datetime | None = None
) -> list[GateDecision]:
    """The decisions for `requests` (in order) at `at`, reading the facts in a constant number
    of queries whatever the batch size; each decision is what send_gate_evaluate would say.

    All requests are judged on the same snapshot: a message accepted for one request of the
    batch does not count against another's frequency cap (campaign batches hold each contact
    once).
    """
    at = at or timezone.now()
    requests = _with_loaded_versions(requests)
    kinds = _kinds(requests, at)
    # Resolved once: every use of the `connection` proxy is a thread-local lookup.
    db = connections[DEFAULT_DB_ALIAS]
    shape = _FactsShape.of(set(kinds))
    by_contact = shape.rows(db, {r.contact.pk for r in requests}, at)
    facts = _Facts(
        suppressed=_suppressed({address_hash(r.address) for r in requests if r.address}),
        counted_self=_counted_self(requests, at),
        read_datetime=_datetime_reader(db),
    )
    # No row only when the shape reads nothing: then no request reads a column.
    return [
        _decide(request, kind, at, by_contact.get(request.contact.pk, ()), facts)
        for request, kind in zip(requests, kinds, strict=True)
    ]
