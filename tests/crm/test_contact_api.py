from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from crm.models import Contact, ContactPoint
from crm.services import team_member_add
from tests.factories import ContactFactory, ContactPointFactory, TagFactory

pytestmark = pytest.mark.django_db

LIST = reverse("contact-list")


def detail(contact: Contact) -> str:
    return reverse("contact-detail", args=[contact.pk])


def ids(response) -> list[int]:
    return [row["id"] for row in response.data["results"]]


def fresh_client(user) -> APIClient:
    """A client for a freshly loaded user, so no permission cache survives from earlier calls."""
    client = APIClient()
    client.force_authenticate(user=get_user_model().objects.get(pk=user.pk))
    return client


@pytest.fixture
def contact(team):
    contact = ContactFactory(team=team, first_name="Jana", last_name="Schmidt")
    ContactPointFactory(contact=contact, channel="email", address="jana@example.de")
    contact.tags.add(TagFactory(team=team, name="vip"))
    return contact


# --- happy paths -----------------------------------------------------------------------------


def test_marketing_creates_contact_with_normalised_points_and_tags(api_client_for, marketing, team):
    TagFactory(team=team, name="Kino")
    newsletter = TagFactory(team=team, name="newsletter")
    response = api_client_for(marketing).post(
        LIST,
        {
            "team": team.pk,
            "first_name": "Jana",
            "last_name": "Schmidt",
            "language": "en",
            "attributes": {"city": "Hamburg"},
            "points": [
                {"channel": "email", "address": " Jana@Example.DE "},
                {"channel": "sms", "address": "0151 23456789"},
            ],
            "tags": ["kino", newsletter.pk],
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    contact = Contact.objects.get()
    assert response.data["id"] == contact.pk
    assert response.data["team_name"] == team.name
    assert response.data["full_name"] == "Jana Schmidt"
    assert sorted(response.data["tags"]) == ["Kino", "newsletter"]
    assert sorted((p["channel"], p["address"]) for p in response.data["points"]) == [
        ("email", "jana@example.de"),
        ("sms", "+4915123456789"),
    ]
    assert contact.attributes == {"city": "Hamburg"}
    assert contact.history.first().history_user == marketing


def test_retrieve_shows_points_and_tag_names(api_client_for, marketing, contact):
    response = api_client_for(marketing).get(detail(contact))
    assert response.status_code == 200
    assert response.data["tags"] == ["vip"]
    assert response.data["points"][0]["address"] == "jana@example.de"
    assert "created_at" in response.data


def test_patch_changes_fields_and_replaces_tags(api_client_for, marketing, contact, team):
    TagFactory(team=team, name="kino")
    response = api_client_for(marketing).patch(
        detail(contact), {"organisation": "Praxis Nord", "tags": ["kino"]}, format="json"
    )
    assert response.status_code == 200, response.data
    contact.refresh_from_db()
    assert contact.organisation == "Praxis Nord"
    assert contact.first_name == "Jana"
    assert [tag.name for tag in contact.tags.all()] == ["kino"]
    assert response.data["tags"] == ["kino"]


def test_patch_without_tags_keeps_them(api_client_for, marketing, contact):
    response = api_client_for(marketing).patch(detail(contact), {"last_name": "Meyer"})
    assert response.status_code == 200
    assert response.data["tags"] == ["vip"]


def test_delete_removes_contact_and_its_points(api_client_for, marketing, contact):
    response = api_client_for(marketing).delete(detail(contact))
    assert response.status_code == 204
    assert Contact.objects.count() == 0
    assert ContactPoint.objects.count() == 0


def test_agent_may_change_but_not_create_or_delete(api_client_for, agent, contact, team):
    client = api_client_for(agent)
    assert client.patch(detail(contact), {"profession": "Ärztin"}).status_code == 200
    assert client.post(LIST, {"team": team.pk, "first_name": "X"}).status_code == 403
    assert client.delete(detail(contact)).status_code == 403
    assert Contact.objects.count() == 1


# --- bad input: 400 and nothing changed ------------------------------------------------------


def test_invalid_phone_is_refused_and_nothing_created(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        LIST,
        {"team": team.pk, "first_name": "J", "points": [{"channel": "sms", "address": "12"}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.data["code"] == "address_invalid"
    assert "address" in response.data
    assert Contact.objects.count() == 0
    assert ContactPoint.objects.count() == 0


def test_duplicate_email_is_refused_and_nothing_created(api_client_for, marketing, contact):
    response = api_client_for(marketing).post(
        LIST,
        {
            "team": contact.team_id,
            "first_name": "Other",
            "points": [{"channel": "email", "address": "JANA@example.de"}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.data["code"] == "contact_point_duplicate"
    assert Contact.objects.count() == 1
    assert ContactPoint.objects.count() == 1


def test_unknown_channel_in_points_is_refused(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        LIST,
        {"team": team.pk, "points": [{"channel": "fax", "address": "123"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "points" in response.data
    assert Contact.objects.count() == 0


def test_unknown_team_is_a_field_error(api_client_for, marketing, team):
    response = api_client_for(marketing).post(LIST, {"team": 999_999, "first_name": "J"})
    assert response.status_code == 400
    assert "team" in response.data
    assert Contact.objects.count() == 0


def test_team_the_caller_does_not_belong_to_is_a_field_error(api_client_for, marketing, other_team):
    response = api_client_for(marketing).post(LIST, {"team": other_team.pk, "first_name": "J"})
    assert response.status_code == 400
    assert "team" in response.data
    assert Contact.objects.count() == 0


def test_missing_team_is_a_field_error(api_client_for, marketing):
    response = api_client_for(marketing).post(LIST, {"first_name": "J"})
    assert response.status_code == 400
    assert "team" in response.data


@pytest.mark.parametrize("by", ["id", "name"])
def test_other_teams_tag_is_refused(api_client_for, marketing, team, other_team, by):
    foreign = TagFactory(team=other_team, name="foreign")
    reference = foreign.pk if by == "id" else foreign.name
    response = api_client_for(marketing).post(
        LIST, {"team": team.pk, "first_name": "J", "tags": [reference]}, format="json"
    )
    assert response.status_code == 400
    assert "tags" in response.data
    assert Contact.objects.count() == 0


def test_other_teams_tag_is_refused_on_patch(api_client_for, marketing, contact, other_team):
    foreign = TagFactory(team=other_team, name="foreign")
    response = api_client_for(marketing).patch(
        detail(contact), {"tags": [foreign.pk], "first_name": "Changed"}, format="json"
    )
    assert response.status_code == 400
    contact.refresh_from_db()
    assert contact.first_name == "Jana"
    assert [tag.name for tag in contact.tags.all()] == ["vip"]


def test_unknown_language_is_refused(api_client_for, marketing, team):
    response = api_client_for(marketing).post(LIST, {"team": team.pk, "language": "xx"})
    assert response.status_code == 400
    assert "language" in response.data
    assert Contact.objects.count() == 0


def test_invalid_time_zone_is_refused(api_client_for, marketing, team):
    response = api_client_for(marketing).post(LIST, {"team": team.pk, "time_zone": "Mars/Base"})
    assert response.status_code == 400
    assert "time_zone" in response.data
    assert Contact.objects.count() == 0


def test_duplicate_external_id_is_refused(api_client_for, marketing, team):
    ContactFactory(team=team, external_id="ERP-1")
    response = api_client_for(marketing).post(LIST, {"team": team.pk, "external_id": "ERP-1"})
    assert response.status_code == 400
    assert response.data["code"] == "contact_invalid"
    assert "external_id" in response.data
    assert Contact.objects.count() == 1


def test_patch_with_unknown_language_changes_nothing(api_client_for, marketing, contact):
    response = api_client_for(marketing).patch(
        detail(contact), {"language": "xx", "first_name": "Changed"}
    )
    assert response.status_code == 400
    contact.refresh_from_db()
    assert (contact.language, contact.first_name) == ("de", "Jana")


def test_attributes_must_be_an_object(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        LIST, {"team": team.pk, "attributes": ["a"]}, format="json"
    )
    assert response.status_code == 400
    assert "attributes" in response.data


# --- scope and roles -------------------------------------------------------------------------


def test_outsider_gets_404_and_changes_nothing(api_client_for, outsider, contact):
    client = api_client_for(outsider)
    assert client.get(detail(contact)).status_code == 404
    assert client.patch(detail(contact), {"first_name": "X"}).status_code == 404
    assert client.put(detail(contact), {"first_name": "X"}).status_code == 404
    assert client.delete(detail(contact)).status_code == 404
    contact.refresh_from_db()
    assert contact.first_name == "Jana"
    assert Contact.objects.count() == 1


def test_outsider_list_shows_only_own_team(api_client_for, outsider, contact, other_team):
    own = ContactFactory(team=other_team)
    response = api_client_for(outsider).get(LIST)
    assert ids(response) == [own.pk]


def test_auditor_reads_every_team(api_client_for, auditor, contact, other_team):
    foreign = ContactFactory(team=other_team)
    client = api_client_for(auditor)
    assert set(ids(client.get(LIST))) == {contact.pk, foreign.pk}
    assert client.get(detail(foreign)).status_code == 200


def test_auditor_may_not_write(api_client_for, auditor, contact, team):
    client = api_client_for(auditor)
    assert client.post(LIST, {"team": team.pk, "first_name": "X"}).status_code == 403
    assert client.patch(detail(contact), {"first_name": "X"}).status_code == 403
    assert client.delete(detail(contact)).status_code == 403
    contact.refresh_from_db()
    assert contact.first_name == "Jana"
    assert Contact.objects.count() == 1


def test_editor_reads_but_may_not_create(api_client_for, editor, contact, team):
    client = api_client_for(editor)
    assert client.get(LIST).status_code == 200
    assert client.post(LIST, {"team": team.pk, "first_name": "X"}).status_code == 403
    assert client.patch(detail(contact), {"first_name": "X"}).status_code == 403
    assert Contact.objects.count() == 1


def test_reviewer_may_not_list_contacts(api_client_for, reviewer_legal):
    assert api_client_for(reviewer_legal).get(LIST).status_code == 403


def test_unauthenticated_is_refused(contact, team):
    client = APIClient()
    assert client.get(LIST).status_code == 401
    assert client.get(detail(contact)).status_code == 401
    assert client.post(LIST, {"team": team.pk}).status_code == 401
    assert Contact.objects.count() == 1


def test_token_authentication_works(marketing, contact):
    token = Token.objects.create(user=marketing)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get(LIST)
    assert response.status_code == 200
    assert ids(response) == [contact.pk]


def test_wrong_token_is_refused(contact):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(LIST).status_code == 401


# --- filters, search, paging -----------------------------------------------------------------


@pytest.fixture
def population(team):
    vip = TagFactory(team=team, name="vip")
    anna = ContactFactory(
        team=team,
        first_name="Anna",
        last_name="Berg",
        organisation="Praxis am See",
        language="en",
        preferred_channel="sms",
        external_id="ERP-7",
    )
    anna.tags.add(vip)
    ContactPointFactory(contact=anna, channel="sms", address="+4915111111111")
    bernd = ContactFactory(team=team, first_name="Bernd", last_name="Kurz", language="de")
    ContactPointFactory(contact=bernd, channel="email", address="bernd@kino.example")
    return {"anna": anna, "bernd": bernd}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"tag": "vip"}, {"anna"}),
        ({"tag": "VIP"}, {"anna"}),
        ({"tag": "none"}, set()),
        ({"language": "de"}, {"bernd"}),
        ({"channel": "sms"}, {"anna"}),
        ({"channel": "email"}, {"bernd"}),
        ({"channel": "whatsapp"}, set()),
        ({"preferred_channel": "sms"}, {"anna"}),
        ({"external_id": "ERP-7"}, {"anna"}),
        ({"search": "berg"}, {"anna"}),
        ({"search": "see"}, {"anna"}),
        ({"search": "ERP-7"}, {"anna"}),
        ({"search": "kino.example"}, {"bernd"}),
        ({"search": "+491511111"}, {"anna"}),
        ({"search": "nobody"}, set()),
        ({"language": "en", "channel": "sms"}, {"anna"}),
        ({"language": "en", "channel": "email"}, set()),
    ],
)
def test_filters(api_client_for, marketing, population, query, expected):
    response = api_client_for(marketing).get(LIST, query)
    assert response.status_code == 200
    by_id = {contact.pk: name for name, contact in population.items()}
    assert {by_id[pk] for pk in ids(response)} == expected


def test_team_filter(api_client_for, make_user, team, other_team):
    both = make_user("both", "marketing", team)
    team_member_add(team=other_team, user=both)
    mine = ContactFactory(team=team)
    theirs = ContactFactory(team=other_team)
    client = api_client_for(both)
    assert ids(client.get(LIST, {"team": team.pk})) == [mine.pk]
    assert ids(client.get(LIST, {"team": other_team.pk})) == [theirs.pk]


def test_team_filter_cannot_reach_other_teams(api_client_for, marketing, other_team):
    ContactFactory(team=other_team)
    assert ids(api_client_for(marketing).get(LIST, {"team": other_team.pk})) == []


def test_created_after_and_before(api_client_for, marketing, team):
    old = ContactFactory(team=team)
    new = ContactFactory(team=team)
    Contact.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=10))
    cut = (timezone.now() - dt.timedelta(days=1)).isoformat()
    client = api_client_for(marketing)
    assert ids(client.get(LIST, {"created_after": cut})) == [new.pk]
    assert ids(client.get(LIST, {"created_before": cut})) == [old.pk]


def test_invalid_filter_value_is_a_400(api_client_for, marketing):
    response = api_client_for(marketing).get(LIST, {"language": "xx"})
    assert response.status_code == 400
    assert "language" in response.data


def test_cursor_pagination_walks_every_contact_once(api_client_for, marketing, team):
    created = {ContactFactory(team=team).pk for _ in range(5)}
    client = api_client_for(marketing)
    response = client.get(LIST, {"page_size": 2})
    seen = ids(response)
    assert response.data["next"]
    assert "cursor=" in response.data["next"]
    while response.data["next"]:
        response = client.get(response.data["next"])
        seen += ids(response)
    assert len(seen) == 5
    assert set(seen) == created


def test_list_is_newest_first(api_client_for, marketing, team):
    first = ContactFactory(team=team)
    second = ContactFactory(team=team)
    assert ids(api_client_for(marketing).get(LIST)) == [second.pk, first.pk]


def test_client_cannot_reorder_the_cursor(api_client_for, marketing, team):
    first = ContactFactory(team=team, last_name="A")
    second = ContactFactory(team=team, last_name="B")
    response = api_client_for(marketing).get(LIST, {"ordering": "last_name"})
    assert ids(response) == [second.pk, first.pk]


def _populate(team, start: int, count: int) -> None:
    tags = [TagFactory(team=team, name=f"t{start + i}") for i in range(2)]
    for n in range(start, start + count):
        contact = ContactFactory(team=team)
        ContactPointFactory(contact=contact, channel="email", address=f"p{n}@example.org")
        ContactPointFactory(contact=contact, channel="sms", address=f"+49151{n:08d}")
        contact.tags.add(*tags)


def test_list_query_count_does_not_grow_with_page_size(
    marketing, team, django_assert_max_num_queries
):
    url = f"{LIST}?page_size=100"
    _populate(team, 0, 5)
    with CaptureQueriesContext(connection) as small:
        response = fresh_client(marketing).get(url)
    assert len(response.data["results"]) == 5
    _populate(team, 5, 55)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = fresh_client(marketing).get(url)
    assert len(response.data["results"]) == 60
    assert all(
        len(row["points"]) == 2 and len(row["tags"]) == 2 for row in response.data["results"]
    )
    with CaptureQueriesContext(connection) as large:
        fresh_client(marketing).get(url)
    assert len(large.captured_queries) == len(small.captured_queries)


# --- bulk actions ----------------------------------------------------------------------------

BULK_TAG = reverse("contact-bulk-tag")
BULK_MOVE = reverse("contact-bulk-assign-team")


def test_bulk_tag_tags_every_contact(api_client_for, marketing, team):
    tag = TagFactory(team=team, name="autumn")
    contacts = [ContactFactory(team=team) for _ in range(3)]
    contacts[0].tags.add(tag)
    response = api_client_for(marketing).post(
        BULK_TAG, {"contact_ids": [c.pk for c in contacts], "tag": tag.pk}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data == {"count": 2}
    assert tag.contacts.count() == 3


def test_bulk_tag_refuses_other_teams_contacts_and_changes_nothing(
    api_client_for, marketing, team, other_team
):
    tag = TagFactory(team=team, name="autumn")
    mine = ContactFactory(team=team)
    foreign = ContactFactory(team=other_team)
    response = api_client_for(marketing).post(
        BULK_TAG, {"contact_ids": [mine.pk, foreign.pk], "tag": tag.pk}, format="json"
    )
    assert response.status_code == 400
    assert "contact_ids" in response.data
    assert tag.contacts.count() == 0


def test_bulk_tag_refuses_other_teams_tag(api_client_for, outsider, team, other_team):
    tag = TagFactory(team=team, name="autumn")
    theirs = ContactFactory(team=other_team)
    response = api_client_for(outsider).post(
        BULK_TAG, {"contact_ids": [theirs.pk], "tag": tag.pk}, format="json"
    )
    assert response.status_code == 400
    assert "tag" in response.data
    assert tag.contacts.count() == 0


@pytest.mark.parametrize("persona", ["auditor", "editor"])
def test_bulk_tag_needs_change_permission(api_client_for, request, team, persona):
    tag = TagFactory(team=team, name="autumn")
    contact = ContactFactory(team=team)
    client = api_client_for(request.getfixturevalue(persona))
    response = client.post(BULK_TAG, {"contact_ids": [contact.pk], "tag": tag.pk}, format="json")
    assert response.status_code == 403
    assert tag.contacts.count() == 0


def test_bulk_tag_needs_contact_ids(api_client_for, marketing, team):
    tag = TagFactory(team=team)
    response = api_client_for(marketing).post(
        BULK_TAG, {"contact_ids": [], "tag": tag.pk}, format="json"
    )
    assert response.status_code == 400
    assert "contact_ids" in response.data


def test_bulk_assign_team_moves_contacts(api_client_for, make_user, team, other_team):
    both = make_user("both", "marketing", team)
    team_member_add(team=other_team, user=both)
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, address="move@example.org")
    response = api_client_for(both).post(
        BULK_MOVE, {"contact_ids": [contact.pk], "team": other_team.pk}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data == {"count": 1}
    contact.refresh_from_db()
    assert contact.team == other_team
    assert contact.points.get().team == other_team


def test_bulk_assign_team_refuses_a_team_the_caller_does_not_belong_to(
    api_client_for, marketing, team, other_team
):
    contact = ContactFactory(team=team)
    response = api_client_for(marketing).post(
        BULK_MOVE, {"contact_ids": [contact.pk], "team": other_team.pk}, format="json"
    )
    assert response.status_code == 400
    assert "team" in response.data
    contact.refresh_from_db()
    assert contact.team == team


def test_bulk_assign_team_clash_is_refused_as_a_whole(api_client_for, make_user, team, other_team):
    both = make_user("both", "marketing", team)
    team_member_add(team=other_team, user=both)
    ContactPointFactory(contact__team=other_team, address="clash@example.org")
    clean = ContactFactory(team=team)
    clashing = ContactFactory(team=team)
    ContactPointFactory(contact=clashing, address="clash@example.org")
    response = api_client_for(both).post(
        BULK_MOVE, {"contact_ids": [clean.pk, clashing.pk], "team": other_team.pk}, format="json"
    )
    assert response.status_code == 400
    assert response.data["code"] == "team_move_refused"
    assert Contact.objects.filter(team=team).count() == 2
