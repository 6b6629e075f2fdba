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
    from collections.abc import Iterable, Sequence

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


def contacts_matching(queryset: QuerySet[Contact], terms: Iterable[str]) -> QuerySet[Contact]:
    """Contacts of `queryset` whose name, organisation or address contains one of `terms`
    (their search document, crm.search), or whose external id is one of them.

    One condition per contact: on PostgreSQL a rare term is found by the document's trigram
    index (crm migration 0008) and the matches sorted; for a common one the list is walked in
    its own order and a page is full after a few hundred contacts, each decided by one LIKE.
    """
    terms = [term.strip() for term in terms if term.strip()]
    if not terms:
        return queryset
    matching = Q()
    for term in terms:
        matching |= Q(search_document__icontains=term) | Q(external_id=term)
    return queryset.filter(matching)


def points_with_address_containing(
    queryset: QuerySet[ContactPoint], text: str
) -> QuerySet[ContactPoint]:
    """Addresses of `queryset` containing `text`.

    Every address is part of its contact's search document, so asking the document first
    changes no result and lets the document's trigram index find the few contacts (the
    addresses themselves have no such index: each imported address would pay for it).
    """
    return queryset.filter(contact__search_document__icontains=text, address__icontains=text)


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
