"""The send gate: the one place that decides whether a message may leave, and why.

Every outbound path (API, admin, campaigns, automation, double opt-in, agents) reaches it
through `message_send`, and the delivery worker asks it again when it claims a queued message,
so a STOP received mid-campaign stops the rest. The decision and the inputs it saw are stored
on the message (`Message.gate_decision`).

The rules are one pure function of the request and the facts read for it. The facts are read
for a whole batch of requests in a constant number of queries (`send_gate_evaluate_many`, what
campaign batches use); a single decision is a batch of one, so both forms apply the same rules.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

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
    """What the rules read from the database about one request."""

    address: str | None = None
    address_hash: str = ""
    suppressed: bool = False
    # The current grant for the request's purpose and channel (values), if any.
    consent: dict[str, Any] | None = None
    # Counted outbound messages of the contact for the purpose in the cap period.
    recent_messages: int = 0


def _loaded_version(version: TemplateVersion) -> bool:
    """True when the rules can read the version's template and purpose without a query."""
    if not TemplateVersion.template.is_cached(version):
        return False
    template = version.template
    return template.purpose_id is None or MessageTemplate.purpose.is_cached(template)


def _with_loaded_versions(requests: Sequence[SendRequest]) -> list[SendRequest]:
    """The requests with template, purpose loaded for every version (one query at most)."""
    missing = {
        request.template_version.pk
        for request in requests
        if request.template_version is not None and not _loaded_version(request.template_version)
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
# A stable order for the statuses' placeholders, so equal shapes give equal SQL text.
_COUNTED: Final = tuple(sorted(COUNTED_STATUSES))


@dataclass(frozen=True)
class _FactsShape:
    """What a batch reads per contact: primary address and its suppression per channel,
    current grant per (purpose, channel), counted messages per capped purpose. It grows with
    the channels and purposes of a batch, never with its length."""

    channels: tuple[str, ...]
    grants: tuple[tuple[int, str], ...]
    capped: tuple[Purpose, ...]

    @classmethod
    def of(cls, requests: Sequence[SendRequest]) -> _FactsShape:
        capped = {purpose for purpose in map(_frequency_capped, requests) if purpose is not None}
        return cls(
            channels=tuple(sorted({r.account.channel for r in requests if not r.address})),
            grants=tuple(
                sorted({(r.purpose.pk, r.account.channel) for r in requests if _needs_consent(r)})
            ),
            capped=tuple(sorted(capped, key=lambda purpose: purpose.pk)),
        )

    # Column positions in a row of _facts_sql: the contact id, then two per channel,
    # _GRANT_COLUMNS per grant, one per capped purpose.
    def address_column(self, channel: str) -> int:
        return 1 + 2 * self.channels.index(channel)

    def grant_column(self, purpose_id: int, channel: str) -> int:
        index = self.grants.index((purpose_id, channel))
        return 1 + 2 * len(self.channels) + len(_GRANT_COLUMNS) * index

    def sent_column(self, purpose: Purpose) -> int:
        grants = len(_GRANT_COLUMNS) * len(self.grants)
        return 1 + 2 * len(self.channels) + grants + self.capped.index(purpose)

    def rows(
        self, db: BaseDatabaseWrapper, contact_ids: set[int], at: dt.datetime
    ) -> dict[int, tuple[Any, ...]]:
        """Contact id -> its row of _facts_sql, in one query (none when nothing is read)."""
        if not (self.channels or self.grants or self.capped):
            return {}
        sql = _facts_sql(db.vendor, len(self.channels), len(self.grants), len(self.capped))
        adapt = db.ops.adapt_datetimefield_value
        ids = list(contact_ids)
        params: dict[str, Any] = {
            "contacts": ids if db.vendor == "postgresql" else json.dumps(ids),
            "at": adapt(at),
            "granted": ConsentStatus.GRANTED,
            "outbound": Direction.OUTBOUND,
            **{f"counted_{i}": status for i, status in enumerate(_COUNTED)},
        }
        for i, channel in enumerate(self.channels):
            params[f"channel_{i}"] = channel
        for i, (purpose_id, channel) in enumerate(self.grants):
            params[f"grant_purpose_{i}"], params[f"grant_channel_{i}"] = purpose_id, channel
        for i, purpose in enumerate(self.capped):
            params[f"capped_purpose_{i}"] = purpose.pk
            params[f"capped_since_{i}"] = adapt(_cap_since(purpose, at))
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return {row[0]: row for row in cursor.fetchall()}


@functools.lru_cache(maxsize=64)
def _facts_sql(vendor: str, channels: int, grants: int, capped: int) -> str:
    """The facts query for a shape with that many channels, grants and capped purposes.

    Raw SQL because compiling the equivalent ORM query (a subquery per column) cost more than
    running it; the text is built once per shape and vendor, the values are named parameters
    (see _FactsShape.rows). Same facts as the ORM's: primary point by is_primary desc, id;
    suppression of that point's hash (ContactPoint.address_hash is address_hash(address),
    kept so by every writer); the granted consent valid at `at` (one at most per contact,
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
    for i in range(grants):
        columns += [f"g{i}.{name}" for name in _GRANT_COLUMNS]
        joins.append(
            first(
                consent,
                _GRANT_COLUMNS,
                f"g{i}",
                f"q.contact_id = c.id AND q.purpose_id = %(grant_purpose_{i})s "
                f"AND q.channel = %(grant_channel_{i})s AND q.status = %(granted)s "
                "AND (q.valid_until IS NULL OR q.valid_until > %(at)s)",
            )
        )
    statuses = ", ".join(f"%(counted_{i})s" for i in range(len(_COUNTED)))
    for i in range(capped):
        columns.append(
            f"(SELECT COUNT(*) FROM {Message._meta.db_table} m "  # noqa: S608 - our tables
            f"WHERE m.contact_id = c.id AND m.purpose_id = %(capped_purpose_{i})s "
            f"AND m.direction = %(outbound)s AND m.status IN ({statuses}) "
            f"AND m.created_at >= %(capped_since_{i})s)"
        )
    # The contact ids are one parameter whatever their number (an array on PostgreSQL, a JSON
    # list on SQLite), read as a table: less for PostgreSQL to plan than crm_contact, and a
    # contact that is gone reads as one without address, grant or messages.
    contacts = (
        "unnest(%(contacts)s::bigint[]) AS c (id)"
        if vendor == "postgresql"
        else "(SELECT value AS id FROM json_each(%(contacts)s)) AS c"
    )
    return f"SELECT {', '.join(columns)} FROM {contacts} {' '.join(joins)}"  # noqa: S608


def _datetime_reader(db: BaseDatabaseWrapper) -> Callable[[Any], dt.datetime | None]:
    """Turns a raw datetime column into what the ORM would return (SQLite gives naive or text
    values; the ORM's converters make them aware)."""
    column = Consent._meta.get_field("since").get_col(Consent._meta.db_table)
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


def _facts(requests: Sequence[SendRequest], at: dt.datetime) -> list[_Facts]:
    """Everything the rules read, for all requests, in a constant number of queries: one,
    plus one for addresses named in requests and one for delivery re-checks of capped
    messages."""
    # Resolved once: every use of the `connection` proxy is a thread-local lookup.
    db = connections[DEFAULT_DB_ALIAS]
    shape = _FactsShape.of(requests)
    by_contact = shape.rows(db, {r.contact.pk for r in requests}, at)
    named = {address_hash(r.address) for r in requests if r.address}
    suppressed = _suppressed(named)
    counted_self = _counted_self(requests, at)
    read_datetime = _datetime_reader(db)
    facts = []
    for request in requests:
        # No row only when the shape reads nothing: then no request reads a column.
        row = by_contact.get(request.contact.pk, ())
        channel = request.account.channel
        if request.address:
            address = request.address
            hashed = address_hash(address)
            is_suppressed = hashed in suppressed
        else:
            column = shape.address_column(channel)
            address = row[column]
            hashed = address_hash(address) if address else ""
            is_suppressed = bool(row[column + 1])
        consent = None
        if _needs_consent(request):
            column = shape.grant_column(request.purpose.pk, channel)
            pk, last_event_id, since, valid_until = row[column : column + len(_GRANT_COLUMNS)]
            if pk is not None:
                consent = {
                    "pk": pk,
                    "last_event_id": last_event_id,
                    "since": read_datetime(since),
                    "valid_until": read_datetime(valid_until),
                }
        capped = _frequency_capped(request)
        recent = row[shape.sent_column(capped)] if capped else 0
        facts.append(
            _Facts(
                address=address,
                address_hash=hashed,
                suppressed=is_suppressed,
                consent=consent,
                recent_messages=recent - (request.message_id in counted_self),
            )
        )
    return facts


class _Evaluation:
    """Runs the checks in the order the rules give and collects what each one saw."""

    def __init__(self, request: SendRequest, facts: _Facts, at: dt.datetime) -> None:
        self.request = request
        self.facts = facts
        self.at = at
        self.checks: list[str] = []
        self.inputs: dict[str, Any] = {}

    def refuse(self, reason: str) -> GateDecision:
        return GateDecision(
            allowed=False,
            reason=reason,
            decided_at=self.at,
            checks=self.checks,
            inputs=self.inputs,
            request=self.request,
        )

    def run(self) -> GateDecision:
        request = self.request
        contact, account, version = request.contact, request.account, request.template_version
        for check in (
            self._account,
            self._contact,
            self._address,
            self._consent,
            self._template,
            self._service_window,
            self._frequency_cap,
        ):
            reason = check()
            if reason:
                return self.refuse(reason)
        deferred_until = self._quiet_hours()
        self.inputs.update(
            contact=contact.pk,
            account=account.pk,
            template_version=version.pk if version else None,
            purpose=request.purpose.pk if request.purpose else None,
        )
        return GateDecision(
            allowed=True,
            reason=QUIET_HOURS if deferred_until else None,
            deferred_until=deferred_until,
            decided_at=self.at,
            checks=self.checks,
            inputs=self.inputs,
            request=request,
        )

    def _account(self) -> str | None:
        self.checks.append("account")
        account, version = self.request.account, self.request.template_version
        if not account.is_active:
            return ACCOUNT_INACTIVE
        if account.team_id != self.request.contact.team_id:
            return ACCOUNT_OTHER_TEAM
        if version is not None and version.template.channel != account.channel:
            return CHANNEL_MISMATCH
        return None

    def _contact(self) -> str | None:
        self.checks.append("contact")
        contact = self.request.contact
        if contact.erased_at is not None:
            return CONTACT_ERASED
        if contact.is_restricted:
            return CONTACT_RESTRICTED
        return None

    def _address(self) -> str | None:
        self.checks.append("suppression")
        if not self.facts.address:
            return NO_ADDRESS
        self.inputs["address_hash"] = self.facts.address_hash
        if self.facts.suppressed:
            return SUPPRESSED
        return None

    def _consent(self) -> str | None:
        purpose = self.request.purpose
        if purpose is None or self.request.opt_in_confirmation:
            self.inputs["consent"] = "opt_in_confirmation" if purpose else "not_required"
            return None
        self.checks.append("consent")
        consent = self.facts.consent
        if consent is None:
            return NO_CONSENT
        self.inputs["consent"] = {
            "id": consent["pk"],
            "event": consent["last_event_id"],
            "since": consent["since"].isoformat(),
            "valid_until": consent["valid_until"].isoformat() if consent["valid_until"] else None,
        }
        return None

    def _template(self) -> str | None:
        version = self.request.template_version
        if version is None:
            return None
        self.checks.append("template")
        self.inputs["template_state"] = version.state
        return approval_selectors.sendability(version, self.at)

    def _service_window(self) -> str | None:
        if self.request.template_version is not None:
            return None
        self.checks.append("service_window")
        conversation = self.request.conversation
        window_end = conversation.service_window_ends_at if conversation else None
        self.inputs["service_window_ends_at"] = window_end.isoformat() if window_end else None
        if self.request.account.channel == Channel.WHATSAPP:
            return None if window_end and window_end > self.at else OUTSIDE_SERVICE_WINDOW
        # Other channels have no window, but free text is a reply: only to people who wrote
        # (and the confirmation someone asked for when subscribing).
        if self.request.opt_in_confirmation:
            return None
        return None if conversation and conversation.last_inbound_at else NO_DIALOG

    def _frequency_cap(self) -> str | None:
        purpose = self.request.purpose
        if purpose is None or not purpose.frequency_cap:
            return None
        self.checks.append("frequency_cap")
        count = self.facts.recent_messages
        self.inputs["frequency"] = {
            "sent": count,
            "cap": purpose.frequency_cap,
            "hours": purpose.frequency_period_hours,
        }
        return FREQUENCY_CAP if count >= purpose.frequency_cap else None

    def _quiet_hours(self) -> dt.datetime | None:
        """When the quiet hours end, if a consent-based message falls into them."""
        account = self.request.account
        start, end = account.quiet_hours_start, account.quiet_hours_end
        if self.request.purpose is None or start is None or end is None or start == end:
            return None
        self.checks.append("quiet_hours")
        zone = zoneinfo.ZoneInfo(self.request.contact.time_zone or "Europe/Berlin")
        local = self.at.astimezone(zone)
        now = local.time()
        inside = (start <= now < end) if start < end else (now >= start or now < end)
        if not inside:
            return None
        end_day = local.date() if now < end else local.date() + dt.timedelta(days=1)
        resume = dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)
        self.inputs["quiet_hours"] = {"zone": str(zone), "until": resume.isoformat()}
        return resume


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
    return [
        _Evaluation(request, facts, at).run()
        for request, facts in zip(requests, _facts(requests, at), strict=True)
    ]
