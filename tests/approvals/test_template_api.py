"""Templates, versions, preview, diff and policies through the REST API."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ApprovalPolicy, MessageTemplate, TemplateVersion, VersionState
from approvals.services import template_version_create
from crm import roles
from tests.approvals.review_helpers import (
    approved,
    draft,
    group,
    new_template,
    submitted,
    three_stage_policy,
)
from tests.factories import PurposeFactory

pytestmark = pytest.mark.django_db

TEMPLATES = "/api/v1/message-templates/"
VERSIONS = "/api/v1/template-versions/"
POLICIES = "/api/v1/approval-policies/"


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.data
    return response.data["results"]


@pytest.fixture
def reviewers(reviewer_editorial, reviewer_legal, reviewer_medical):
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


def template_input(team, **fields) -> dict:
    return {
        "team": team.pk,
        "name": "termin_erinnerung",
        "channel": "sms",
        "category": "utility",
        "language": "de",
        **fields,
    }


def test_editor_creates_a_template_owned_by_themselves(api_client_for, team, editor):
    response = api_client_for(editor).post(TEMPLATES, template_input(team), format="json")

    assert response.status_code == 201, response.data
    assert response.data["owner_username"] == "editor"
    assert response.data["team_name"] == team.name
    assert MessageTemplate.objects.get().owner == editor


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "Termin Erinnerung"}, "name"),
        ({"category": "marketing"}, "purpose"),
        ({"channel": "fax"}, "channel"),
    ],
)
def test_bad_template_input_is_a_field_error_and_nothing_is_created(
    api_client_for, team, editor, fields, field
):
    response = api_client_for(editor).post(TEMPLATES, template_input(team, **fields), format="json")

    assert response.status_code == 400
    assert field in response.data
    assert not MessageTemplate.objects.exists()


def test_marketing_template_needs_a_purpose_of_its_team_allowing_the_channel(
    api_client_for, team, other_team, editor
):
    client = api_client_for(editor)
    foreign = PurposeFactory(team=other_team)
    email_only = PurposeFactory(team=team, allowed_channels=["email"])
    good = PurposeFactory(team=team, allowed_channels=["sms"])

    for purpose, status in ((foreign, 400), (email_only, 400), (good, 201)):
        response = client.post(
            TEMPLATES,
            template_input(team, category="marketing", purpose=purpose.pk),
            format="json",
        )
        assert response.status_code == status, response.data
    assert MessageTemplate.objects.get().purpose == good


def test_templates_of_other_teams_cannot_be_created_or_seen(
    api_client_for, team, other_team, editor, make_user
):
    response = api_client_for(editor).post(TEMPLATES, template_input(other_team), format="json")
    assert response.status_code == 400
    assert "team" in response.data
    foreign = new_template(other_team, make_user("editor_b", roles.EDITOR, other_team))

    client = api_client_for(editor)
    assert rows(client.get(TEMPLATES)) == []
    assert client.get(f"{TEMPLATES}{foreign.pk}/").status_code == 404
    assert client.patch(f"{TEMPLATES}{foreign.pk}/", {"name": "x"}).status_code == 404


def test_template_filters(api_client_for, team, editor):
    new_template(team, editor, channel="sms")
    email = new_template(team, editor, channel="email")
    client = api_client_for(editor)

    assert [row["id"] for row in rows(client.get(TEMPLATES, {"channel": "email"}))] == [email.pk]
    assert rows(client.get(TEMPLATES, {"category": "marketing"})) == []
    assert len(rows(client.get(TEMPLATES, {"team": team.pk, "language": "de"}))) == 2


def test_template_update_goes_through_the_service(api_client_for, team, editor, marketing):
    template = new_template(team, editor)
    client = api_client_for(editor)

    renamed = client.patch(f"{TEMPLATES}{template.pk}/", {"name": "neu_name"}, format="json")
    assert renamed.status_code == 200, renamed.data
    assert renamed.data["name"] == "neu_name"
    bad = client.patch(f"{TEMPLATES}{template.pk}/", {"name": "Neu Name"}, format="json")
    assert bad.status_code == 400
    template.refresh_from_db()
    assert template.name == "neu_name"
    denied = api_client_for(marketing).patch(f"{TEMPLATES}{template.pk}/", {"name": "x_y"})
    assert denied.status_code == 403


def test_version_create_derives_variables_and_hashes_content(api_client_for, team, editor):
    template = new_template(team, editor, channel="email")
    response = api_client_for(editor).post(
        VERSIONS,
        {
            "template": template.pk,
            "subject": "Hallo {{ contact.salutation }}",
            "body": "Liebe/r {{ first_name }} {{ last_name }}",
            "valid_until": (timezone.now() + dt.timedelta(days=90)).isoformat(),
        },
        format="json",
    )

    assert response.status_code == 201, response.data
    assert response.data["number"] == 1
    assert response.data["variables"] == ["contact.salutation", "first_name", "last_name"]
    assert len(response.data["content_hash"]) == 64
    assert response.data["author"] == "editor"
    assert response.data["state"] == "draft"


def test_version_create_refusals_change_nothing(api_client_for, team, other_team, editor, agent):
    template = new_template(team, editor)
    client = api_client_for(editor)

    bad_window = client.post(
        VERSIONS,
        {
            "template": template.pk,
            "body": "Hallo",
            "valid_from": "2030-01-02T00:00:00Z",
            "valid_until": "2030-01-01T00:00:00Z",
        },
        format="json",
    )
    assert bad_window.status_code == 400
    assert "valid_until" in bad_window.data
    assert client.post(VERSIONS, {"template": template.pk}, format="json").status_code == 400
    denied = api_client_for(agent).post(
        VERSIONS, {"template": template.pk, "body": "Hallo"}, format="json"
    )
    assert denied.status_code == 403
    assert not TemplateVersion.objects.exists()


def test_draft_edit_recomputes_the_hash_and_state_stays_draft(api_client_for, team, editor):
    version = draft(team, editor)
    before = version.content_hash

    response = api_client_for(editor).patch(
        f"{VERSIONS}{version.pk}/",
        {"body": "Hallo {{ first_name }}, neu.", "state": "approved"},
        format="json",
    )

    assert response.status_code == 200, response.data
    assert response.data["content_hash"] != before
    assert response.data["state"] == "draft"
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT


def test_submit_checks_channel_rules_and_nothing_changes(api_client_for, team, editor):
    three_stage_policy(team)
    version = draft(team, editor, subject="")
    response = api_client_for(editor).post(f"{VERSIONS}{version.pk}/submit/")

    assert response.status_code == 400
    assert response.data["code"] == "channel_rules_violated"
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    assert not version.state_changes.exists()


def test_preview_renders_sample_data_with_channel_verdict(api_client_for, team, editor):
    version = draft(team, editor, body="Hallo {{ first_name }}, bis bald.")

    response = api_client_for(editor).get(f"{VERSIONS}{version.pk}/preview/")

    assert response.status_code == 200, response.data
    assert response.data["rendered"]["body"] == "Hallo Jana, bis bald."
    assert response.data["context"] == {"first_name": "Jana"}
    assert response.data["render_error"] is None
    assert response.data["violations"] == []
    assert response.data["sms"] is None


def test_preview_of_an_sms_shows_encoding_and_segments(api_client_for, team, editor):
    gsm = draft(team, editor, channel="sms", body="Hallo {{ first_name }}")
    ucs = draft(team, editor, channel="sms", body="Привет {{ first_name }} " + "ж" * 80)
    client = api_client_for(editor)

    assert client.get(f"{VERSIONS}{gsm.pk}/preview/").data["sms"] == {
        "encoding": "GSM-7",
        "segments": 1,
        "characters": len("Hallo Jana"),
    }
    sms = client.get(f"{VERSIONS}{ucs.pk}/preview/").data["sms"]
    assert (sms["encoding"], sms["segments"]) == ("UCS-2", 2)


def test_preview_reports_rule_violations_and_render_errors(api_client_for, team, editor):
    purpose = PurposeFactory(team=team, allowed_channels=["email"])
    marketing = new_template(team, editor, category="marketing", purpose=purpose)
    no_unsubscribe = draft(team, editor, template=marketing, body="Angebote!")
    undeclared = draft(team, editor, body="Hallo {{ first_name }}", variables=["last_name"])
    client = api_client_for(editor)

    violations = client.get(f"{VERSIONS}{no_unsubscribe.pk}/preview/").data["violations"]
    assert violations
    assert {v["field"] for v in violations} == {"body"}
    broken = client.get(f"{VERSIONS}{undeclared.pk}/preview/").data
    assert broken["rendered"] is None
    assert broken["render_error"]["code"]
    assert "first_name" in broken["render_error"]["detail"]


def test_diff_against_the_previous_approved_version(api_client_for, team, editor, reviewers):
    three_stage_policy(team)
    first = approved(team, editor, reviewers, body="Hallo {{ first_name }}, alter Text.")
    second = template_version_create(
        template=first.template,
        actor=editor,
        subject=first.subject,
        body="Hallo {{ first_name }}, neuer Text.",
    )
    client = api_client_for(editor)

    response = client.get(f"{VERSIONS}{second.pk}/diff/")

    assert response.status_code == 200
    assert response.data["previous"] == first.pk
    assert response.data["previous_number"] == 1
    diff = response.data["diff"]
    assert "-Hallo {{ first_name }}, alter Text." in diff
    assert "+Hallo {{ first_name }}, neuer Text." in diff
    alone = client.get(f"{VERSIONS}{first.pk}/diff/").data
    assert alone["previous"] is None
    assert "+Hallo {{ first_name }}, alter Text." in alone["diff"]


def test_retire_an_approved_version(api_client_for, team, editor, reviewers, marketing):
    three_stage_policy(team)
    version = approved(team, editor, reviewers)
    url = f"{VERSIONS}{version.pk}/retire/"

    assert api_client_for(marketing).post(url, {}, format="json").status_code == 403
    response = api_client_for(editor).post(url, {"comment": "Aktion vorbei."}, format="json")

    assert response.status_code == 200, response.data
    assert response.data["state"] == "retired"
    assert version.state_changes.last().comment == "Aktion vorbei."
    again = api_client_for(editor).post(url, {}, format="json")
    assert again.status_code == 409
    assert again.data["code"] == "transition_refused"


def test_version_filters_state_team_template_and_expiring(api_client_for, team, editor, reviewers):
    three_stage_policy(team)
    soon = timezone.now() + dt.timedelta(days=10)
    later = timezone.now() + dt.timedelta(days=90)
    expiring = approved(team, editor, reviewers, valid_until=soon)
    lasting = approved(team, editor, reviewers, valid_until=later)
    waiting = submitted(team, editor)
    client = api_client_for(editor)

    def ids(**params) -> set[int]:
        return {row["id"] for row in rows(client.get(VERSIONS, params))}

    assert ids(state="approved") == {expiring.pk, lasting.pk}
    assert ids(state="in_review") == {waiting.pk}
    assert ids(expiring_within_days=30) == {expiring.pk}
    assert ids(expiring_within_days=120) == {expiring.pk, lasting.pk}
    assert ids(template=waiting.template_id) == {waiting.pk}
    assert ids(team=team.pk) == {expiring.pk, lasting.pk, waiting.pk}
    assert client.get(VERSIONS, {"expiring_within_days": -1}).status_code == 400


def _versions_list_queries(api_client_for, user, expected_rows: int) -> int:
    # A fresh user object each time: permissions and teams are memoised on it.
    client = api_client_for(type(user).objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(VERSIONS)
    assert len(rows(response)) == expected_rows
    return len(queries)


def test_version_list_query_count_does_not_grow_with_the_rows(api_client_for, team, editor):
    template = new_template(team, editor, channel="email")
    for _index in range(5):
        draft(team, editor, template=template)
    five = _versions_list_queries(api_client_for, editor, 5)
    for _index in range(25):
        draft(team, editor, template=new_template(team, editor, channel="email"))

    assert _versions_list_queries(api_client_for, editor, 30) == five


def test_policies_are_read_by_the_team_and_created_by_administrators(
    api_client_for, team, other_team, editor, make_user, superuser
):
    outsider = make_user("editor_b", roles.EDITOR, other_team)
    three_stage_policy(team)
    listed = rows(api_client_for(editor).get(POLICIES))
    assert [stage["group"] for stage in listed[0]["stages"]] == [
        roles.REVIEWER_EDITORIAL,
        roles.REVIEWER_LEGAL,
        roles.REVIEWER_MEDICAL,
    ]
    assert rows(api_client_for(outsider).get(POLICIES)) == []

    body = {
        "team": other_team.pk,
        "category": "marketing",
        "name": "Marketing",
        "stages": [
            {"name": "Redaktion", "group": roles.REVIEWER_EDITORIAL},
            {"name": "Recht", "group": roles.REVIEWER_LEGAL, "approvals_required": 2},
        ],
    }
    assert api_client_for(editor).post(POLICIES, body, format="json").status_code == 403
    group(roles.REVIEWER_LEGAL)
    created = api_client_for(superuser).post(POLICIES, body, format="json")
    assert created.status_code == 201, created.data
    assert [(s["name"], s["approvals_required"]) for s in created.data["stages"]] == [
        ("Redaktion", 1),
        ("Recht", 2),
    ]
    duplicate = api_client_for(superuser).post(POLICIES, body, format="json")
    assert duplicate.status_code == 400
    assert ApprovalPolicy.objects.count() == 2
