"""Search in the contact list API, paged by cursor: every match in order, forward and back,
at the plain list's query count; on PostgreSQL a common term walks the cursor order and stops
after the page."""

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

from crm.api.views import ContactViewSet
from crm.models import Contact
from tests.factories import ContactFactory, ContactPointFactory, TagFactory

pytestmark = pytest.mark.django_db

LIST = reverse("contact-list")


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
    api_client_for, marketing, people, params, where
):
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
    client = api_client_for(marketing)
    expected = _expected(people, "schmidt")
    first = client.get(LIST, {"search": "schmidt", "page_size": 3}).data
    second = client.get(first["next"].replace("page_size=3", "page_size=9")).data
    assert [row["id"] for row in second["results"]] == expected[3:12]


def test_more_matches_than_a_page_without_cursor_paging(marketing, people):
    """Offset paging (no cursor) counts and pages the whole set."""
    view = ContactViewSet.as_view({"get": "list"}, pagination_class=LimitOffsetPagination)
    request = APIRequestFactory().get(LIST, {"search": "schmidt", "limit": 5, "offset": 15})
    force_authenticate(request, user=marketing)
    response = view(request)
    expected = _expected(people, "schmidt")
    assert response.data["count"] == len(expected)
    assert [row["id"] for row in response.data["results"]] == expected[15:20]


def test_retrieve_with_search_parameters_finds_any_match(api_client_for, marketing, team):
    """Filters apply to retrieve too; only the list is paged, so a match beyond the first
    page is still found."""
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
    """EXPLAIN ANALYZE of the request's page query (the one that searches)."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(LIST, params).status_code == 200
    (sql,) = [q["sql"] for q in queries.captured_queries if "search_document" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    return json.loads(plan)[0]["Plan"] if isinstance(plan, str) else plan[0]["Plan"]


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


@pytest.mark.postgres
def test_a_common_term_walks_the_cursor_order_and_stops(api_client_for, marketing, team):
    """The walk is an index scan in cursor order that stops after the page (and one more
    row) instead of collecting all 300 matches: one condition per contact, no address
    look-up."""
    schmidts = [ContactFactory(team=team, last_name="Schmidt") for _ in range(300)]
    for contact in schmidts[::10]:
        ContactPointFactory(contact=contact, channel="email", address=f"{contact.pk}@schmidt.de")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_contact, crm_contactpoint")
        # Tiny tables are cheapest to scan whole; forbid that to see the shape of the walk.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    plan = _list_plan(api_client_for(marketing), {"search": "schmidt", "page_size": 10})
    nodes = _nodes(plan)
    (walk,) = [node for node in nodes if node.get("Relation Name") == "crm_contact"]
    assert walk["Node Type"] == "Index Scan"
    assert walk["Actual Rows"] == 11
    # Addresses are read for the page's own rows (its listing), not to decide the search.
    points = [node for node in nodes if node.get("Relation Name") == "crm_contactpoint"]
    assert all(node["Actual Loops"] <= 11 for node in points)


def test_a_term_finds_organisations_addresses_and_full_names(api_client_for, marketing, team):
    by_organisation = ContactFactory(team=team, organisation="Zyxwv Praxis")
    by_address = ContactFactory(team=team)
    ContactPointFactory(contact=by_address, channel="email", address="a@zyxwv.example")
    by_full_name = ContactFactory(team=team, first_name="Anna", last_name="Zyxwv")
    ContactFactory(team=team, first_name="Anna", last_name="Other")
    client = api_client_for(marketing)

    def found(term: str) -> set[int]:
        return {row["id"] for row in client.get(LIST, {"search": term}).data["results"]}

    assert found("ZYXWV") == {by_organisation.pk, by_address.pk, by_full_name.pk}
    assert found("anna zyxwv") == {by_full_name.pk}
    # A term never spans two parts (name and organisation, two addresses).
    assert found("Zyxwv Praxis a@") == set()
