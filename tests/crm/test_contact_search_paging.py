"""Search in the contact list API, paged by cursor: the same pages whether the term is common or
rare (selectors.contacts_matching with the paginator's page window), and on PostgreSQL the
branch the term does not take is never executed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.test import APIRequestFactory, force_authenticate

from crm import selectors
from crm.api.views import ContactViewSet
from crm.models import Contact
from tests.factories import ContactFactory, ContactPointFactory, TagFactory

pytestmark = pytest.mark.django_db

LIST = reverse("contact-list")
# Forces each branch of the PostgreSQL search: every term common, or every term rare.
ALWAYS_COMMON, ALWAYS_RARE = 1, 1_000_000


@pytest.fixture
def people(team, other_team) -> list[Contact]:
    """40 contacts: every second a Schmidt, every third found only by an address, some
    created at the same instant (the cursor's offset), one tag and two languages."""
    tag = TagFactory(team=team, name="newsletter")
    start = timezone.now() - dt.timedelta(days=1)
    contacts = []
    for n in range(40):
        contact = ContactFactory(
            team=team,
            first_name=f"Person{n}",
            last_name="Schmidt" if n % 2 == 0 else f"Other{n}",
            language="de" if n % 4 < 2 else "en",
        )
        if n % 3 == 0:
            ContactPointFactory(
                contact=contact, channel="email", address=f"p{n}@schmidt-mail.example"
            )
        if n % 5 != 0:
            contact.tags.add(tag)
        # Groups of three share a creation instant.
        Contact.objects.filter(pk=contact.pk).update(
            created_at=start + dt.timedelta(minutes=n // 3)
        )
        contacts.append(contact)
    # Another team's Schmidts never show.
    for _ in range(3):
        ContactFactory(team=other_team, last_name="Schmidt")
    return list(Contact.objects.filter(team=team))


def _matches(contact: Contact, term: str) -> bool:
    term = term.lower()
    return (
        term in contact.first_name.lower()
        or term in contact.last_name.lower()
        or term in contact.organisation.lower()
        or term == contact.external_id
        or any(term in point.address.lower() for point in contact.points.all())
    )


def _expected(people: list[Contact], term: str, **where: Any) -> list[int]:
    found = [
        contact
        for contact in people
        if _matches(contact, term)
        and all(
            (
                contact.tags.filter(name=value).exists()
                if field == "tag"
                else getattr(contact, field) == value
            )
            for field, value in where.items()
        )
    ]
    found.sort(key=lambda contact: (contact.created_at, contact.pk), reverse=True)
    return [contact.pk for contact in found]


def _walk(client, params: dict[str, Any]) -> tuple[list[int], list[int], int]:
    """Every page forward by `next`, then back by `previous`; and the query count of each
    request (it must not vary; the first also loads the user's permissions, so a warm-up
    request goes first)."""
    client.get(LIST, params)
    counts = set()

    def get(url: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, query)
        assert response.status_code == 200, response.content[:300]
        counts.add(len(queries.captured_queries))
        return response.data

    data = get(LIST, params)
    forward = [row["id"] for row in data["results"]]
    while data["next"]:
        data = get(data["next"])
        forward += [row["id"] for row in data["results"]]
    backward = [row["id"] for row in reversed(data["results"])]
    while data["previous"]:
        data = get(data["previous"])
        backward += [row["id"] for row in reversed(data["results"])]
    assert len(counts) == 1, counts
    return forward, backward[::-1], counts.pop()


@pytest.mark.parametrize("threshold", [ALWAYS_COMMON, 5, ALWAYS_RARE])
@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"search": "schmidt"}, {}),
        ({"search": "Person1"}, {}),
        ({"search": "schmidt-mail"}, {}),
        ({"search": "nobody"}, {}),
        ({"search": "schmidt", "language": "de"}, {"language": "de"}),
        ({"search": "schmidt", "tag": "newsletter"}, {"tag": "newsletter"}),
        (
            {"search": "SCHMIDT", "language": "en", "tag": "newsletter"},
            {"language": "en", "tag": "newsletter"},
        ),
    ],
)
def test_search_pages_are_the_matches_in_order_forward_and_back(
    api_client_for, marketing, people, monkeypatch, threshold, params, where
):
    monkeypatch.setattr(selectors, "COMMON_ADDRESS_MATCHES", threshold)
    expected = _expected(people, params["search"], **where)
    forward, backward, _queries = _walk(api_client_for(marketing), {**params, "page_size": 4})
    assert forward == expected
    assert backward == expected


def test_search_costs_the_same_queries_as_the_plain_list(api_client_for, marketing, people):
    client = api_client_for(marketing)
    *_, plain = _walk(client, {"page_size": 7})
    *_, searched = _walk(client, {"search": "schmidt", "page_size": 7})
    *_, combined = _walk(client, {"search": "schmidt", "tag": "newsletter", "page_size": 7})
    assert plain == searched == combined


def test_a_cursor_from_another_page_size_still_gives_the_right_rows(
    api_client_for, marketing, people
):
    """The window's limit follows the request's page size and the cursor's offset."""
    client = api_client_for(marketing)
    expected = _expected(people, "schmidt")
    first = client.get(LIST, {"search": "schmidt", "page_size": 3}).data
    second = client.get(first["next"].replace("page_size=3", "page_size=9")).data
    assert [row["id"] for row in second["results"]] == expected[3:12]


def test_more_matches_than_a_page_without_cursor_paging(marketing, people):
    """A paginator without a window (offset paging) searches the whole set."""
    view = ContactViewSet.as_view({"get": "list"}, pagination_class=LimitOffsetPagination)
    request = APIRequestFactory().get(LIST, {"search": "schmidt", "limit": 5, "offset": 15})
    force_authenticate(request, user=marketing)
    response = view(request)
    expected = _expected(people, "schmidt")
    assert response.data["count"] == len(expected)
    assert [row["id"] for row in response.data["results"]] == expected[15:20]


def test_retrieve_with_search_parameters_is_not_windowed(api_client_for, marketing, team):
    """Filters apply to retrieve too; only the list is paged, so the page window must not
    hide a match beyond the first page."""
    contacts = [ContactFactory(team=team, last_name="Schmidt") for _ in range(55)]
    oldest = min(contacts, key=lambda contact: (contact.created_at, contact.pk))
    response = api_client_for(marketing).get(
        reverse("contact-detail", args=[oldest.pk]), {"search": "schmidt"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("term", ["%", "_", "50%", "a_b", "  schmidt  ", "x" * 300, "'; --"])
def test_odd_search_terms_match_literally(api_client_for, marketing, people, term):
    response = api_client_for(marketing).get(LIST, {"search": term, "page_size": 100})
    assert response.status_code == 200
    assert [row["id"] for row in response.data["results"]] == _expected(people, term.strip())


def test_blank_search_is_no_filter(api_client_for, marketing, people):
    response = api_client_for(marketing).get(LIST, {"search": "   ", "page_size": 100})
    assert len(response.data["results"]) == len(people)


def test_invalid_cursor_with_search_is_a_404(api_client_for, marketing, people):
    response = api_client_for(marketing).get(LIST, {"search": "schmidt", "cursor": "bogus"})
    assert response.status_code == 404


def _list_plan(client, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the request's page query (the one with the search CTE)."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(LIST, params).status_code == 200
    (sql,) = [q["sql"] for q in queries.captured_queries if "search_few_addresses" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    return json.loads(plan)[0]["Plan"] if isinstance(plan, str) else plan[0]["Plan"]


def _gated(node: dict[str, Any]) -> list[tuple[str, int]]:
    """(one-time filter, loops of the subtree under it) for every gated branch."""
    found = []
    if "One-Time Filter" in node:
        loops = max((child.get("Actual Loops", 0) for child in node.get("Plans", [])), default=0)
        found.append((node["One-Time Filter"], loops))
    for child in node.get("Plans", []):
        found += _gated(child)
    return found


@pytest.mark.postgres
@pytest.mark.parametrize(("threshold", "walked"), [(ALWAYS_COMMON, True), (ALWAYS_RARE, False)])
def test_only_the_branch_for_the_term_runs(
    api_client_for, marketing, people, monkeypatch, threshold, walked
):
    """Common: the cursor-ordered walk runs, the two id-set parts do not. Rare: the reverse."""
    monkeypatch.setattr(selectors, "COMMON_ADDRESS_MATCHES", threshold)
    gated = _gated(_list_plan(api_client_for(marketing), {"search": "schmidt"}))
    walk = [loops for condition, loops in gated if ">=" in condition]
    parts = [loops for condition, loops in gated if "<" in condition and ">=" not in condition]
    assert len(walk) == 1
    assert len(parts) == 2
    assert (walk[0] > 0) is walked
    assert all((loops > 0) is not walked for loops in parts)


@pytest.mark.postgres
def test_a_common_term_walks_the_cursor_order_and_stops(
    api_client_for, marketing, team, monkeypatch
):
    """The walk is an index scan in cursor order that stops after the page (and one more
    row) instead of collecting all 300 matches."""
    monkeypatch.setattr(selectors, "COMMON_ADDRESS_MATCHES", 10)
    schmidts = [ContactFactory(team=team, last_name="Schmidt") for _ in range(300)]
    for contact in schmidts[::10]:
        ContactPointFactory(contact=contact, channel="email", address=f"{contact.pk}@schmidt.de")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_contact, crm_contactpoint")
        # Tiny tables are cheapest to scan whole; forbid that to see the shape of the walk.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    plan = _list_plan(api_client_for(marketing), {"search": "schmidt", "page_size": 10})
    (walk,) = [node for node in _nodes(plan) if ">=" in node.get("One-Time Filter", "")]
    scans = [node for node in _nodes(walk) if node["Node Type"] == "Index Scan"]
    assert scans
    assert max(node["Actual Rows"] for node in scans) == 11


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found
