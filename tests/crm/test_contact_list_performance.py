"""Contact lists stay cheap at a million contacts: constant query counts, no COUNT(*) over the
whole scope in admin, and a search the trigram indexes can answer (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Q
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from guardian.shortcuts import assign_perm, get_objects_for_user
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.test import APIRequestFactory, force_authenticate

from crm import selectors
from crm.admin_base import EstimatedCountPaginator, changelist_is_unfiltered
from crm.api.views import ContactViewSet
from crm.models import Contact, ContactPoint, Tag, Team
from tests.factories import (
    ContactFactory,
    ContactPointFactory,
    SegmentFactory,
    TagFactory,
    TeamFactory,
)

pytestmark = pytest.mark.django_db

API_LIST = reverse("contact-list")
CHANGELIST = reverse("admin:crm_contact_changelist")


def _fill(team, count: int) -> None:
    tags = [Tag.objects.get_or_create(team=team, name=f"t{n}")[0] for n in range(2)]
    for _ in range(count):
        contact = ContactFactory(team=team)
        ContactPointFactory(contact=contact, channel="email")
        ContactPointFactory(contact=contact, channel="sms", address=f"+49151{contact.pk:08d}")
        contact.tags.add(*tags)


def _logged_in(user) -> Client:
    """A session client: each request loads the user afresh, as in production."""
    client = Client()
    client.force_login(user)
    return client


def _api_queries(user, params: dict) -> tuple[int, dict]:
    client = _logged_in(user)
    client.get(API_LIST)  # content types and the like, which a live server has cached
    with CaptureQueriesContext(connection) as queries:
        response = client.get(API_LIST, params)
    assert response.status_code == 200
    return len(queries.captured_queries), response.json()


def _admin_queries(user, params: dict) -> tuple[int, object]:
    client = _logged_in(user)
    client.get(CHANGELIST)  # content types and the like, which a live server has cached
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return len(queries.captured_queries), response.context["cl"]


@pytest.mark.parametrize(
    "params", [{}, {"search": "example"}, {"language": "de", "tag": "t1", "channel": "sms"}]
)
def test_api_list_query_count_is_the_same_for_5_and_50_contacts(marketing, team, params):
    _fill(team, 5)
    small, data = _api_queries(marketing, {**params, "page_size": 100})
    assert len(data["results"]) == 5
    _fill(team, 45)
    large, data = _api_queries(marketing, {**params, "page_size": 100})
    assert len(data["results"]) == 50
    assert all(len(row["points"]) == 2 and len(row["tags"]) == 2 for row in data["results"])
    assert small == large


def test_api_deep_cursor_page_costs_what_page_1_costs(marketing, team):
    _fill(team, 12)
    first_count, first = _api_queries(marketing, {"page_size": 5})
    client = _logged_in(marketing)
    second = client.get(first["next"]).json()
    with CaptureQueriesContext(connection) as queries:
        third = client.get(second["next"]).json()
    assert len(queries.captured_queries) == first_count
    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert seen == list(Contact.objects.order_by("-created_at", "-id").values_list("id", flat=True))


def test_search_finds_each_contact_once_by_name_address_or_external_id(marketing, team):
    by_both = ContactFactory(team=team, last_name="Example")
    ContactPointFactory(contact=by_both, channel="email", address="a@example.org")
    ContactPointFactory(contact=by_both, channel="email", address="b@example.org")
    by_external_id = ContactFactory(team=team, external_id="ERP-7")
    ContactFactory(team=team, last_name="Other")

    _count, data = _api_queries(marketing, {"search": "EXAMPLE"})
    assert [row["id"] for row in data["results"]] == [by_both.pk]
    _count, data = _api_queries(marketing, {"search": "ERP-7"})
    assert [row["id"] for row in data["results"]] == [by_external_id.pk]


def test_search_stays_within_the_callers_teams(marketing, team, other_team):
    ContactPointFactory(contact=ContactFactory(team=other_team), address="x@shared.example")
    mine = ContactFactory(team=team)
    ContactPointFactory(contact=mine, address="y@shared.example")

    _count, data = _api_queries(marketing, {"search": "shared.example"})
    assert [row["id"] for row in data["results"]] == [mine.pk]


def test_admin_changelist_query_count_is_flat_and_at_most_15(marketing, team):
    _fill(team, 5)
    small, changelist = _admin_queries(marketing, {})
    assert len(changelist.result_list) == 5
    _fill(team, 45)
    large, changelist = _admin_queries(marketing, {})
    assert len(changelist.result_list) == 50
    assert small == large <= 15
    filtered, _changelist = _admin_queries(marketing, {"q": "example", "language__exact": "de"})
    assert filtered <= 15


def test_admin_search_finds_a_phone_number_written_locally(marketing, team):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="sms", address="+4915112345678")
    ContactFactory(team=team)

    _count, changelist = _admin_queries(marketing, {"q": "+49 151 12345678"})
    assert [c.pk for c in changelist.result_list] == [contact.pk]


def test_admin_does_not_count_the_whole_scope_twice(marketing, team):
    _fill(team, 3)
    _count, changelist = _admin_queries(marketing, {"language__exact": "de"})
    assert changelist.full_result_count is None
    assert changelist.result_count == 3


@pytest.mark.parametrize(
    ("query", "unfiltered"),
    [
        ("", True),
        ("?p=2&o=1", True),
        ("?q=+", True),
        ("?q=anna", False),
        ("?language__exact=de", False),
        ("?tag=3", False),
        ("?team__id__exact=1&p=2", False),
    ],
)
def test_only_an_unfiltered_changelist_counts_by_estimate(query, unfiltered):
    assert changelist_is_unfiltered(RequestFactory().get(CHANGELIST + query)) is unfiltered


def test_changelist_shows_the_estimate_only_when_unfiltered(marketing, team, monkeypatch):
    _fill(team, 3)
    monkeypatch.setattr(selectors, "estimated_count", lambda queryset: 250_000)

    _count, changelist = _admin_queries(marketing, {})
    assert isinstance(changelist.paginator, EstimatedCountPaginator)
    assert changelist.result_count == 250_000
    assert len(changelist.result_list) == 3

    _count, changelist = _admin_queries(marketing, {"language__exact": "de"})
    assert not isinstance(changelist.paginator, EstimatedCountPaginator)
    assert changelist.result_count == 3


def test_a_small_estimate_is_replaced_by_the_exact_count(team, monkeypatch):
    _fill(team, 3)
    monkeypatch.setattr(selectors, "estimated_count", lambda queryset: 40)
    assert EstimatedCountPaginator(Contact.objects.all(), 100).count == 3


def test_only_postgresql_estimates_and_small_lists_count_exactly(team):
    _fill(team, 2)
    estimate = selectors.estimated_count(Contact.objects.all())

    if connection.vendor == "postgresql":
        assert isinstance(estimate, int)
    else:
        assert estimate is None  # the SQLite default has no planner
    assert EstimatedCountPaginator(Contact.objects.all(), 100).count == 2


@pytest.mark.postgres
def test_postgresql_estimate_follows_the_table_statistics(team):
    _fill(team, 30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_contact")
    assert selectors.estimated_count(Contact.objects.filter(team=team)) == pytest.approx(30, abs=5)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("model", "lookup"),
    [
        (Contact, Q(search_document__icontains="Schmidt")),
        # An address filter asks its contact's document first (points_with_address_containing).
        (ContactPoint, Q(contact__search_document__icontains="mail.example")),
    ],
)
def test_icontains_as_django_writes_it_fits_the_search_index(team, model, lookup):
    """The index is on UPPER(search_document), the expression Django's icontains compares."""
    _fill(team, 3)
    sql, params = model.objects.filter(lookup).order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        # Tiny test tables are cheapest to scan; forbid scans (and walking any btree in full) to
        # see which index the condition itself fits.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "crm_contact_search_trgm" in plan


def test_tag_filter_still_matches_by_name_case_insensitively(marketing, team):
    tagged = ContactFactory(team=team)
    tagged.tags.add(TagFactory(team=team, name="VIP"))
    ContactFactory(team=team)

    _count, data = _api_queries(marketing, {"tag": "vip"})
    assert [row["id"] for row in data["results"]] == [tagged.pk]


def test_member_team_ids_answers_what_guardian_answers(make_user, team, other_team):
    """Membership is read with one fixed statement (selectors._team_ids_granted) instead of
    guardian's get_objects_for_user; both must name the same teams: granted to the user, to
    a group of the user, to nobody, or on another kind of object with the same key."""
    third = TeamFactory(name="Zahnarzt West", slug="zahnarzt-west")
    direct = make_user("direct", team=team)
    via_group = make_user("via-group")
    group = Group.objects.create(name="Regional office")
    via_group.groups.add(group)
    assign_perm(selectors.TEAM_ACCESS_PERM, group, other_team)
    assign_perm(selectors.TEAM_ACCESS_PERM, group, third)
    both = make_user("both", team=third)
    both.groups.add(group)
    nobody = make_user("nobody")
    # A segment with the id of the team: a grant on it is no team membership.
    segment = SegmentFactory(team=team, pk=team.pk)
    assign_perm("crm.view_segment", nobody, segment)

    for user in (direct, via_group, both, nobody):
        expected = get_objects_for_user(
            user, selectors.TEAM_ACCESS_PERM, klass=Team, accept_global_perms=False
        )
        fresh = type(user).objects.get(pk=user.pk)
        assert selectors.member_team_ids(fresh) == list(expected.values_list("id", flat=True))
    assert selectors.member_team_ids(type(both).objects.get(pk=both.pk)) == [
        other_team.pk,
        third.pk,
    ]


def test_member_team_ids_costs_one_query_per_request(marketing, team):
    user = type(marketing).objects.get(pk=marketing.pk)
    with CaptureQueriesContext(connection) as queries:
        assert selectors.member_team_ids(user) == [team.pk]
        assert selectors.member_team_ids(user) == [team.pk]
    assert len(queries.captured_queries) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("url", [API_LIST, CHANGELIST])
def test_a_page_brings_its_addresses_and_tags_in_its_own_query(marketing, team, url):
    """selectors.contacts_with_listing: two array subqueries in the page's query instead of
    two more queries (and round trips) per page."""
    _fill(team, 3)
    client = _logged_in(marketing)
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    reading_them = [
        query["sql"]
        for query in queries.captured_queries
        if "crm_contactpoint" in query["sql"] or "crm_contact_tags" in query["sql"]
    ]
    assert len(reading_them) == 1
    assert '"crm_contact"."first_name"' in reading_them[0]  # the page's own query


def test_changelist_rows_carry_each_contacts_own_addresses_and_tags(marketing, team):
    _fill(team, 3)
    other = ContactFactory(team=team)  # no address, no tag
    _count, changelist = _admin_queries(marketing, {})
    assert other.pk in {contact.pk for contact in changelist.result_list}
    for contact in changelist.result_list:
        fresh = Contact.objects.get(pk=contact.pk)
        assert (contact.point_rows, contact.tag_names) == (fresh.point_rows, fresh.tag_names)


def test_offset_pages_load_addresses_and_tags_apart(marketing, team):
    """With LIMIT/OFFSET PostgreSQL would run the page's subqueries for every skipped row, so
    an offset page (LimitOffsetPagination, the benchmark's naive figure) loads them after."""
    _fill(team, 4)
    view = ContactViewSet.as_view({"get": "list"}, pagination_class=LimitOffsetPagination)
    request = APIRequestFactory().get(API_LIST, {"limit": 2, "offset": 2})
    force_authenticate(request, user=marketing)
    with CaptureQueriesContext(connection) as queries:
        response = view(request)
    assert [len(row["points"]) for row in response.data["results"]] == [2, 2]
    assert [len(row["tags"]) for row in response.data["results"]] == [2, 2]
    paging = [query["sql"] for query in queries.captured_queries if "OFFSET" in query["sql"]]
    assert len(paging) == 1
    assert "ARRAY(" not in paging[0]
