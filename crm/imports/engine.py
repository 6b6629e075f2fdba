"""Matching and writing one batch: rows to contacts with a fixed number of queries (reads in
plan_batch, bulk writes in apply_plan), so the cost grows with batches, never with rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.utils import bulk_update_with_history

from crm.hashing import address_hash
from crm.imports import hooks
from crm.imports.columns import ATTRIBUTE_PREFIX, PHONE_CHANNELS, ImportRow
from crm.imports.lookups import any_of
from crm.imports.writes import (
    InstanceMaker,
    create_with_history,
    insert_links,
    load,
    load_deferred,
)
from crm.models import Channel, Contact, ContactImport, ContactPoint, ImportRejection, Tag, Team
from crm.search import SEARCHED_FIELDS, search_document

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

CREATED: Final = "created"
UPDATED: Final = "updated"
UNCHANGED: Final = "unchanged"
REJECTED: Final = "rejected"


@dataclass
class Target:
    """A contact as the batch will leave it: loaded or new, plus what rows add to it."""

    contact: Contact
    is_new: bool
    first_line: int
    points: set[tuple[str, str]] = field(default_factory=set)
    tag_names: set[str] = field(default_factory=set)
    changed_fields: set[str] = field(default_factory=set)
    new_points: list[tuple[str, str]] = field(default_factory=list)
    new_tags: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.contact.pk:
            return _("contact #%(id)s") % {"id": self.contact.pk}
        return _("the contact of line %(line)s") % {"line": self.first_line}


@dataclass
class RowResult:
    """What happened (or, in a preview, would happen) to one row."""

    line: int
    outcome: str
    reason: str = ""
    changes: list[str] = field(default_factory=list)
    contact_id: int | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    results: list[tuple[ImportRow, RowResult, Target | None]] = field(default_factory=list)
    created: list[Target] = field(default_factory=list)
    updated: list[Target] = field(default_factory=list)
    touched: list[Target] = field(default_factory=list)
    new_tags: dict[str, str] = field(default_factory=dict)


class TeamTags:
    """The team's tags by lower-case name, loaded once per run (tags are few; contacts many)."""

    def __init__(self, team: Team) -> None:
        self.team = team
        self.by_name: dict[str, Tag] = {}
        self.by_id: dict[int, str] = {}
        for tag in Tag.objects.filter(team=team).order_by("id"):
            self._add(tag)

    def _add(self, tag: Tag) -> None:
        self.by_name.setdefault(tag.name.lower(), tag)
        self.by_id[tag.pk] = tag.name.lower()

    def create_missing(self, names: dict[str, str]) -> None:
        missing = {key: name for key, name in names.items() if key not in self.by_name}
        if not missing:
            return
        Tag.objects.bulk_create(
            [Tag(team=self.team, name=name) for name in missing.values()], ignore_conflicts=True
        )
        for tag in Tag.objects.filter(team=self.team, name__in=list(missing.values())):
            self._add(tag)


def _diff(target: Target, row: ImportRow) -> list[str]:
    """The changes `row` makes to `target`: only cells the row fills, never a blanking."""
    contact = target.contact
    changes = [name for name, value in row.fields.items() if getattr(contact, name) != value]
    changes += [
        f"{ATTRIBUTE_PREFIX}{key}"
        for key, value in row.attributes.items()
        if contact.attributes.get(key) != value
    ]
    changes += [
        f"+{channel}:{address}"
        for channel, address in row.points
        if (channel, address) not in target.points
    ]
    changes += [f"+tag:{tag}" for tag in row.tags if tag.lower() not in target.tag_names]
    return changes


def _apply_row(target: Target, row: ImportRow) -> None:
    contact = target.contact
    for name, value in row.fields.items():
        if getattr(contact, name) != value:
            setattr(contact, name, value)
            target.changed_fields.add(name)
    changed_attributes = {
        key: value for key, value in row.attributes.items() if contact.attributes.get(key) != value
    }
    if changed_attributes:
        contact.attributes = {**contact.attributes, **changed_attributes}
        target.changed_fields.add("attributes")
    for point in row.points:
        if point not in target.points:
            target.points.add(point)
            target.new_points.append(point)
    for tag in row.tags:
        if tag.lower() not in target.tag_names:
            target.tag_names.add(tag.lower())
            target.new_tags.append(tag)


# What matching, diffing and the row hooks read of a matched contact. The timestamps (two
# datetimes to parse per contact) load only for the contacts a batch updates, whose history
# rows copy created_at.
# The search document is not read: a batch rebuilds it for the contacts it changes.
_MATCHED_FIELDS: Final = [
    f.name
    for f in Contact._meta.concrete_fields
    if f.name not in ("created_at", "updated_at", "search_document")
]


# The channels as plain strings for the per-row loops: reading a member of a choices enum off
# its class costs more than the comparison it is used in.
_EMAIL: Final = str(Channel.EMAIL.value)
_PHONES: Final = frozenset(str(channel.value) for channel in PHONE_CHANNELS)
_PHONE_ORDER: Final = tuple(str(channel.value) for channel in PHONE_CHANNELS)


# What a row matched a contact by: (external id or address, whether it is the external id).
# A plain tuple per match; only the keys of rows in conflict are described (translated).
_Key = tuple[str, bool]


def _describe_key(key: _Key) -> str:
    value, is_external_id = key
    if is_external_id:
        return _("external id “%(id)s”") % {"id": value}
    return f"“{value}”"


class _Matcher:
    """Finds, for each row, the contact it means: in the team (one query per key kind for the
    whole batch) or earlier in the same batch, so duplicates within a file merge."""

    def __init__(self, team: Team, tags: TeamTags, rows: list[ImportRow], *, lock: bool) -> None:
        self.team = team
        external_ids = {row.fields["external_id"] for row in rows if "external_id" in row.fields}
        emails = {a for row in rows for c, a in row.points if c == _EMAIL}
        phones = {a for row in rows for c, a in row.points if c in _PHONES}
        # One SELECT per key kind, joined by UNION ALL into one query, not one OR-ed WHERE:
        # PostgreSQL re-checks an OR against every row found, comparing each with the whole
        # array of keys (thousands times thousands comparisons); each arm alone is an index
        # condition. Sets only from here on: .order_by() spares the models' default order.
        owners_by_kind = [
            ContactPoint.objects.filter(any_of("address", addresses), team=team, channel__in=kinds)
            .order_by()
            .values_list("contact_id", flat=True)
            for kinds, addresses in (([Channel.EMAIL], emails), (PHONE_CHANNELS, phones))
            if addresses
        ]
        if external_ids:
            owners_by_kind.append(
                Contact.objects.filter(any_of("external_id", external_ids), team=team)
                .order_by()
                .values_list("id", flat=True)
            )
        owner_ids: set[int] = set()
        if owners_by_kind:
            owner_ids = set(owners_by_kind[0].union(*owners_by_kind[1:], all=True))
        self.by_external_id: dict[str, Target] = {}
        self.by_address: dict[tuple[str, str], Target] = {}
        if not owner_ids:
            return
        contacts = Contact.objects.filter(any_of("id", owner_ids)).order_by("id")
        if lock:
            # Rows are compared with the state they will overwrite: no edit may slip between.
            contacts = contacts.select_for_update()
        targets = {
            c.pk: Target(contact=c, is_new=False, first_line=0)
            for c in load(contacts, _MATCHED_FIELDS)
        }
        for contact_id, channel, address in (
            ContactPoint.objects.filter(any_of("contact_id", owner_ids))
            .order_by()
            .values_list("contact_id", "channel", "address")
        ):
            targets[contact_id].points.add((channel, address))
        through = Contact.tags.through
        for contact_id, tag_id in (
            through.objects.filter(any_of("contact_id", owner_ids))
            .order_by()
            .values_list("contact_id", "tag_id")
        ):
            targets[contact_id].tag_names.add(tags.by_id.get(tag_id, f"#{tag_id}"))
        for target in targets.values():
            self.register(target)

    def register(self, target: Target) -> None:
        if target.contact.external_id:
            self.by_external_id[target.contact.external_id] = target
        for point in target.points:
            self.by_address[point] = target

    def matches(self, row: ImportRow) -> list[tuple[_Key, Target]]:
        """(key, contact) pairs in priority order: external id, e-mail, phone."""
        found: list[tuple[_Key, Target]] = []
        external_id = row.fields.get("external_id")
        if external_id and external_id in self.by_external_id:
            found.append(((external_id, True), self.by_external_id[external_id]))
        by_address = self.by_address
        # E-mail addresses first, then the others, each in the row's order.
        for emails_now in (True, False):
            for channel, address in row.points:
                if (channel == _EMAIL) is not emails_now:
                    continue
                # A phone number is the same key on any phone channel.
                if channel in _PHONES:
                    candidates = [(c, address) for c in _PHONE_ORDER]
                else:
                    candidates = [(channel, address)]
                for candidate in candidates:
                    target = by_address.get(candidate)
                    if target is not None:
                        found.append(((address, False), target))
                        break
        return found


def _conflict(row: ImportRow, matches: list[tuple[_Key, Target]]) -> str:
    """Why the row cannot be applied to the one contact it matched, or to several; '' if fine."""
    if not matches:
        return ""
    first = matches[0][1]
    if any(target is not first for _key, target in matches):
        parts = ", ".join(f"{_describe_key(key)} → {target.describe()}" for key, target in matches)
        return _("Conflict: the row points to different contacts (%(parts)s).") % {"parts": parts}
    key, target = matches[0]
    external_id = row.fields.get("external_id")
    theirs = target.contact.external_id
    if external_id and theirs and theirs != external_id:
        return _(
            "Conflict: %(key)s belongs to %(contact)s, whose external id is “%(theirs)s”, "
            "not “%(ours)s”."
        ) % {
            "key": _describe_key(key),
            "contact": target.describe(),
            "theirs": theirs,
            "ours": external_id,
        }
    return ""


def plan_batch(team: Team, tags: TeamTags, rows: list[ImportRow], *, lock: bool) -> Plan:
    """Decide each row's outcome and gather the bulk writes; reads only, writes nothing."""
    plan = Plan()
    new_contact = InstanceMaker(
        Contact, team=team, language=team.default_language, time_zone=team.default_time_zone
    )
    hooks.run_checks(team, rows)
    matcher = _Matcher(team, tags, [row for row in rows if not row.error], lock=lock)
    seen: set[int] = set()
    for row in rows:
        result = RowResult(line=row.line, outcome=REJECTED, reason=row.error)
        target: Target | None = None
        if not row.error:
            matches = matcher.matches(row)
            result.reason = _conflict(row, matches)
            if matches and not result.reason:
                target = matches[0][1]
                result.changes = _diff(target, row)
                contact = target.contact
                if result.changes and not target.is_new and contact.erased_at is not None:
                    result.reason = _(
                        "%(contact)s was erased on request; imports do not change it."
                    ) % {"contact": target.describe()}
                elif result.changes and not target.is_new and contact.is_restricted:
                    result.reason = _(
                        "Processing of %(contact)s is restricted; imports do not change it."
                    ) % {"contact": target.describe()}
                else:
                    result.outcome = UPDATED if result.changes else UNCHANGED
            elif not result.reason:
                target = Target(contact=new_contact(), is_new=True, first_line=row.line)
                result.outcome = CREATED
                plan.created.append(target)
            if result.reason:
                target = None
            elif target is not None:
                # A row that changes nothing adds nothing to apply or to register.
                if result.changes or target.is_new:
                    _apply_row(target, row)
                    matcher.register(target)
                if not target.is_new and id(target) not in seen:
                    seen.add(id(target))
                    plan.touched.append(target)
                for tag in target.new_tags:
                    if tag.lower() not in tags.by_name:
                        plan.new_tags.setdefault(tag.lower(), tag)
        result.outcome = REJECTED if result.reason else result.outcome
        result.contact_id = target.contact.pk if target else None
        plan.results.append((row, result, target))
    plan.updated = [t for t in plan.touched if t.changed_fields]
    return plan


def _set_search_documents(targets: list[Target]) -> list[Target]:
    """Rebuild the search document of each target whose names or addresses the batch
    changes (every new one) from what the batch leaves; returns those targets."""
    changed = [
        target
        for target in targets
        if target.is_new
        or target.new_points
        or not SEARCHED_FIELDS.isdisjoint(target.changed_fields)
    ]
    for target in changed:
        target.contact.search_document = search_document(
            target.contact, (address for _channel, address in target.points)
        )
    return changed


def apply_plan(
    contact_import: ContactImport, tags: TeamTags, plan: Plan, actor: AbstractBaseUser | None
) -> dict[type[models.Model], int]:
    """Write a batch in bulk: a fixed number of queries, whatever the batch size.

    Returns how many rows it inserted into the contact, contact point and tag link tables.
    """
    reason = _("contact import #%(id)s") % {"id": contact_import.pk}
    now = timezone.now()
    tags.create_missing(plan.new_tags)
    _set_search_documents(plan.created)
    create_with_history(
        Contact,
        [target.contact for target in plan.created],
        actor=actor,
        reason=reason,
        now=now,
    )
    searched = {id(target) for target in _set_search_documents(plan.touched)}
    if plan.updated:
        fields = sorted({name for target in plan.updated for name in target.changed_fields})
        if any(id(target) in searched for target in plan.updated):
            fields.append("search_document")
        load_deferred([target.contact for target in plan.updated], ["created_at"])
        for target in plan.updated:
            target.contact.updated_at = now
        bulk_update_with_history(
            [target.contact for target in plan.updated],
            Contact,
            [*fields, "updated_at"],
            default_user=actor,
            default_change_reason=reason,
            default_date=now,
        )
    # Contacts that gained only addresses: the document is their one changed column, and
    # not worth a history row.
    Contact.objects.bulk_update(
        [t.contact for t in plan.touched if id(t) in searched and not t.changed_fields],
        ["search_document"],
    )
    points: list[ContactPoint] = []
    new_point = InstanceMaker(ContactPoint, team_id=contact_import.team_id)
    links: list[tuple[int, int]] = []
    for target in [*plan.created, *plan.touched]:
        if not (target.new_points or target.new_tags):
            continue
        contact = target.contact
        primary_channels = {c for c, _a in target.points - set(target.new_points)}
        for channel, address in target.new_points:
            points.append(
                new_point(
                    contact_id=contact.pk,
                    channel=channel,
                    address=address,
                    address_hash=address_hash(address),
                    is_primary=channel not in primary_channels,
                )
            )
            primary_channels.add(channel)
        links += [(contact.pk, tags.by_name[tag.lower()].pk) for tag in target.new_tags]
    create_with_history(ContactPoint, points, actor=actor, reason=reason, now=now)
    insert_links(Contact.tags.through, links)
    rejections = [
        ImportRejection(
            contact_import=contact_import,
            line_number=row.line,
            reason=result.reason[:500],
            raw=row.raw,
        )
        for row, result, _target in plan.results
        if result.outcome == REJECTED
    ]
    if rejections:
        ImportRejection.objects.bulk_create(rejections)
    return {Contact: len(plan.created), ContactPoint: len(points), Contact.tags.through: len(links)}


def accepted_rows(plan: Plan) -> list[tuple[Contact, ImportRow]]:
    """The rows a batch accepted, each with its contact (what row hooks receive)."""
    return [(target.contact, row) for row, _result, target in plan.results if target]
