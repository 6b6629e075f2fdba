"""Reads: what a user may see, scoped before anything else (outsiders get 404, not 403)."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connections
from django.db.models import BooleanField, Exists, F, Func, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import JSONObject
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_users_with_perms

from crm.models import (
    POINT_LIST_FIELDS,
    POINT_LIST_ORDER,
    Contact,
    ContactImport,
    ContactPoint,
    Segment,
    Tag,
    Team,
)
from crm.segments import rules_to_q, validate_rules

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser

TEAM_ACCESS_PERM = "crm.access_team"
VIEW_ALL_TEAMS_PERM = "crm.view_all_teams"


def user_sees_all_teams(user: AnyUser) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm(VIEW_ALL_TEAMS_PERM)))


def member_team_ids(user: AnyUser) -> list[int]:
    """Ids of the teams the user belongs to (guardian object permission on Team).

    Memoised on the user object: a request asks this many times and the answer cannot change
    within it.
    """
    if not user.is_authenticated or not user.is_active:
        return []
    cached = getattr(user, "_crm_member_team_ids", None)
    if cached is None:
        if user.is_superuser:
            cached = list(Team.objects.values_list("id", flat=True))
        else:
            cached = _team_ids_granted(user.pk)
        user._crm_member_team_ids = cached
    return cached


def _team_ids_granted(user_id: int) -> list[int]:
    """Teams on which the user, or one of their groups, holds TEAM_ACCESS_PERM as a guardian
    object permission, by name: what guardian's get_objects_for_user(...,
    accept_global_perms=False) answers, as one fixed statement. Every request asks this, and
    building guardian's querysets cost about 2.5 ms of Python, ten times the query."""
    permission = [ContentType.objects.get_for_model(Team).pk, TEAM_ACCESS_PERM.split(".")[1]]
    with connections[Team.objects.db].cursor() as cursor:
        cursor.execute(_team_ids_granted_sql(), [user_id, *permission, user_id, *permission])
        return [row[0] for row in cursor.fetchall()]


@cache
def _team_ids_granted_sql() -> str:
    tables = {
        "team": Team._meta.db_table,
        "perm": Permission._meta.db_table,
        "by_user": UserObjectPermission._meta.db_table,
        "by_group": GroupObjectPermission._meta.db_table,
        "user_groups": get_user_model().groups.through._meta.db_table,
    }
    # Guardian stores object keys as text: the team id is compared as text, as guardian does,
    # so no other model's key is ever cast to a number. Table names come from model metadata.
    return """
        SELECT team.id FROM {team} team WHERE CAST(team.id AS TEXT) IN (
            SELECT granted.object_pk FROM {by_user} granted
            JOIN {perm} perm ON perm.id = granted.permission_id
            WHERE granted.user_id = %s AND perm.content_type_id = %s AND perm.codename = %s
            UNION ALL
            SELECT granted.object_pk FROM {by_group} granted
            JOIN {perm} perm ON perm.id = granted.permission_id
            JOIN {user_groups} member ON member.group_id = granted.group_id
            WHERE member.user_id = %s AND perm.content_type_id = %s AND perm.codename = %s
        )
        ORDER BY team.name, team.id
    """.format(**tables)  # noqa: S608


def visible_team_ids(user: AnyUser) -> list[int]:
    """Teams whose data the user may read: their own, or all for auditors and superusers."""
    if user_sees_all_teams(user):
        cached = getattr(user, "_crm_visible_team_ids", None)
        if cached is None:
            cached = list(Team.objects.values_list("id", flat=True))
            user._crm_visible_team_ids = cached
        return cached
    return member_team_ids(user)


def user_may_write(user: AnyUser, perm: str, team: Team | int) -> bool:
    """Model permission (the role) plus membership of the owning team (the ownership)."""
    team_id = team if isinstance(team, int) else team.pk
    return bool(user.has_perm(perm) and team_id in member_team_ids(user))


def teams_visible_to(user: AnyUser) -> QuerySet[Team]:
    return Team.objects.filter(id__in=visible_team_ids(user))


def teams_writable_by(user: AnyUser) -> QuerySet[Team]:
    return Team.objects.filter(id__in=member_team_ids(user))


def team_members(team: Team) -> QuerySet:
    return get_users_with_perms(
        team, only_with_perms_in=["access_team"], with_superusers=False, with_group_users=False
    )


def contacts_visible_to(user: AnyUser) -> QuerySet[Contact]:
    """Contacts of the teams `user` sees, with their team; pages of them get their addresses
    and tags from contacts_with_listing or contacts_load_listing."""
    return Contact.objects.filter(team_id__in=visible_team_ids(user)).select_related("team")


def contacts_with_listing(queryset: QuerySet[Contact]) -> QuerySet[Contact]:
    """`queryset` whose contacts arrive with Contact.point_rows and Contact.tag_names filled,
    as plain values, by the same query (PostgreSQL: two array subqueries per contact on the
    page; the planner evaluates them after the sort and limit). Elsewhere the queryset is
    unchanged and contacts_load_listing fills them.

    For a page of contacts: each contact costs two index look-ups, so a page saves the two
    round trips and queries of contacts_load_listing; a whole list would not. Nor would a
    page taken with an OFFSET: PostgreSQL evaluates the subqueries for each skipped row too,
    so such a queryset is returned unchanged, and so must be one that is sliced later with a
    large offset (LimitOffsetPagination).
    """
    if connections[queryset.db].vendor != "postgresql" or queryset.query.low_mark:
        return queryset
    return queryset.annotate(**_listing_subqueries())


@cache
def _listing_subqueries() -> dict[str, ArraySubquery]:
    """Built once: annotate() resolves a copy of each, and building them costs a third of a
    millisecond a request."""
    points = (
        ContactPoint.objects.filter(contact_id=OuterRef("pk"))
        .order_by(*POINT_LIST_ORDER)
        .values(row=JSONObject(**{name: name for name in POINT_LIST_FIELDS}))
    )
    tags = (
        Contact.tags.through.objects.filter(contact_id=OuterRef("pk"))
        .order_by("tag__name")
        .values("tag__name")
    )
    return {"point_rows": ArraySubquery(points), "tag_names": ArraySubquery(tags)}


def contacts_load_listing(contacts: Sequence[Contact]) -> None:
    """Fill Contact.point_rows and Contact.tag_names of a page of contacts that did not come
    with them (contacts_with_listing): two queries for any page size, values rather than
    model instances, none when every contact has them."""
    by_id = {
        contact.pk: contact
        for contact in contacts
        if not {"point_rows", "tag_names"} <= contact.__dict__.keys()
    }
    if not by_id:
        return
    points: dict[int, list[dict[str, Any]]] = {pk: [] for pk in by_id}
    for row in (
        ContactPoint.objects.filter(contact_id__in=by_id)
        .order_by("contact_id", *POINT_LIST_ORDER)
        .values("contact_id", *POINT_LIST_FIELDS)
    ):
        points[row.pop("contact_id")].append(row)
    tags: dict[int, list[str]] = {pk: [] for pk in by_id}
    for contact_id, name in (
        Contact.tags.through.objects.filter(contact_id__in=by_id)
        .order_by("tag__name")
        .values_list("contact_id", "tag__name")
    ):
        tags[contact_id].append(name)
    for pk, contact in by_id.items():
        contact.__dict__["point_rows"] = points[pk]
        contact.__dict__["tag_names"] = tags[pk]


class EqualsAny(Func):
    """`column = ANY(array)` (PostgreSQL). Given an ArraySubquery, the array is read once (an
    init plan) and the column compared with it like with constants, e.g. in an index probe."""

    arg_joiner = " = ANY("
    template = "%(expressions)s)"
    output_field = BooleanField()


def contacts_tagged(
    queryset: QuerySet[Contact], name: str, *, team_ids: Sequence[int]
) -> QuerySet[Contact]:
    """Contacts of `queryset` carrying a tag of one of `team_ids` named `name` (any case).

    Only the teams' own tags are looked at. On PostgreSQL their ids are read once into an
    array (an init plan), so each contact costs one probe of the (contact, tag) index instead
    of a join with every tag of that name in every team.
    """
    tag_ids = Tag.objects.filter(team_id__in=team_ids, name__iexact=name).order_by().values("id")
    named: Q | EqualsAny = Q(tag_id__in=tag_ids)
    if connections[queryset.db].vendor == "postgresql":
        # As `IN (subquery)` the planner would join crm_tag for every contact instead.
        named = EqualsAny(F("tag_id"), ArraySubquery(tag_ids))
    tagged = Contact.tags.through.objects.filter(named, contact_id=OuterRef("pk"))
    return queryset.filter(Exists(tagged))


# Up to this many contacts, a tag counts as rare in a counted list (see contacts_with_tag).
RARE_TAG_CONTACTS = 20_000


def contacts_with_tag(queryset: QuerySet[Contact], tag_id: int) -> QuerySet[Contact]:
    """Contacts of `queryset` carrying the tag `tag_id`, for a list that is counted (admin).

    On PostgreSQL the contacts of a rare tag are read into an array once and fetched by
    primary key, so counting and paging them costs about the tag's size; otherwise the planner
    hash-joins every contact of the team to count them. A common tag is checked contact by
    contact while the list is walked in order, which finds a page after a few hundred rows.
    The size is looked up with a bounded count (one query, at most RARE_TAG_CONTACTS rows).
    """
    tagged = Contact.tags.through.objects.filter(tag_id=tag_id).order_by()
    if (
        connections[queryset.db].vendor == "postgresql"
        and tagged[:RARE_TAG_CONTACTS].count() < RARE_TAG_CONTACTS
    ):
        return queryset.filter(EqualsAny(F("pk"), ArraySubquery(tagged.values("contact_id"))))
    return queryset.filter(Exists(tagged.filter(contact_id=OuterRef("pk"))))


def contacts_matching(
    queryset: QuerySet[Contact],
    terms: Iterable[str],
    *,
    window: Callable[[QuerySet[Contact]], QuerySet[Contact]] | None = None,
) -> QuerySet[Contact]:
    """Contacts of `queryset` whose name, organisation or address contains one of `terms`, or
    whose external id is one of them.

    The matches are collected as one id set (contact columns UNION addresses) instead of an OR
    with a correlated EXISTS: each part can use its trigram index (migration 0006, PostgreSQL),
    so a rare term does not walk every contact of the team before the page is full.

    `window` is what the caller's paging will do to the result (the cursor's ordering,
    position and row limit, crm.api.pagination.DefaultCursorPagination.page_window), and
    `queryset` must then carry every other condition of the list. On PostgreSQL each part is
    then narrowed by it on its own, so a search costs about one page, not every match (see
    _contacts_matching_window). Without it (the admin, which counts every match, or SQLite)
    the whole id set is collected.
    """
    terms = [term.strip() for term in terms if term.strip()]
    if not terms:
        return queryset
    by_contact, by_address = Q(), Q()
    for term in terms:
        by_contact |= (
            Q(first_name__icontains=term)
            | Q(last_name__icontains=term)
            | Q(organisation__icontains=term)
            | Q(external_id=term)
        )
        by_address |= Q(address__icontains=term.lower())
    vendor = connections[queryset.db].vendor
    if window is not None and vendor == "postgresql":
        return _contacts_matching_window(queryset, by_contact, by_address, window)
    # The team scope of `queryset` lets the external id use the (team, external_id) index.
    contact_ids = queryset.order_by().filter(by_contact).values("pk")
    address_contact_ids = ContactPoint.objects.filter(by_address).order_by().values("contact_id")
    matches = contact_ids.union(address_contact_ids)
    if vendor == "postgresql":
        # Collected into an array first (an init plan), then fetched by primary key: given the
        # id set as a subquery, the planner expects tens of thousands of ids for a common
        # name and hash-joins them against a sequential scan of every contact instead.
        sql, params = matches.query.sql_with_params()
        # The SQL is Django's own compiled query with its parameters kept apart.
        unnested = RawSQL(f"SELECT unnest(ARRAY({sql}))", params)  # noqa: S611
        return queryset.filter(pk__in=unnested)
    return queryset.filter(pk__in=matches)


# From this many matching addresses on, a search term counts as common (see below).
COMMON_ADDRESS_MATCHES = 1000
_FEW_ADDRESS_IDS = "(SELECT ids FROM search_few_addresses)"


def _contacts_matching_window(
    queryset: QuerySet[Contact],
    by_contact: Q,
    by_address: Q,
    window: Callable[[QuerySet[Contact]], QuerySet[Contact]],
) -> QuerySet[Contact]:
    """contacts_matching for one page (PostgreSQL): one statement whose plan depends on
    whether the term is common, decided inside it by a bounded look at the address matches.

    First the contacts of up to COMMON_ADDRESS_MATCHES matching addresses are read into an
    array, once (a materialised CTE). Fewer than that, the term is rare: the contact columns
    and those contacts are two parts, each narrowed by the window on its own; the planner
    fetches the matches by trigram index or by id and sorts them (or walks the contact part
    when a name is common among contacts but not among addresses).

    Common (an e-mail domain, a frequent name): the contacts are walked in cursor order and
    the walk stops when the page is full. The address condition is then a correlated EXISTS
    in an OR, which PostgreSQL turns into one hashed set of the matching addresses, so each
    contact walked costs a hash probe (as a semi-join it would cost an index look-up per
    contact, or every match fetched by id and sorted).

    The branch a term does not take is a one-time filter that is false: never executed.
    """
    db = queryset.db
    few = ContactPoint.objects.filter(by_address).order_by().values("contact_id")
    few_sql, few_params = few[:COMMON_ADDRESS_MATCHES].query.get_compiler(db).as_sql()
    # Fixed SQL around the CTE below; the only parameter is the threshold.
    few_count = f"cardinality({_FEW_ADDRESS_IDS})"
    common = RawSQL(f"{few_count} >= %s", [COMMON_ADDRESS_MATCHES], BooleanField())  # noqa: S611
    rare = RawSQL(f"{few_count} < %s", [COMMON_ADDRESS_MATCHES], BooleanField())  # noqa: S611
    few_contacts = RawSQL(f"SELECT unnest({_FEW_ADDRESS_IDS})", [])  # noqa: S611
    addressed_here = Exists(few.filter(contact_id=OuterRef("pk")))
    parts = (
        # The hash probe first: a contact found by address skips the three LIKEs.
        queryset.filter(common).filter(addressed_here | by_contact),
        queryset.filter(rare).filter(by_contact),
        queryset.filter(rare).filter(pk__in=few_contacts),
    )
    first, *others = (window(part.values("pk")) for part in parts)
    union_sql, union_params = first.union(*others, all=True).query.get_compiler(db).as_sql()
    # Django's own compiled SQL with its parameters kept apart, around a fixed CTE.
    matches = RawSQL(  # noqa: S611
        f"WITH search_few_addresses AS MATERIALIZED (SELECT ARRAY({few_sql}) AS ids) {union_sql}",
        (*few_params, *union_params),
    )
    return queryset.filter(pk__in=matches)


def estimated_count(queryset: QuerySet) -> int | None:
    """The PostgreSQL planner's row estimate for `queryset` (from its statistics, no scan);
    None on other databases."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def contact_points_visible_to(user: AnyUser) -> QuerySet[ContactPoint]:
    return ContactPoint.objects.filter(team_id__in=visible_team_ids(user)).select_related(
        "contact", "team"
    )


def tags_visible_to(user: AnyUser) -> QuerySet[Tag]:
    return Tag.objects.filter(team_id__in=visible_team_ids(user)).select_related("team")


def segments_visible_to(user: AnyUser) -> QuerySet[Segment]:
    return Segment.objects.filter(team_id__in=visible_team_ids(user)).select_related(
        "team", "created_by"
    )


def imports_visible_to(user: AnyUser) -> QuerySet[ContactImport]:
    return ContactImport.objects.filter(team_id__in=visible_team_ids(user)).select_related(
        "team", "created_by"
    )


def segment_contacts(segment: Segment) -> QuerySet[Contact]:
    """The segment's contacts as one SQL query (rules compiled to a WHERE clause)."""
    validate_rules(segment.rules)
    return Contact.objects.filter(team_id=segment.team_id).filter(
        rules_to_q(segment.rules, segment.team_id)
    )


def segment_preview(segment: Segment, *, sample_size: int = 10) -> dict[str, Any]:
    contacts = segment_contacts(segment)
    return {
        "count": contacts.count(),
        "sample": list(contacts.order_by("-created_at", "-id")[:sample_size]),
    }
