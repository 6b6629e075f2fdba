"""Teams, tags and contact points over the API."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from crm.models import ContactPoint, Tag, Team
from crm.services import team_member_add
from tests.factories import (
    ContactFactory,
    ContactPointFactory,
    SegmentFactory,
    TagFactory,
    TeamFactory,
)

pytestmark = pytest.mark.django_db

TEAMS = reverse("team-list")
TAGS = reverse("tag-list")
POINTS = reverse("contact-point-list")


def ids(response) -> list[int]:
    return [row["id"] for row in response.data["results"]]


def point_url(point: ContactPoint) -> str:
    return reverse("contact-point-detail", args=[point.pk])


def tag_url(tag: Tag) -> str:
    return reverse("tag-detail", args=[tag.pk])


# --- teams -----------------------------------------------------------------------------------


def test_member_sees_own_team_with_member_count(
    api_client_for, marketing, editor, team, other_team
):
    response = api_client_for(marketing).get(TEAMS)
    assert response.status_code == 200
    assert ids(response) == [team.pk]
    assert response.data["results"][0]["member_count"] == 2
    assert response.data["results"][0]["name"] == "Kino Nord"


def test_outsider_sees_only_own_team(api_client_for, outsider, team, other_team):
    client = api_client_for(outsider)
    assert ids(client.get(TEAMS)) == [other_team.pk]
    assert client.get(reverse("team-detail", args=[team.pk])).status_code == 404


def test_auditor_sees_every_team(api_client_for, auditor, team, other_team):
    response = api_client_for(auditor).get(TEAMS)
    assert set(ids(response)) == {team.pk, other_team.pk}
    detail = api_client_for(auditor).get(reverse("team-detail", args=[team.pk]))
    assert detail.status_code == 200
    assert detail.data["member_count"] == 0


def test_teams_are_read_only(api_client_for, superuser, team):
    # No action is routed for these methods, so ActionPermission refuses before DRF's 405.
    client = api_client_for(superuser)
    assert client.post(TEAMS, {"name": "X", "slug": "x"}).status_code in (403, 405)
    assert client.delete(reverse("team-detail", args=[team.pk])).status_code in (403, 405)
    assert Team.objects.count() == 1


# --- tags ------------------------------------------------------------------------------------


def test_marketing_creates_and_deletes_a_tag(api_client_for, marketing, team):
    client = api_client_for(marketing)
    response = client.post(TAGS, {"team": team.pk, "name": " Premiere "})
    assert response.status_code == 201, response.data
    tag = Tag.objects.get()
    assert (tag.name, response.data["team_name"]) == ("Premiere", team.name)
    contact = ContactFactory(team=team)
    contact.tags.add(tag)
    assert client.delete(tag_url(tag)).status_code == 204
    assert Tag.objects.count() == 0
    assert contact.tags.count() == 0


def test_duplicate_tag_name_is_refused_case_insensitively(api_client_for, marketing, team):
    TagFactory(team=team, name="VIP")
    response = api_client_for(marketing).post(TAGS, {"team": team.pk, "name": "vip"})
    assert response.status_code == 400
    assert "name" in response.data
    assert Tag.objects.count() == 1


def test_blank_tag_name_is_refused(api_client_for, marketing, team):
    response = api_client_for(marketing).post(TAGS, {"team": team.pk, "name": ""})
    assert response.status_code == 400
    assert Tag.objects.count() == 0


def test_tag_in_a_team_the_caller_does_not_belong_to_is_refused(
    api_client_for, marketing, other_team
):
    response = api_client_for(marketing).post(TAGS, {"team": other_team.pk, "name": "x"})
    assert response.status_code == 400
    assert "team" in response.data
    assert Tag.objects.count() == 0


def test_tag_filters(api_client_for, marketing, team):
    vip = TagFactory(team=team, name="vip")
    TagFactory(team=team, name="press")
    client = api_client_for(marketing)
    assert ids(client.get(TAGS, {"name": "VI"})) == [vip.pk]
    assert len(ids(client.get(TAGS, {"team": team.pk}))) == 2


def test_outsider_gets_404_on_tags(api_client_for, outsider, team):
    tag = TagFactory(team=team)
    client = api_client_for(outsider)
    assert client.get(tag_url(tag)).status_code == 404
    assert client.delete(tag_url(tag)).status_code == 404
    assert ids(client.get(TAGS)) == []
    assert Tag.objects.count() == 1


@pytest.mark.parametrize("persona", ["auditor", "editor", "agent"])
def test_read_only_roles_may_not_write_tags(api_client_for, request, team, persona):
    tag = TagFactory(team=team)
    client = api_client_for(request.getfixturevalue(persona))
    assert client.get(tag_url(tag)).status_code == 200
    assert client.post(TAGS, {"team": team.pk, "name": "new"}).status_code == 403
    assert client.delete(tag_url(tag)).status_code == 403
    assert Tag.objects.count() == 1


# --- contact points --------------------------------------------------------------------------


@pytest.fixture
def contact(team):
    return ContactFactory(team=team)


@pytest.fixture
def point(contact):
    return ContactPointFactory(contact=contact, channel="email", address="jana@example.de")


def test_add_point_normalises_the_address(api_client_for, marketing, contact, team):
    response = api_client_for(marketing).post(
        POINTS, {"contact": contact.pk, "channel": "whatsapp", "address": "0049 151 2345 6789"}
    )
    assert response.status_code == 201, response.data
    assert response.data["address"] == "+4915123456789"
    assert response.data["team"] == team.pk
    assert contact.points.get().address == "+4915123456789"


def test_invalid_address_is_refused(api_client_for, marketing, contact):
    response = api_client_for(marketing).post(
        POINTS, {"contact": contact.pk, "channel": "email", "address": "not-an-address"}
    )
    assert response.status_code == 400
    assert response.data["code"] == "address_invalid"
    assert "address" in response.data
    assert ContactPoint.objects.count() == 0


def test_duplicate_address_is_refused(api_client_for, marketing, point, team):
    other = ContactFactory(team=team)
    response = api_client_for(marketing).post(
        POINTS, {"contact": other.pk, "channel": "email", "address": "JANA@example.de"}
    )
    assert response.status_code == 400
    assert response.data["code"] == "contact_point_duplicate"
    assert ContactPoint.objects.count() == 1


def test_unknown_channel_is_refused(api_client_for, marketing, contact):
    response = api_client_for(marketing).post(
        POINTS, {"contact": contact.pk, "channel": "pigeon", "address": "x"}
    )
    assert response.status_code == 400
    assert "channel" in response.data
    assert ContactPoint.objects.count() == 0


def test_point_for_another_teams_contact_is_refused(api_client_for, outsider, contact):
    response = api_client_for(outsider).post(
        POINTS, {"contact": contact.pk, "channel": "email", "address": "x@example.org"}
    )
    assert response.status_code == 400
    assert "contact" in response.data
    assert ContactPoint.objects.count() == 0


def test_patch_normalises_and_keeps_channel(api_client_for, marketing, point):
    response = api_client_for(marketing).patch(
        point_url(point), {"address": " NEW@Example.de ", "channel": "sms"}
    )
    assert response.status_code == 200, response.data
    point.refresh_from_db()
    assert (point.channel, point.address) == ("email", "new@example.de")
    assert response.data["address"] == "new@example.de"


def test_patch_to_a_duplicate_changes_nothing(api_client_for, marketing, point, team):
    ContactPointFactory(contact__team=team, channel="email", address="taken@example.de")
    response = api_client_for(marketing).patch(point_url(point), {"address": "taken@example.de"})
    assert response.status_code == 400
    assert response.data["code"] == "contact_point_duplicate"
    point.refresh_from_db()
    assert point.address == "jana@example.de"


def test_patch_to_an_invalid_address_changes_nothing(api_client_for, marketing, point):
    response = api_client_for(marketing).patch(point_url(point), {"address": "nope"})
    assert response.status_code == 400
    assert response.data["code"] == "address_invalid"
    point.refresh_from_db()
    assert point.address == "jana@example.de"


def test_delete_point(api_client_for, marketing, point):
    assert api_client_for(marketing).delete(point_url(point)).status_code == 204
    assert ContactPoint.objects.count() == 0


def test_outsider_gets_404_on_points_and_changes_nothing(api_client_for, outsider, point):
    client = api_client_for(outsider)
    assert client.get(point_url(point)).status_code == 404
    assert client.patch(point_url(point), {"address": "x@example.org"}).status_code == 404
    assert client.delete(point_url(point)).status_code == 404
    assert ids(client.get(POINTS)) == []
    point.refresh_from_db()
    assert point.address == "jana@example.de"


def test_auditor_reads_points_but_may_not_write(api_client_for, auditor, point, contact):
    client = api_client_for(auditor)
    assert ids(client.get(POINTS)) == [point.pk]
    body = {"contact": contact.pk, "channel": "sms", "address": "+4915123456789"}
    assert client.post(POINTS, body).status_code == 403
    assert client.patch(point_url(point), {"address": "x@example.org"}).status_code == 403
    assert client.delete(point_url(point)).status_code == 403
    assert ContactPoint.objects.count() == 1


def test_agent_adds_points_but_may_not_delete(api_client_for, agent, point, contact):
    client = api_client_for(agent)
    body = {"contact": contact.pk, "channel": "sms", "address": "+4915123456789"}
    assert client.post(POINTS, body).status_code == 201
    assert client.delete(point_url(point)).status_code == 403
    assert ContactPoint.objects.count() == 2


def test_editor_may_not_add_points(api_client_for, editor, contact):
    body = {"contact": contact.pk, "channel": "sms", "address": "+4915123456789"}
    assert api_client_for(editor).post(POINTS, body).status_code == 403
    assert ContactPoint.objects.count() == 0


def test_point_filters(api_client_for, marketing, point, team):
    sms = ContactPointFactory(contact__team=team, channel="sms", address="+4915100000001")
    client = api_client_for(marketing)
    assert ids(client.get(POINTS, {"channel": "sms"})) == [sms.pk]
    assert ids(client.get(POINTS, {"contact": point.contact_id})) == [point.pk]
    assert ids(client.get(POINTS, {"address": "JANA"})) == [point.pk]


# --- constant query counts for every list ----------------------------------------------------


def _make_tag(team, n):
    TagFactory(team=team, name=f"tag-{n}")


def _make_point(team, n):
    ContactPointFactory(contact__team=team, address=f"p{n}@example.org")


def _make_segment(team, n):
    SegmentFactory(team=team, name=f"segment-{n}")


def _make_team(team, n):
    extra = TeamFactory()
    for user in get_user_model().objects.filter(username="marketing"):
        team_member_add(team=extra, user=user)


@pytest.mark.parametrize(
    ("url", "make"),
    [
        (TAGS, _make_tag),
        (POINTS, _make_point),
        (reverse("segment-list"), _make_segment),
        (TEAMS, _make_team),
    ],
    ids=["tags", "contact-points", "segments", "teams"],
)
def test_list_query_count_is_constant(marketing, team, url, make):
    def count() -> int:
        client = APIClient()
        client.force_authenticate(user=get_user_model().objects.get(pk=marketing.pk))
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, {"page_size": 100})
        assert response.status_code == 200
        return len(queries.captured_queries), len(response.data["results"])

    make(team, 0)
    small, small_rows = count()
    for n in range(1, 12):
        make(team, n)
    large, large_rows = count()
    assert large_rows > small_rows
    assert large == small
