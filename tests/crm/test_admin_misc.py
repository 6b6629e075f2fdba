from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from crm import selectors
from crm.exports import csv_safe, stream_csv
from crm.models import Segment, Tag, Team, UserProfile
from crm.services import contact_create, segment_create, team_member_add, user_time_zone_set
from tests.factories import ContactFactory, ContactPointFactory, SegmentFactory, TagFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(name: str, *args) -> str:
    return reverse(f"admin:crm_{name}", args=args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+49151", "'+49151"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Jana", "Jana"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
def test_csv_safe_neutralises_formula_starts(value, expected):
    assert csv_safe(value) == expected


def test_stream_csv_yields_quoted_lines():
    lines = list(stream_csv([["=cmd", "a,b"], [None, 3]], ["name", "note"]))

    assert lines == ["name,note\r\n", '\'=cmd,"a,b"\r\n', ",3\r\n"]


def team_data(**fields) -> dict:
    return {
        "name": "Kino Süd",
        "slug": "kino-sued",
        "default_language": "de",
        "default_time_zone": "Europe/Berlin",
        "is_active": "on",
        **fields,
    }


def test_superuser_creates_team_with_members(superuser, make_user):
    member = make_user("newbie")

    response = client_for(superuser).post(url("team_add"), team_data(members=[member.pk]))

    assert response.status_code == 302
    team = Team.objects.get(slug="kino-sued")
    assert list(selectors.team_members(team)) == [member]


def test_superuser_changes_team_members(superuser, marketing, make_user, team):
    newcomer = make_user("newcomer")

    response = client_for(superuser).post(
        url("team_change", team.pk),
        team_data(name=team.name, slug=team.slug, members=[newcomer.pk]),
    )

    assert response.status_code == 302
    assert set(selectors.team_members(team)) == {newcomer}


def test_non_superuser_sees_own_team_read_only(marketing, team, other_team):
    client = client_for(marketing)

    changelist = client.get(url("team_changelist"))
    page = client.get(url("team_change", team.pk))
    post = client.post(url("team_change", team.pk), team_data(name="Renamed", slug=team.slug))

    assert [t.pk for t in changelist.context["cl"].result_list] == [team.pk]
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert marketing.username in page.text  # the member list
    assert post.status_code == 403
    team.refresh_from_db()
    assert team.name == "Kino Nord"
    assert client.get(url("team_change", other_team.pk)).status_code == 404
    assert client.get(url("team_add")).status_code == 403
    assert client.post(url("team_add"), team_data()).status_code == 403
    assert not Team.objects.filter(slug="kino-sued").exists()


def test_auditor_sees_every_team(auditor, team, other_team):
    response = client_for(auditor).get(url("team_changelist"))

    assert {t.pk for t in response.context["cl"].result_list} == {team.pk, other_team.pk}


def rules_json(*conditions) -> str:
    return json.dumps({"match": "all", "conditions": list(conditions)})


def segment_data(team=None, **fields) -> dict:
    data = {"name": "German speakers", "description": "", "rules": rules_json()}
    if team is not None:
        data["team"] = str(team.pk)
    return {**data, **fields}


def test_marketing_creates_segment_through_service(marketing, team):
    rules = rules_json({"field": "language", "op": "eq", "value": "de"})

    response = client_for(marketing).post(url("segment_add"), segment_data(team, rules=rules))

    assert response.status_code == 302
    segment = Segment.objects.get()
    assert segment.rules["conditions"][0]["value"] == "de"
    assert segment.created_by == marketing
    assert segment.history.get().history_user == marketing


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (rules_json({"field": "shoe_size", "op": "eq", "value": 42}), "Unknown field"),
        (rules_json({"field": "language", "op": "eq", "value": "xx"}), "is not one of"),
        ("{not json", "Enter a valid JSON."),
        ('["a list"]', "Rules must be an object"),
    ],
)
def test_invalid_segment_rules_are_a_field_error(marketing, team, rules, message):
    response = client_for(marketing).post(url("segment_add"), segment_data(team, rules=rules))

    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors["rules"])
    assert Segment.objects.count() == 0


def test_duplicate_segment_name_is_a_field_error(marketing, team):
    SegmentFactory(team=team, name="German speakers")

    response = client_for(marketing).post(url("segment_add"), segment_data(team))

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert Segment.objects.count() == 1


def test_segment_change_page_shows_preview(marketing, team):
    matching = [
        contact_create(team=team, actor=None, first_name=name, language="de")
        for name in ("Anna", "Berta")
    ]
    contact_create(team=team, actor=None, first_name="Charles", language="en")
    segment = segment_create(
        team=team,
        name="de",
        rules={"match": "all", "conditions": [{"field": "language", "op": "eq", "value": "de"}]},
        actor=marketing,
    )

    response = client_for(marketing).get(url("segment_change", segment.pk))

    assert response.status_code == 200
    assert "2 contacts match." in response.text
    for contact in matching:
        assert url("contact_change", contact.pk) in response.text
    assert "Charles" not in response.text


def test_segment_change_updates_through_service(marketing, team):
    segment = SegmentFactory(team=team, name="Old")
    rules = rules_json({"field": "channel", "op": "has", "value": "sms"})

    response = client_for(marketing).post(
        url("segment_change", segment.pk), segment_data(name="New", rules=rules)
    )

    assert response.status_code == 302
    segment.refresh_from_db()
    assert segment.name == "New"
    assert segment.rules["conditions"][0]["field"] == "channel"
    assert segment.history.first().history_user == marketing


def test_segment_preview_endpoint(marketing, team, other_team):
    contact = ContactFactory(team=team, first_name="Sam")
    ContactPointFactory(contact=contact, channel="sms", address="+4915123456789")
    ContactFactory(team=team)
    client = client_for(marketing)
    preview = url("segment_preview")
    rules = rules_json({"field": "channel", "op": "has", "value": "sms"})

    ok = client.get(preview, {"team": team.pk, "rules": rules})
    bad = client.get(preview, {"team": team.pk, "rules": rules_json({"field": "x"})})
    foreign = client.get(preview, {"team": other_team.pk, "rules": rules})

    assert ok.status_code == 200
    assert "1 contact matches." in ok.json()["html"]
    assert "Sam" in ok.json()["html"]
    assert bad.status_code == 400
    assert "Unknown field" in bad.json()["error"]
    assert foreign.status_code == 404


def test_segments_of_other_teams_are_404(outsider, team):
    segment = SegmentFactory(team=team, name="Secret")
    client = client_for(outsider)

    assert client.get(url("segment_change", segment.pk)).status_code == 404
    response = client.post(url("segment_change", segment.pk), segment_data(name="Hijacked"))
    assert response.status_code == 404
    assert client.get(url("segment_history", segment.pk)).status_code == 404
    segment.refresh_from_db()
    assert segment.name == "Secret"


def test_auditor_reads_segments_but_cannot_change(auditor, team, other_team):
    segment = SegmentFactory(team=team, name="Kept")
    SegmentFactory(team=other_team)
    client = client_for(auditor)

    changelist = client.get(url("segment_changelist"))
    page = client.get(url("segment_change", segment.pk))
    post = client.post(url("segment_change", segment.pk), segment_data(name="Changed"))
    add = client.post(url("segment_add"), segment_data(team, name="New"))

    assert len(changelist.context["cl"].result_list) == 2
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert "0 contacts match." in page.text
    assert post.status_code == 403
    assert add.status_code == 403
    segment.refresh_from_db()
    assert segment.name == "Kept"
    assert Segment.objects.count() == 2


def test_tag_admin_is_scoped_and_counts_contacts(marketing, team, other_team):
    tag = TagFactory(team=team, name="vip")
    ContactFactory(team=team).tags.add(tag)
    foreign = TagFactory(team=other_team, name="hidden")
    client = client_for(marketing)

    response = client.get(url("tag_changelist"))

    [row] = response.context["cl"].result_list
    assert row == tag
    assert row.contact_total == 1
    assert client.get(url("tag_change", foreign.pk)).status_code == 404


def test_tag_admin_creates_and_refuses_duplicates(marketing, team):
    TagFactory(team=team, name="VIP")
    client = client_for(marketing)

    duplicate = client.post(url("tag_add"), {"team": team.pk, "name": "vip"})
    created = client.post(url("tag_add"), {"team": team.pk, "name": " newsletter "})

    assert duplicate.status_code == 200
    assert "name" in duplicate.context["adminform"].form.errors
    assert created.status_code == 302
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["VIP", "newsletter"]


def test_tag_admin_refuses_teams_the_user_is_not_in(marketing, other_team):
    response = client_for(marketing).post(url("tag_add"), {"team": other_team.pk, "name": "x"})

    assert response.status_code == 200
    assert "team" in response.context["adminform"].form.errors
    assert not Tag.objects.exists()


def test_contact_point_admin_is_read_only_and_scoped(marketing, team, other_team):
    own = ContactPointFactory(contact__team=team, channel="sms", address="+4915123456789")
    foreign = ContactPointFactory(contact__team=other_team, channel="sms", address="+4915199999999")
    client = client_for(marketing)

    listing = client.get(url("contactpoint_changelist"))
    search = client.get(url("contactpoint_changelist"), {"q": "0151 23456789"})
    page = client.get(url("contactpoint_change", own.pk))
    post = client.post(url("contactpoint_change", own.pk), {"address": "+4915100000000"})

    assert [p.pk for p in listing.context["cl"].result_list] == [own.pk]
    assert [p.pk for p in search.context["cl"].result_list] == [own.pk]
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert post.status_code == 403
    own.refresh_from_db()
    assert own.address == "+4915123456789"
    assert client.get(url("contactpoint_change", foreign.pk)).status_code == 404
    assert client.get(url("contactpoint_add")).status_code == 403


def test_user_sets_own_time_zone(reviewer_legal):
    client = client_for(reviewer_legal)

    created = client.post(url("userprofile_add"), {"time_zone": "America/New_York"})
    profile = UserProfile.objects.get(user=reviewer_legal)
    changed = client.post(url("userprofile_change", profile.pk), {"time_zone": "Asia/Tokyo"})

    assert created.status_code == 302
    assert changed.status_code == 302
    profile.refresh_from_db()
    assert profile.time_zone == "Asia/Tokyo"


def test_invalid_time_zone_is_refused(reviewer_legal):
    response = client_for(reviewer_legal).post(
        url("userprofile_add"), {"time_zone": "Mars/Olympus"}
    )

    assert response.status_code == 200
    assert "time_zone" in response.context["adminform"].form.errors
    assert not UserProfile.objects.exists()


def test_user_cannot_see_or_change_others_profiles(reviewer_legal, agent):
    other = user_time_zone_set(user=agent, time_zone="Europe/Berlin")
    client = client_for(reviewer_legal)

    listing = client.get(url("userprofile_changelist"))
    page = client.get(url("userprofile_change", other.pk))
    post = client.post(url("userprofile_change", other.pk), {"time_zone": "Asia/Tokyo"})

    assert list(listing.context["cl"].result_list) == []
    assert page.status_code == 404
    assert post.status_code == 404
    other.refresh_from_db()
    assert other.time_zone == "Europe/Berlin"


def test_superuser_manages_all_profiles(superuser, agent, reviewer_legal):
    user_time_zone_set(user=agent, time_zone="Europe/Berlin")
    client = client_for(superuser)

    listing = client.get(url("userprofile_changelist"))
    created = client.post(
        url("userprofile_add"), {"user": reviewer_legal.pk, "time_zone": "Europe/Vienna"}
    )

    assert len(listing.context["cl"].result_list) == 1
    assert created.status_code == 302
    assert UserProfile.objects.get(user=reviewer_legal).time_zone == "Europe/Vienna"


def test_outsider_does_not_see_teams_it_is_not_in(outsider, team, other_team):
    team_member_add(team=other_team, user=outsider)

    response = client_for(outsider).get(url("team_changelist"))

    assert [t.pk for t in response.context["cl"].result_list] == [other_team.pk]


def test_tag_and_segment_delete_go_through_services(marketing, auditor, team):
    tag = TagFactory(team=team)
    segment = SegmentFactory(team=team)

    denied_tag = client_for(auditor).post(url("tag_delete", tag.pk), {"post": "yes"})
    denied_segment = client_for(auditor).post(url("segment_delete", segment.pk), {"post": "yes"})
    assert denied_tag.status_code == 403
    assert denied_segment.status_code == 403

    client = client_for(marketing)
    assert client.post(url("tag_delete", tag.pk), {"post": "yes"}).status_code == 302
    assert client.post(url("segment_delete", segment.pk), {"post": "yes"}).status_code == 302
    assert not Tag.objects.exists()
    assert not Segment.objects.exists()
    assert Segment.history.get(history_type="-").history_user == marketing
