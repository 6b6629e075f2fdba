"""The review workflow through the REST API: decisions, the queue, four-eyes, scoping."""

from __future__ import annotations

import pytest

from approvals.models import ReviewDecision, TemplateVersion, VersionState
from approvals.services import template_version_update
from crm import roles
from tests.approvals.review_helpers import (
    approved,
    decide,
    draft,
    submitted,
    three_stage_policy,
)

pytestmark = pytest.mark.django_db

VERSIONS = "/api/v1/template-versions/"
DECISIONS = "/api/v1/review-decisions/"
QUEUE = "/api/v1/review-queue/"


@pytest.fixture
def policy(team):
    return three_stage_policy(team)


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.data
    return response.data["results"]


def post_decision(client, version, decision="approve", comment="", content_hash=None):
    version.refresh_from_db()
    return client.post(
        DECISIONS,
        {
            "version": version.pk,
            "decision": decision,
            "comment": comment,
            "content_hash": content_hash or version.content_hash,
        },
        format="json",
    )


def snapshot(version: TemplateVersion) -> dict:
    return TemplateVersion.objects.filter(pk=version.pk).values().get()


def test_full_editorial_legal_medical_path_via_the_api(
    api_client_for, policy, team, editor, reviewer_editorial, reviewer_legal, reviewer_medical
):
    author = api_client_for(editor)
    template = author.post(
        "/api/v1/message-templates/",
        {
            "team": team.pk,
            "name": "programm_woche",
            "channel": "email",
            "category": "utility",
            "language": "de",
        },
        format="json",
    )
    assert template.status_code == 201, template.data
    created = author.post(
        VERSIONS,
        {
            "template": template.data["id"],
            "subject": "Ihr Programm",
            "body": "Hallo {{ first_name }}, das Programm der Woche ist da.",
        },
        format="json",
    )
    assert created.status_code == 201, created.data
    assert created.data["state"] == "draft"
    assert created.data["variables"] == ["first_name"]
    version = TemplateVersion.objects.get(pk=created.data["id"])

    submit = author.post(f"{VERSIONS}{version.pk}/submit/")
    assert submit.status_code == 200, submit.data
    assert submit.data["state"] == "in_review"

    stages = [(reviewer_editorial, "Editorial"), (reviewer_legal, "Legal")]
    stages.append((reviewer_medical, "Medical"))
    for index, (reviewer, stage_name) in enumerate(stages):
        client = api_client_for(reviewer)
        queue = rows(client.get(QUEUE))
        assert [(row["id"], row["stage_name"]) for row in queue] == [(version.pk, stage_name)]
        for other, _name in stages:
            if other is not reviewer:
                assert rows(api_client_for(other).get(QUEUE)) == []
        response = post_decision(client, version, comment="ok")
        assert response.status_code == 201, response.data
        assert response.data["stage_name"] == stage_name
        assert response.data["sequence"] == index + 1
        version.refresh_from_db()

    assert version.state == VersionState.APPROVED
    assert version.approved_at is not None
    decisions = rows(author.get(DECISIONS, {"version": version.pk}))
    assert [row["stage_name"] for row in decisions] == ["Medical", "Legal", "Editorial"]
    assert {row["content_hash"] for row in decisions} == {version.content_hash}
    assert list(version.state_changes.values_list("to_state", flat=True)) == [
        "in_review",
        "approved",
    ]


def test_author_cannot_approve_own_version_and_nothing_changes(
    api_client_for, policy, team, make_user
):
    author = make_user("writer_reviewer", roles.EDITOR, team)
    author.groups.add(*reviewer_groups(roles.REVIEWER_EDITORIAL))
    version = submitted(team, author)
    before = snapshot(version)
    client = api_client_for(author)

    assert rows(client.get(QUEUE)) == []
    response = post_decision(client, version)

    assert response.status_code == 400
    assert response.data["code"] == "author_cannot_decide"
    assert snapshot(version) == before
    assert not ReviewDecision.objects.exists()


def reviewer_groups(*names):
    from django.contrib.auth.models import Group

    return list(Group.objects.filter(name__in=names))


def test_one_person_decides_at_most_one_stage(api_client_for, policy, team, editor, make_user):
    both = make_user("both_stages", roles.REVIEWER_EDITORIAL, team)
    both.groups.add(*reviewer_groups(roles.REVIEWER_LEGAL))
    version = submitted(team, editor)
    client = api_client_for(both)
    assert post_decision(client, version).status_code == 201
    version.refresh_from_db()
    assert version.stage_index == 1
    before = snapshot(version)

    assert rows(client.get(QUEUE)) == []
    response = post_decision(client, version)

    assert response.status_code == 400
    assert response.data["code"] == "already_decided_other_stage"
    assert snapshot(version) == before
    assert ReviewDecision.objects.count() == 1


def test_decision_on_stale_content_is_refused(
    api_client_for, policy, team, editor, reviewer_editorial
):
    version = submitted(team, editor)
    seen_hash = version.content_hash
    decide(version, reviewer_editorial, "request_changes", comment="Bitte kürzer.")
    template_version_update(version=version, actor=editor, body="Hallo {{ first_name }}!")
    api_client_for(editor).post(f"{VERSIONS}{version.pk}/submit/")
    version.refresh_from_db()
    assert version.state == VersionState.IN_REVIEW
    assert version.content_hash != seen_hash
    before = snapshot(version)
    decisions = ReviewDecision.objects.count()

    # The reviewer answers from the page they opened before the edit.
    response = post_decision(api_client_for(reviewer_editorial), version, content_hash=seen_hash)

    assert response.status_code == 400
    assert response.data["code"] == "stale_content"
    assert "content_hash" in response.data
    assert snapshot(version) == before
    assert ReviewDecision.objects.count() == decisions


def test_reject_needs_a_comment_and_then_ends_the_review(
    api_client_for, policy, team, editor, reviewer_editorial
):
    version = submitted(team, editor)
    client = api_client_for(reviewer_editorial)

    refused = post_decision(client, version, "reject")
    assert refused.status_code == 400
    assert refused.data["code"] == "comment_required"
    assert not ReviewDecision.objects.exists()

    rejected = post_decision(client, version, "reject", comment="Rechtlich heikel.")
    assert rejected.status_code == 201
    version.refresh_from_db()
    assert version.state == VersionState.REJECTED
    assert version.state_changes.last().comment == "Rechtlich heikel."


def test_request_changes_sends_the_version_back_to_draft(
    api_client_for, policy, team, editor, reviewer_editorial
):
    version = submitted(team, editor)
    response = post_decision(
        api_client_for(reviewer_editorial), version, "request_changes", comment="Tippfehler."
    )
    assert response.status_code == 201
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    edited = api_client_for(editor).patch(
        f"{VERSIONS}{version.pk}/", {"body": "Hallo {{ first_name }}, neu."}, format="json"
    )
    assert edited.status_code == 200, edited.data


def test_approved_version_is_immutable_via_the_api(
    api_client_for, policy, team, editor, reviewer_editorial, reviewer_legal, reviewer_medical
):
    version = approved(team, editor, [reviewer_editorial, reviewer_legal, reviewer_medical])
    before = snapshot(version)
    client = api_client_for(editor)

    for method in ("patch", "put"):
        response = getattr(client, method)(
            f"{VERSIONS}{version.pk}/", {"body": "Ganz anders."}, format="json"
        )
        assert response.status_code == 400, response.data
        assert response.data["code"] == "version_immutable"
        assert snapshot(version) == before

    # A state sent in the body is ignored: only the workflow writes it.
    response = client.patch(f"{VERSIONS}{version.pk}/", {"state": "draft"}, format="json")
    assert response.status_code == 400
    assert snapshot(version) == before


def test_reviewer_of_another_team_sees_nothing_of_it_and_gets_404(
    api_client_for, policy, team, other_team, editor, reviewer_editorial, make_user
):
    three_stage_policy(other_team)
    stranger = make_user("editorial_b", roles.REVIEWER_EDITORIAL, other_team)
    foreign_editor = make_user("editor_b", roles.EDITOR, other_team)
    mine = submitted(team, editor)
    theirs = submitted(other_team, foreign_editor)
    before = snapshot(mine)

    assert [row["id"] for row in rows(api_client_for(stranger).get(QUEUE))] == [theirs.pk]
    assert [row["id"] for row in rows(api_client_for(reviewer_editorial).get(QUEUE))] == [mine.pk]
    client = api_client_for(stranger)
    assert client.get(f"{VERSIONS}{mine.pk}/").status_code == 404
    assert client.get(f"{VERSIONS}{mine.pk}/preview/").status_code == 404
    response = post_decision(client, mine)
    assert response.status_code == 404
    assert snapshot(mine) == before
    assert not ReviewDecision.objects.filter(version=mine).exists()


def test_queue_lists_the_oldest_submission_first(
    api_client_for, policy, team, editor, reviewer_editorial
):
    older = submitted(team, editor)
    newer = submitted(team, editor)
    draft(team, editor)
    assert [row["id"] for row in rows(api_client_for(reviewer_editorial).get(QUEUE))] == [
        older.pk,
        newer.pk,
    ]


def test_auditor_reads_everything_and_writes_nothing(
    api_client_for, policy, team, editor, reviewer_editorial, auditor
):
    version = submitted(team, editor)
    decide(version, reviewer_editorial)
    before = snapshot(version)
    client = api_client_for(auditor)

    assert [row["id"] for row in rows(client.get(VERSIONS))] == [version.pk]
    assert len(rows(client.get(DECISIONS))) == 1
    assert client.get(f"{VERSIONS}{version.pk}/preview/").status_code == 200
    assert client.get(f"{VERSIONS}{version.pk}/diff/").status_code == 200
    assert rows(client.get(QUEUE)) == []

    writes = [
        client.post(VERSIONS, {"template": version.template_id, "body": "x"}, format="json"),
        client.patch(f"{VERSIONS}{version.pk}/", {"body": "x"}, format="json"),
        client.post(f"{VERSIONS}{version.pk}/submit/"),
        client.post(f"{VERSIONS}{version.pk}/retire/", {}, format="json"),
        post_decision(client, version),
        client.post(
            "/api/v1/message-templates/",
            {"team": team.pk, "name": "x", "channel": "sms", "category": "utility"},
            format="json",
        ),
        client.post(
            f"/api/v1/message-templates/{version.template_id}/reviewers/",
            {"user": reviewer_editorial.pk},
            format="json",
        ),
    ]
    assert [response.status_code for response in writes] == [403] * len(writes)
    assert snapshot(version) == before
    assert ReviewDecision.objects.count() == 1
    assert TemplateVersion.objects.count() == 1


def test_decision_ledger_is_append_only_over_the_api(
    api_client_for, policy, team, editor, reviewer_editorial
):
    version = submitted(team, editor)
    entry = decide(version, reviewer_editorial)
    client = api_client_for(reviewer_editorial)
    for method in ("patch", "put", "delete"):
        response = getattr(client, method)(f"{DECISIONS}{entry.pk}/", {}, format="json")
        assert response.status_code == 405
    assert ReviewDecision.objects.get().hash == entry.hash


def test_decision_input_is_checked(api_client_for, policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    client = api_client_for(reviewer_editorial)
    response = client.post(
        DECISIONS, {"version": version.pk, "decision": "maybe", "content_hash": "x"}, format="json"
    )
    assert response.status_code == 400
    assert "decision" in response.data
    missing = client.post(DECISIONS, {"version": version.pk}, format="json")
    assert missing.status_code == 400
    assert {"decision", "content_hash"} <= set(missing.data)
    assert not ReviewDecision.objects.exists()


def test_assigned_reviewer_is_listed_added_and_removed(
    api_client_for, policy, team, editor, reviewer_legal, make_user, other_team
):
    version = submitted(team, editor)
    url = f"/api/v1/message-templates/{version.template_id}/reviewers/"
    client = api_client_for(editor)

    assert client.get(url).data == []
    added = client.post(url, {"user": reviewer_legal.pk}, format="json")
    assert added.status_code == 200, added.data
    assert [row["username"] for row in added.data] == ["reviewer_legal"]
    assert reviewer_legal.has_perm("approvals.review_messagetemplate", version.template)

    removed = client.delete(f"{url}{reviewer_legal.pk}/")
    assert removed.status_code == 204
    assert client.get(url).data == []
    assert client.delete(f"{url}{reviewer_legal.pk}/").status_code == 404


def test_reviewer_assignment_refusals_change_nothing(
    api_client_for, policy, team, other_team, editor, reviewer_legal, marketing, make_user, outsider
):
    version = submitted(team, editor)
    url = f"/api/v1/message-templates/{version.template_id}/reviewers/"
    foreign_reviewer = make_user("legal_b", roles.REVIEWER_LEGAL, other_team)

    not_member = api_client_for(editor).post(url, {"user": foreign_reviewer.pk}, format="json")
    assert not_member.status_code == 400
    assert "user" in not_member.data
    no_reviewer = api_client_for(editor).post(url, {"user": marketing.pk}, format="json")
    assert no_reviewer.status_code == 400
    # Reviewers may read templates but not assign people to them.
    by_reviewer = api_client_for(reviewer_legal).post(url, {"user": reviewer_legal.pk})
    assert by_reviewer.status_code == 403
    assert api_client_for(outsider).get(url).status_code == 404

    assert api_client_for(editor).get(url).data == []
