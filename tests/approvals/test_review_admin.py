"""The approvals admin: review queue and review page, immutable versions, read-only ledgers."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import (
    ApprovalPolicy,
    MessageTemplate,
    ReviewDecision,
    TemplateVersion,
    VersionState,
)
from crm import roles
from tests.approvals.review_helpers import (
    approved,
    decide,
    draft,
    new_template,
    submitted,
    three_stage_policy,
)

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:approvals_templateversion_review_queue")
VERSION_CHANGELIST = reverse("admin:approvals_templateversion_changelist")
VERSION_ADD = reverse("admin:approvals_templateversion_add")
TEMPLATE_ADD = reverse("admin:approvals_messagetemplate_add")


def review_url(version) -> str:
    return reverse("admin:approvals_templateversion_review", args=[version.pk])


def change_url(version) -> str:
    return reverse("admin:approvals_templateversion_change", args=[version.pk])


def template_change_url(template) -> str:
    return reverse("admin:approvals_messagetemplate_change", args=[template.pk])


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def snapshot(version) -> dict:
    return TemplateVersion.objects.filter(pk=version.pk).values().get()


def queued_ids(response) -> list[int]:
    return [row["version"].pk for row in response.context["rows"]]


@pytest.fixture
def policy(team):
    return three_stage_policy(team)


@pytest.fixture
def reviewers(reviewer_editorial, reviewer_legal, reviewer_medical):
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


def test_queue_shows_only_what_the_reviewer_may_decide_oldest_first(
    policy, team, other_team, editor, reviewer_editorial, reviewer_legal, make_user
):
    older = submitted(team, editor)
    newer = submitted(team, editor)
    draft(team, editor)
    three_stage_policy(other_team)
    foreign = submitted(other_team, make_user("editor_b", roles.EDITOR, other_team))

    response = client_for(reviewer_editorial).get(QUEUE)

    assert response.status_code == 200
    assert queued_ids(response) == [older.pk, newer.pk]
    assert [row["stage"] for row in response.context["rows"]] == ["Editorial", "Editorial"]
    assert foreign.template.name not in response.content.decode()
    # Legal decides only once editorial approved.
    assert queued_ids(client_for(reviewer_legal).get(QUEUE)) == []
    decide(older, reviewer_editorial)
    assert queued_ids(client_for(reviewer_legal).get(QUEUE)) == [older.pk]


def test_reviewer_of_team_b_cannot_see_or_decide_team_as_versions(
    policy, team, other_team, editor, make_user
):
    three_stage_policy(other_team)
    stranger = make_user("editorial_b", roles.REVIEWER_EDITORIAL, other_team)
    version = submitted(team, editor)
    before = snapshot(version)
    client = client_for(stranger)

    assert queued_ids(client.get(QUEUE)) == []
    assert client.get(review_url(version)).status_code == 404
    response = client.post(
        review_url(version), {"decision": "approve", "content_hash": version.content_hash}
    )
    assert response.status_code == 404
    assert client.get(change_url(version)).status_code == 404
    assert snapshot(version) == before
    assert not ReviewDecision.objects.exists()


def test_review_page_shows_preview_diff_history_and_the_form(
    policy, team, editor, reviewers, reviewer_editorial
):
    first = approved(team, editor, reviewers, body="Hallo {{ first_name }}, alter Text.")
    from approvals.services import template_version_create, template_version_submit

    second = template_version_create(
        template=first.template,
        actor=editor,
        subject=first.subject,
        body="Hallo {{ first_name }}, neuer Text <b>fett</b>.",
    )
    template_version_submit(version=second, actor=editor)

    response = client_for(reviewer_editorial).get(review_url(second))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Hallo Jana, neuer Text &lt;b&gt;fett&lt;/b&gt;." in page
    assert "<b>fett</b>" not in page
    assert response.context["previous"] == first
    diff = str(response.context["diff_table"])
    assert '<span class="diff_chg">alt</span>er' in diff
    assert '<span class="diff_chg">neu</span>er' in diff
    # difflib escapes the content: markup in a template never reaches the page as markup.
    assert "&lt;b&gt;fett&lt;/b&gt;</span>" in diff
    assert response.context["form"].initial["content_hash"] == second.content_hash
    assert 'name="content_hash"' in page
    history = client_for(reviewer_editorial).get(review_url(first))
    assert [d.stage_name for d in history.context["decisions"]] == [
        "Editorial",
        "Legal",
        "Medical",
    ]
    assert history.context["form"] is None


def test_deciding_on_the_review_page_records_the_decision(policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    client = client_for(reviewer_editorial)

    response = client.post(
        review_url(version),
        {"decision": "approve", "comment": "Passt.", "content_hash": version.content_hash},
    )

    assert response.status_code == 302
    assert response.url == QUEUE
    entry = ReviewDecision.objects.get()
    assert (entry.reviewer, entry.decision, entry.comment) == (
        reviewer_editorial,
        "approve",
        "Passt.",
    )
    assert entry.content_hash == version.content_hash
    version.refresh_from_db()
    assert version.stage_index == 1


def test_stale_content_is_refused_and_the_page_shows_the_new_content(
    policy, team, editor, reviewer_editorial
):
    from approvals.services import template_version_submit, template_version_update

    version = submitted(team, editor)
    seen = version.content_hash
    # Changes are requested, the author edits and resubmits while the page is still open.
    decide(version, reviewer_editorial, "request_changes", comment="Kürzer.")
    template_version_update(version=version, actor=editor, body="Hallo {{ first_name }}!")
    template_version_submit(version=version, actor=editor)
    version.refresh_from_db()
    before = snapshot(version)
    decisions = ReviewDecision.objects.count()
    client = client_for(reviewer_editorial)

    response = client.post(review_url(version), {"decision": "approve", "content_hash": seen})

    assert response.status_code == 200
    assert any("content changed" in message for message in messages_of(response))
    assert snapshot(version) == before
    assert ReviewDecision.objects.count() == decisions
    assert response.context["form"].initial["content_hash"] == version.content_hash


def test_author_cannot_decide_own_version_in_admin(policy, team, make_user):
    author = make_user("writer", roles.EDITOR, team)
    author.groups.add(Group.objects.get(name=roles.REVIEWER_EDITORIAL))
    version = submitted(team, author)
    before = snapshot(version)
    client = client_for(author)

    assert queued_ids(client.get(QUEUE)) == []
    page = client.get(review_url(version))
    assert page.status_code == 200
    assert page.context["form"] is None
    response = client.post(
        review_url(version), {"decision": "approve", "content_hash": version.content_hash}
    )
    assert response.status_code == 200
    assert any("own versions" in message for message in messages_of(response))
    assert snapshot(version) == before
    assert not ReviewDecision.objects.exists()


def test_reject_needs_a_comment_in_admin(policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    client = client_for(reviewer_editorial)
    data = {"decision": "reject", "content_hash": version.content_hash}

    refused = client.post(review_url(version), data)
    assert refused.status_code == 200
    assert not ReviewDecision.objects.exists()

    client.post(review_url(version), {**data, "comment": "Nicht freigabefähig."})
    version.refresh_from_db()
    assert version.state == VersionState.REJECTED


def test_auditor_reads_the_admin_and_changes_nothing(
    policy, team, editor, reviewer_editorial, reviewers, auditor
):
    waiting = submitted(team, editor)
    done = approved(team, editor, reviewers)
    before = snapshot(waiting)
    client = client_for(auditor)

    assert client.get(VERSION_CHANGELIST).status_code == 200
    assert queued_ids(client.get(QUEUE)) == []
    page = client.get(review_url(waiting))
    assert page.status_code == 200
    assert page.context["form"] is None
    assert client.get(change_url(done)).status_code == 200
    assert client.get(reverse("admin:approvals_reviewdecision_changelist")).status_code == 200

    posts = [
        client.post(review_url(waiting), {"decision": "approve", "content_hash": "x"}),
        client.post(change_url(waiting), {"body": "x"}),
        client.post(VERSION_ADD, {"template": waiting.template_id, "body": "x"}),
        client.post(TEMPLATE_ADD, {"team": team.pk, "name": "x", "channel": "sms"}),
        client.post(
            VERSION_CHANGELIST,
            {"action": "submit_for_review", "_selected_action": [waiting.pk]},
        ),
    ]
    assert [response.status_code for response in posts[:4]] == [403, 403, 403, 403]
    # An action the auditor may not run is not offered, so nothing happens.
    assert snapshot(waiting) == before
    assert ReviewDecision.objects.filter(version=waiting).count() == 0
    assert TemplateVersion.objects.count() == 2
    assert MessageTemplate.objects.count() == 2


def test_approved_version_is_read_only_in_admin_and_a_post_is_403(policy, team, editor, reviewers):
    version = approved(team, editor, reviewers)
    before = snapshot(version)
    client = client_for(editor)

    page = client.get(change_url(version))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert 'name="body"' not in page.content.decode()

    response = client.post(
        change_url(version),
        {"subject": "Neu", "body": "Ganz neu", "buttons": "[]", "variables": ""},
    )
    assert response.status_code == 403
    assert snapshot(version) == before


def test_template_inline_keeps_approved_rows_and_edits_drafts_through_the_service(
    policy, team, editor, reviewers
):
    done = approved(team, editor, reviewers)
    template = done.template
    open_draft = draft(team, editor, template=template)
    draft_hash = open_draft.content_hash
    before = snapshot(done)
    # Rows newest first: the draft (v2), then the approved version (v1); plus one new row.
    rows = [
        (open_draft, "Hallo {{ first_name }}, überarbeitet."),
        (done, "Heimlich geändert."),
    ]
    data = {
        "team": str(team.pk),
        "name": template.name,
        "channel": template.channel,
        "category": template.category,
        "language": template.language,
        "purpose": "",
        "owner": str(editor.pk),
        "is_active": "on",
        "versions-TOTAL_FORMS": "3",
        "versions-INITIAL_FORMS": "2",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    for index, (version, body) in enumerate(rows):
        data.update(
            {
                f"versions-{index}-id": str(version.pk),
                f"versions-{index}-template": str(template.pk),
                f"versions-{index}-subject": version.subject,
                f"versions-{index}-body": body,
            }
        )
    data.update(
        {
            "versions-2-template": str(template.pk),
            "versions-2-subject": "Neu",
            "versions-2-body": "Ein dritter Entwurf für {{ first_name }}.",
        }
    )

    response = client_for(editor).post(template_change_url(template), data)

    assert response.status_code == 302, response.context and response.context.get("errors")
    assert snapshot(done) == before
    open_draft.refresh_from_db()
    assert open_draft.body == "Hallo {{ first_name }}, überarbeitet."
    assert open_draft.content_hash != draft_hash
    third = TemplateVersion.objects.get(template=template, number=3)
    assert (third.author, third.state, third.variables) == (editor, "draft", ["first_name"])


def test_draft_is_created_and_edited_through_the_version_admin(team, editor):
    template = new_template(team, editor)
    client = client_for(editor)
    data = {
        "template": str(template.pk),
        "subject": "Programm",
        "header": "",
        "body": "Hallo {{ first_name }}",
        "footer": "",
        "buttons": "[]",
        "variables": "",
        "valid_from": "",
        "valid_until": "",
    }

    created = client.post(VERSION_ADD, data)

    assert created.status_code == 302
    version = TemplateVersion.objects.get()
    assert (version.number, version.author, version.variables) == (1, editor, ["first_name"])
    edited = client.post(change_url(version), {**data, "body": "Servus {{ first_name }}"})
    assert edited.status_code == 302
    version.refresh_from_db()
    assert version.body == "Servus {{ first_name }}"

    bad = client.post(VERSION_ADD, {**data, "buttons": '{"text": "x"}', "variables": "1x"})
    assert bad.status_code == 200
    assert {"buttons", "variables"} <= set(bad.context["adminform"].form.errors)
    assert TemplateVersion.objects.count() == 1


def test_submit_action_reports_channel_rule_violations_and_changes_nothing(policy, team, editor):
    broken = draft(team, editor, subject="")
    fine = draft(team, editor)
    client = client_for(editor)

    response = client.post(
        VERSION_CHANGELIST,
        {"action": "submit_for_review", "_selected_action": [broken.pk, fine.pk]},
        follow=True,
    )

    assert any("subject" in message.lower() for message in messages_of(response))
    assert set(TemplateVersion.objects.values_list("state", flat=True)) == {"draft"}

    client.post(VERSION_CHANGELIST, {"action": "submit_for_review", "_selected_action": [fine.pk]})
    fine.refresh_from_db()
    assert fine.state == VersionState.IN_REVIEW


def test_retire_action_asks_for_a_comment_first(policy, team, editor, reviewers):
    version = approved(team, editor, reviewers)
    client = client_for(editor)
    selection = {"action": "retire_versions", "_selected_action": [version.pk]}

    page = client.post(VERSION_CHANGELIST, selection)
    assert page.status_code == 200
    version.refresh_from_db()
    assert version.state == VersionState.APPROVED

    client.post(VERSION_CHANGELIST, {**selection, "apply": "1", "comment": "Kampagne vorbei."})
    version.refresh_from_db()
    assert version.state == VersionState.RETIRED
    assert version.state_changes.last().comment == "Kampagne vorbei."


def test_expiring_filter_lists_approved_content_ending_within_30_days(
    policy, team, editor, reviewers
):
    soon = approved(team, editor, reviewers, valid_until=timezone.now() + dt.timedelta(days=5))
    approved(team, editor, reviewers, valid_until=timezone.now() + dt.timedelta(days=60))
    draft(team, editor, valid_until=timezone.now() + dt.timedelta(days=5))

    response = client_for(editor).get(VERSION_CHANGELIST, {"expiring": "30"})

    assert [version.pk for version in response.context["cl"].result_list] == [soon.pk]


def test_policy_is_created_with_its_stages_and_read_only_afterwards(team, superuser, editor):
    editorial = Group.objects.get(name=roles.REVIEWER_EDITORIAL)
    legal = Group.objects.get(name=roles.REVIEWER_LEGAL)
    data = {
        "team": str(team.pk),
        "category": "marketing",
        "name": "Marketing",
        "stages-TOTAL_FORMS": "3",
        "stages-INITIAL_FORMS": "0",
        "stages-MIN_NUM_FORMS": "1",
        "stages-MAX_NUM_FORMS": "1000",
        "stages-0-name": "Redaktion",
        "stages-0-group": str(editorial.pk),
        "stages-0-approvals_required": "1",
        "stages-1-name": "Recht",
        "stages-1-group": str(legal.pk),
        "stages-1-approvals_required": "2",
        "stages-2-approvals_required": "1",
    }

    response = client_for(superuser).post(reverse("admin:approvals_approvalpolicy_add"), data)

    assert response.status_code == 302
    policy = ApprovalPolicy.objects.get()
    assert [(s.position, s.name, s.approvals_required) for s in policy.stages.all()] == [
        (0, "Redaktion", 1),
        (1, "Recht", 2),
    ]
    change = reverse("admin:approvals_approvalpolicy_change", args=[policy.pk])
    assert client_for(superuser).post(change, {**data, "name": "Anders"}).status_code == 403
    assert client_for(editor).get(change).status_code == 200
    assert (
        client_for(editor).post(reverse("admin:approvals_approvalpolicy_add"), data).status_code
        == 403
    )


def test_ledgers_are_read_only_in_admin(
    policy, team, other_team, editor, reviewer_editorial, outsider, auditor, make_user
):
    version = submitted(team, editor)
    entry = decide(version, reviewer_editorial)
    change = reverse("admin:approvals_reviewdecision_change", args=[entry.pk])
    client = client_for(reviewer_editorial)

    assert client.get(change).status_code == 200
    assert client.post(change, {"comment": "anders"}).status_code == 403
    delete = reverse("admin:approvals_reviewdecision_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert ReviewDecision.objects.get().comment == entry.comment
    states = reverse("admin:approvals_versionstatechange_changelist")
    assert client_for(auditor).get(states).status_code == 200
    # For other teams (with or without a reviewer role) the decision does not exist.
    assert client_for(outsider).get(change).status_code == 404
    stranger = make_user("editorial_b", roles.REVIEWER_EDITORIAL, other_team)
    assert client_for(stranger).get(change).status_code == 404
