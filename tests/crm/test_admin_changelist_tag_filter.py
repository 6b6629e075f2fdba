"""The admin's tag filter counts and pages a rare tag by its contacts' ids and a common one
contact by contact (selectors.contacts_with_tag); both give the same rows and exact count."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import selectors
from crm.models import Contact
from tests.factories import ContactFactory, TagFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:crm_contact_changelist")


@pytest.fixture
def tagged(team):
    tag = TagFactory(team=team, name="vip")
    contacts = [ContactFactory(team=team) for _ in range(4)]
    for contact in contacts[:3]:
        contact.tags.add(tag, TagFactory(team=team))
    return tag, contacts[:3]


def _changelist(user, params: dict) -> tuple[object, int]:
    client = Client()
    client.force_login(user)
    client.get(CHANGELIST)  # content types and the like, which a live server has cached
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return response.context["cl"], len(queries.captured_queries)


@pytest.mark.parametrize("rare_below", [selectors.RARE_TAG_CONTACTS, 1])
def test_rare_and_common_tags_list_and_count_the_same(marketing, tagged, monkeypatch, rare_below):
    monkeypatch.setattr(selectors, "RARE_TAG_CONTACTS", rare_below)
    tag, contacts = tagged
    changelist, queries = _changelist(marketing, {"tag": str(tag.pk)})
    expected = sorted(contacts, key=lambda c: (c.created_at, c.pk), reverse=True)
    assert [c.pk for c in changelist.result_list] == [c.pk for c in expected]
    assert changelist.result_count == 3
    assert queries <= 15


def test_another_teams_tag_shows_none_of_its_contacts(marketing, other_team):
    foreign = TagFactory(team=other_team, name="vip")
    ContactFactory(team=other_team).tags.add(foreign)
    changelist, _queries = _changelist(marketing, {"tag": str(foreign.pk)})
    assert list(changelist.result_list) == []
    assert changelist.result_count == 0


@pytest.mark.parametrize("rare_below", [selectors.RARE_TAG_CONTACTS, 1])
def test_contacts_with_tag_matches_a_join(tagged, monkeypatch, rare_below):
    monkeypatch.setattr(selectors, "RARE_TAG_CONTACTS", rare_below)
    tag, contacts = tagged
    found = selectors.contacts_with_tag(Contact.objects.all(), tag.pk)
    assert sorted(found.values_list("pk", flat=True)) == sorted(c.pk for c in contacts)
    assert found.count() == 3
