from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from crm.models import Segment
from tests.factories import ContactFactory, ContactPointFactory, SegmentFactory, TagFactory

pytestmark = pytest.mark.django_db

LIST = reverse("segment-list")
PREVIEW = reverse("segment-preview")
VALID_RULES = {"match": "all", "conditions": [{"field": "language", "op": "eq", "value": "de"}]}


def detail(segment: Segment) -> str:
    return reverse("segment-detail", args=[segment.pk])


def resolve(segment: Segment) -> str:
    return reverse("segment-resolve", args=[segment.pk])


@pytest.fixture
def segment(team):
    return SegmentFactory(team=team, name="German speakers", rules=VALID_RULES)


@pytest.fixture
def audience(team, other_team):
    """Five contacts of `team` with distinct traits, plus look-alikes in `other_team`."""
    vip = TagFactory(team=team, name="vip")
    press = TagFactory(team=team, name="press")
    anna = ContactFactory(team=team, language="de", attributes={"city": "Berlin"})
    anna.tags.add(vip)
    ContactPointFactory(contact=anna, channel="whatsapp", address="+4915100000001")
    bernd = ContactFactory(team=team, language="de", attributes={"city": "Hamburg"})
    bernd.tags.add(press)
    ContactPointFactory(contact=bernd, channel="email", address="bernd@example.org")
    clara = ContactFactory(team=team, language="en", attributes={"city": "Berlin"})
    clara.tags.add(vip, press)
    ContactPointFactory(contact=clara, channel="sms", address="+4915100000003")
    ContactFactory(team=team, language="fr")
    ContactFactory(team=team, language="en", organisation="Praxis Nord")
    # Same traits in another team: never counted for `team`'s segments.
    foreign_vip = TagFactory(team=other_team, name="vip")
    foreign = ContactFactory(team=other_team, language="de", attributes={"city": "Berlin"})
    foreign.tags.add(foreign_vip)
    ContactPointFactory(contact=foreign, channel="whatsapp", address="+4915100000009")
    return {"anna": anna, "bernd": bernd, "clara": clara}


# --- CRUD ------------------------------------------------------------------------------------


def test_marketing_creates_segment(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        LIST,
        {"team": team.pk, "name": "Germans", "description": "d", "rules": VALID_RULES},
        format="json",
    )
    assert response.status_code == 201, response.data
    segment = Segment.objects.get()
    assert segment.created_by == marketing
    assert response.data["created_by"] == marketing.username
    assert response.data["team_name"] == team.name
    assert response.data["rules"] == VALID_RULES


def test_list_and_retrieve(api_client_for, marketing, segment):
    client = api_client_for(marketing)
    response = client.get(LIST)
    assert [row["id"] for row in response.data["results"]] == [segment.pk]
    assert client.get(detail(segment)).data["name"] == "German speakers"


def test_patch_changes_rules_and_name(api_client_for, marketing, segment):
    rules = {"match": "any", "conditions": [{"field": "tag", "op": "has", "value": "vip"}]}
    response = api_client_for(marketing).patch(
        detail(segment), {"name": "VIPs", "rules": rules}, format="json"
    )
    assert response.status_code == 200, response.data
    segment.refresh_from_db()
    assert (segment.name, segment.rules) == ("VIPs", rules)
    assert response.data["team"] == segment.team_id


def test_team_cannot_be_changed_by_patch(api_client_for, marketing, segment, other_team):
    response = api_client_for(marketing).patch(
        detail(segment), {"team": other_team.pk}, format="json"
    )
    assert response.status_code == 200
    segment.refresh_from_db()
    assert segment.team_id != other_team.pk


def test_delete(api_client_for, marketing, segment):
    assert api_client_for(marketing).delete(detail(segment)).status_code == 204
    assert Segment.objects.count() == 0


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        {"match": "some", "conditions": []},
        {"conditions": [{"field": "shoe_size", "op": "eq", "value": 42}]},
        {"conditions": [{"field": "language", "op": "eq", "value": "xx"}]},
        {"conditions": [{"field": "tag", "op": "eq", "value": "vip"}]},
        {"conditions": [{"field": "attribute", "op": "eq", "key": "a__b", "value": 1}]},
        {"conditions": "language"},
        ["not", "an", "object"],
    ],
)
def test_invalid_rules_are_refused_with_a_readable_message(api_client_for, marketing, team, rules):
    response = api_client_for(marketing).post(
        LIST, {"team": team.pk, "name": "Broken", "rules": rules}, format="json"
    )
    assert response.status_code == 400
    assert response.data["code"] == "segment_rules_invalid"
    assert response.data["rules"][0]
    assert Segment.objects.count() == 0


def test_invalid_rules_on_patch_change_nothing(api_client_for, marketing, segment):
    response = api_client_for(marketing).patch(
        detail(segment),
        {"name": "Renamed", "rules": {"match": "all", "conditions": [{"field": "x"}]}},
        format="json",
    )
    assert response.status_code == 400
    assert "rules" in response.data
    segment.refresh_from_db()
    assert (segment.name, segment.rules) == ("German speakers", VALID_RULES)


def test_duplicate_name_is_refused(api_client_for, marketing, segment, team):
    response = api_client_for(marketing).post(
        LIST, {"team": team.pk, "name": segment.name, "rules": VALID_RULES}, format="json"
    )
    assert response.status_code == 400
    assert "name" in response.data
    assert Segment.objects.count() == 1


def test_segment_in_a_team_the_caller_does_not_belong_to_is_refused(
    api_client_for, marketing, other_team
):
    response = api_client_for(marketing).post(
        LIST, {"team": other_team.pk, "name": "Theirs", "rules": VALID_RULES}, format="json"
    )
    assert response.status_code == 400
    assert "team" in response.data
    assert Segment.objects.count() == 0


def test_missing_rules_are_a_field_error(api_client_for, marketing, team):
    response = api_client_for(marketing).post(LIST, {"team": team.pk, "name": "x"}, format="json")
    assert response.status_code == 400
    assert "rules" in response.data
    assert Segment.objects.count() == 0


# --- scope and roles -------------------------------------------------------------------------


def test_outsider_gets_404_and_changes_nothing(api_client_for, outsider, segment):
    client = api_client_for(outsider)
    assert client.get(detail(segment)).status_code == 404
    assert client.get(resolve(segment)).status_code == 404
    assert client.patch(detail(segment), {"name": "X"}, format="json").status_code == 404
    assert client.delete(detail(segment)).status_code == 404
    segment.refresh_from_db()
    assert segment.name == "German speakers"
    assert client.get(LIST).data["results"] == []


def test_auditor_reads_and_resolves_but_may_not_write(api_client_for, auditor, segment, team):
    client = api_client_for(auditor)
    assert client.get(LIST).status_code == 200
    assert client.get(detail(segment)).status_code == 200
    assert client.get(resolve(segment)).status_code == 200
    assert (
        client.post(PREVIEW, {"team": team.pk, "rules": VALID_RULES}, format="json").status_code
        == 200
    )
    assert (
        client.post(LIST, {"team": team.pk, "name": "A", "rules": VALID_RULES}, format="json")
    ).status_code == 403
    assert client.patch(detail(segment), {"name": "X"}, format="json").status_code == 403
    assert client.delete(detail(segment)).status_code == 403
    assert Segment.objects.count() == 1
    segment.refresh_from_db()
    assert segment.name == "German speakers"


def test_editor_reads_but_may_not_create(api_client_for, editor, segment, team):
    client = api_client_for(editor)
    assert client.get(detail(segment)).status_code == 200
    response = client.post(
        LIST, {"team": team.pk, "name": "New", "rules": VALID_RULES}, format="json"
    )
    assert response.status_code == 403
    assert Segment.objects.count() == 1


def test_agent_may_not_see_segments(api_client_for, agent, segment):
    assert api_client_for(agent).get(LIST).status_code == 403


def test_unauthenticated_is_refused(segment):
    assert APIClient().get(resolve(segment)).status_code == 401


# --- resolve and preview ---------------------------------------------------------------------

RULE_SETS = [
    pytest.param({"match": "all", "conditions": []}, 5, id="empty-matches-team"),
    pytest.param(
        {"conditions": [{"field": "language", "op": "eq", "value": "de"}]}, 2, id="language-eq"
    ),
    pytest.param({"conditions": [{"field": "tag", "op": "has", "value": "vip"}]}, 2, id="tag-has"),
    pytest.param(
        {"conditions": [{"field": "tag", "op": "lacks", "value": "vip"}]}, 3, id="tag-lacks"
    ),
    pytest.param(
        {"conditions": [{"field": "channel", "op": "has", "value": "whatsapp"}]},
        1,
        id="channel-has",
    ),
    pytest.param(
        {"conditions": [{"field": "attribute", "op": "eq", "key": "city", "value": "Berlin"}]},
        2,
        id="attribute-eq",
    ),
    pytest.param(
        {
            "match": "all",
            "conditions": [
                {"field": "tag", "op": "has", "value": "vip"},
                {"field": "tag", "op": "has", "value": "press"},
            ],
        },
        1,
        id="all-of-two-tags",
    ),
    pytest.param(
        {
            "match": "any",
            "conditions": [
                {"field": "language", "op": "eq", "value": "fr"},
                {
                    "match": "all",
                    "conditions": [
                        {"field": "attribute", "op": "eq", "key": "city", "value": "Berlin"},
                        {"field": "tag", "op": "lacks", "value": "press"},
                    ],
                },
            ],
        },
        2,
        id="nested-any-all",
    ),
    pytest.param(
        {
            "match": "all",
            "conditions": [
                {"field": "language", "op": "in", "value": ["de", "en"]},
                {
                    "match": "any",
                    "conditions": [
                        {"field": "channel", "op": "has", "value": "sms"},
                        {"field": "channel", "op": "has", "value": "email"},
                    ],
                },
            ],
        },
        2,
        id="nested-all-any",
    ),
]


@pytest.mark.parametrize(("rules", "expected"), RULE_SETS)
def test_resolve_counts(api_client_for, marketing, team, audience, rules, expected):
    segment = SegmentFactory(team=team, rules=rules)
    response = api_client_for(marketing).get(resolve(segment))
    assert response.status_code == 200
    assert response.data["count"] == expected
    assert len(response.data["sample"]) == expected
    assert {row["team"] for row in response.data["sample"]} <= {team.pk}


@pytest.mark.parametrize(("rules", "expected"), RULE_SETS)
def test_preview_matches_resolve_and_writes_nothing(
    api_client_for, marketing, team, audience, rules, expected
):
    response = api_client_for(marketing).post(
        PREVIEW, {"team": team.pk, "rules": rules}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data["count"] == expected
    assert Segment.objects.count() == 0


def test_resolve_sample_shows_points_and_tags(api_client_for, marketing, team, audience):
    segment = SegmentFactory(
        team=team, rules={"conditions": [{"field": "tag", "op": "has", "value": "vip"}]}
    )
    sample = api_client_for(marketing).get(resolve(segment)).data["sample"]
    clara = next(row for row in sample if row["id"] == audience["clara"].pk)
    assert clara["tags"] == ["press", "vip"]
    assert clara["points"][0]["address"] == "+4915100000003"


def test_resolve_query_count_does_not_grow_with_the_sample(marketing, team):
    segment = SegmentFactory(team=team, rules={"match": "all", "conditions": []})

    def count() -> int:
        client = APIClient()
        client.force_authenticate(user=get_user_model().objects.get(pk=marketing.pk))
        with CaptureQueriesContext(connection) as queries:
            assert client.get(resolve(segment)).status_code == 200
        return len(queries.captured_queries)

    ContactPointFactory(contact__team=team)
    one = count()
    for _ in range(8):
        contact = ContactPointFactory(contact__team=team).contact
        contact.tags.add(TagFactory(team=team))
    assert count() == one


def test_preview_with_invalid_rules_is_a_400(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        PREVIEW, {"team": team.pk, "rules": {"match": "maybe"}}, format="json"
    )
    assert response.status_code == 400
    assert response.data["code"] == "segment_rules_invalid"
    assert "rules" in response.data


def test_preview_of_another_team_is_refused(api_client_for, outsider, team, audience):
    response = api_client_for(outsider).post(
        PREVIEW, {"team": team.pk, "rules": VALID_RULES}, format="json"
    )
    assert response.status_code == 400
    assert "team" in response.data
    assert "count" not in response.data


def test_preview_needs_view_permission(api_client_for, agent, team):
    response = api_client_for(agent).post(
        PREVIEW, {"team": team.pk, "rules": VALID_RULES}, format="json"
    )
    assert response.status_code == 403
