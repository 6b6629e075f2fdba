"""The contact list's tag filter: a tag of the caller's teams by name (any case), each contact
once, and on PostgreSQL the tag ids read once rather than joined for every contact."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import roles
from tests.factories import ContactFactory, TagFactory

pytestmark = pytest.mark.django_db

API_LIST = reverse("contact-list")


def _ids(client, params: dict) -> set[int]:
    response = client.get(API_LIST, params)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == len({row["id"] for row in rows})  # each contact once
    return {row["id"] for row in rows}


@pytest.fixture
def tagged(team, other_team):
    """A `vip` contact in each team, one carrying both of its team's tags named alike."""
    mine = ContactFactory(team=team)
    mine.tags.add(TagFactory(team=team, name="VIP"), TagFactory(team=team, name="vip"))
    theirs = ContactFactory(team=other_team)
    theirs.tags.add(TagFactory(team=other_team, name="vip"))
    ContactFactory(team=team)
    return mine, theirs


def test_tag_filter_finds_the_callers_contacts_by_any_case(api_client_for, marketing, tagged):
    mine, _theirs = tagged
    client = api_client_for(marketing)
    assert _ids(client, {"tag": "vip"}) == {mine.pk}
    assert _ids(client, {"tag": " Vip "}) == {mine.pk}
    assert _ids(client, {"tag": "kino"}) == set()


def test_tag_filter_of_an_auditor_covers_every_team(api_client_for, auditor, tagged):
    assert _ids(api_client_for(auditor), {"tag": "VIP"}) == {contact.pk for contact in tagged}


def test_outsider_finds_only_their_own_teams_tagged_contacts(api_client_for, outsider, tagged):
    _mine, theirs = tagged
    assert _ids(api_client_for(outsider), {"tag": "vip"}) == {theirs.pk}


@pytest.mark.postgres
def test_tag_ids_are_read_once_not_joined_per_contact(api_client_for, marketing, tagged):
    with CaptureQueriesContext(connection) as queries:
        _ids(api_client_for(marketing), {"tag": "vip"})
    listing = next(q["sql"] for q in queries.captured_queries if "crm_contact_tags" in q["sql"])
    assert '."tag_id" = ANY(ARRAY(SELECT' in listing


def test_tag_filter_of_a_user_without_teams_finds_nothing(api_client_for, make_user, tagged):
    lonely = make_user("lonely", roles.MARKETING)
    assert _ids(api_client_for(lonely), {"tag": "vip"}) == set()
