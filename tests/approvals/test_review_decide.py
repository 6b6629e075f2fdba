from __future__ import annotations

import pytest
from django.core import mail
from django.db import connection, transaction
from django.db.utils import DatabaseError

from approvals.errors import DecisionRefused
from approvals.models import ReviewDecision, TemplateVersion, VersionState
from approvals.selectors import is_sendable, review_queue_for
from approvals.services import (
    policy_create,
    review_decide,
    template_reviewer_assign,
    template_version_submit,
    template_version_update,
)
from crm import roles
from crm.ledger import GENESIS_HASH, LedgerImmutable, verify_chain
from tests.approvals.review_helpers import (
    approved,
    decide,
    draft,
    group,
    submitted,
    three_stage_policy,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def policy(team):
    return three_stage_policy(team)


@pytest.fixture
def reviewers(reviewer_editorial, reviewer_legal, reviewer_medical):
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


def snapshot(version):
    return (
        TemplateVersion.objects.values("state", "stage_index").get(pk=version.pk),
        ReviewDecision.objects.filter(version=version).count(),
        version.state_changes.count(),
    )


def assert_refused(code, version, reviewer, decision="approve", comment="", content_hash=None):
    before = snapshot(version)
    with pytest.raises(DecisionRefused) as caught:
        decide(version, reviewer, decision, comment, content_hash)
    assert caught.value.code == code
    assert snapshot(version) == before
    return caught.value


def test_full_editorial_legal_medical_path(
    policy, team, editor, reviewers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = submitted(team, editor)
    # The editorial reviewers hear first.
    assert [m.to for m in mail.outbox] == [["reviewer_editorial@example.com"]]
    assert "Editorial" in mail.outbox[0].subject

    mail.outbox.clear()
    for index, reviewer in enumerate(reviewers):
        with django_capture_on_commit_callbacks(execute=True):
            entry = decide(version, reviewer, comment="fine")
        assert entry.sequence == index + 1
        assert entry.stage_name == ["Editorial", "Legal", "Medical"][index]
        assert entry.content_hash == version.content_hash
        version.refresh_from_db()
        assert version.stage_index == index + 1

    assert version.state == VersionState.APPROVED
    assert version.approved_at is not None
    assert is_sendable(version)
    assert list(version.state_changes.values_list("from_state", "to_state")) == [
        ("draft", "in_review"),
        ("in_review", "approved"),
    ]
    recipients = [m.to[0] for m in mail.outbox]
    # The author hears of each decision; legal and medical hear when it reaches them.
    assert recipients.count("editor@example.com") == 3
    assert "reviewer_legal@example.com" in recipients
    assert "reviewer_medical@example.com" in recipients
    assert "reviewer_editorial@example.com" not in recipients


def test_review_decisions_form_an_intact_chain(policy, team, editor, reviewers):
    version = approved(team, editor, reviewers)
    entries = list(ReviewDecision.objects.filter(version=version).order_by("sequence"))
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert entries[0].previous_hash == GENESIS_HASH
    assert entries[1].previous_hash == entries[0].hash
    assert verify_chain(version.pk, entries) is None

    entries[1].comment = "changed afterwards"
    broken = verify_chain(version.pk, entries)
    assert broken is not None
    assert broken.entry_id == entries[1].pk


def test_decisions_cannot_be_edited_or_deleted(policy, team, editor, reviewer_editorial):
    entry = decide(submitted(team, editor), reviewer_editorial)
    entry.comment = "rewritten"
    with pytest.raises(LedgerImmutable):
        entry.save()
    with pytest.raises(LedgerImmutable):
        entry.delete()
    with pytest.raises(LedgerImmutable):
        ReviewDecision.objects.filter(pk=entry.pk).update(comment="x")


@pytest.mark.postgres
def test_database_refuses_updates_of_decisions(policy, team, editor, reviewer_editorial):
    entry = decide(submitted(team, editor), reviewer_editorial)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE approvals_reviewdecision SET comment = 'x' WHERE id = %s", [entry.pk]
        )
    entry.refresh_from_db()
    assert entry.comment == ""


def test_author_cannot_approve_own_version(policy, team, make_user):
    # An author who also holds the reviewer role still cannot decide their own version.
    author = make_user("both", roles.EDITOR, team)
    author.groups.add(group(roles.REVIEWER_EDITORIAL))
    version = submitted(team, author)
    assert_refused("author_cannot_decide", version, author)
    assert not review_queue_for(author).exists()


def test_same_person_cannot_decide_two_stages(policy, team, editor, make_user, reviewer_legal):
    both = make_user("both", roles.REVIEWER_EDITORIAL, team)
    both.groups.add(group(roles.REVIEWER_LEGAL))
    version = submitted(team, editor)
    decide(version, both)
    version.refresh_from_db()
    assert version.stage_index == 1

    assert_refused("already_decided_other_stage", version, both)
    assert not review_queue_for(both).exists()
    # Someone else decides legal.
    decide(version, reviewer_legal)
    version.refresh_from_db()
    assert version.stage_index == 2


def test_second_decision_on_the_same_stage_is_refused(team, editor, make_user, reviewer_editorial):
    policy_create(
        team=team,
        category="utility",
        name="Two editors",
        stages=[("Editorial", group(roles.REVIEWER_EDITORIAL), 2)],
        actor=None,
    )
    version = submitted(team, editor)
    decide(version, reviewer_editorial)
    assert_refused("already_decided", version, reviewer_editorial)
    assert not review_queue_for(reviewer_editorial).exists()

    second = make_user("editorial2", roles.REVIEWER_EDITORIAL, team)
    assert review_queue_for(second).get() == version
    decide(version, second)
    version.refresh_from_db()
    assert version.state == VersionState.APPROVED


def test_stage_needs_the_required_number_of_distinct_approvals(
    team, editor, make_user, reviewer_editorial
):
    three_stage_policy(team, required=(2, 1, 1))
    version = submitted(team, editor)
    decide(version, reviewer_editorial)
    version.refresh_from_db()
    assert version.stage_index == 0
    decide(version, make_user("editorial2", roles.REVIEWER_EDITORIAL, team))
    version.refresh_from_db()
    assert version.stage_index == 1


def test_decision_on_stale_content_is_refused(
    policy, team, editor, reviewer_editorial, reviewer_legal
):
    version = submitted(team, editor)
    old_hash = version.content_hash
    decide(version, reviewer_editorial)
    decide(version, reviewer_legal, "request_changes", comment="Claim needs a source.")
    template_version_update(version=version, actor=editor, body="Hallo {{ first_name }}! [1]")
    template_version_submit(version=version, actor=editor)

    exc = assert_refused("stale_content", version, reviewer_editorial, content_hash=old_hash)
    assert exc.field == "content_hash"


def test_request_changes_restarts_review_and_old_approvals_do_not_count(
    policy, team, editor, reviewer_editorial, reviewer_legal, reviewer_medical
):
    version = submitted(team, editor)
    decide(version, reviewer_editorial)
    decide(version, reviewer_legal, "request_changes", comment="Needs the legal footer.")
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    assert version.stage_index == 0

    template_version_update(version=version, actor=editor, footer="Kino Nord GmbH")
    template_version_submit(version=version, actor=editor)
    version.refresh_from_db()
    assert (version.state, version.stage_index) == (VersionState.IN_REVIEW, 0)
    # The first round's editorial approval is bound to the old content; editorial decides again.
    assert review_queue_for(reviewer_editorial).get() == version
    assert not review_queue_for(reviewer_legal).exists()

    for reviewer in (reviewer_editorial, reviewer_legal, reviewer_medical):
        decide(version, reviewer)
    version.refresh_from_db()
    assert version.state == VersionState.APPROVED
    assert ReviewDecision.objects.filter(version=version).count() == 5
    assert verify_chain(version.pk, version.decisions.order_by("sequence")) is None


def test_unchanged_resubmission_still_needs_every_stage_again(
    policy, team, editor, reviewer_editorial, reviewer_legal
):
    version = submitted(team, editor)
    decide(version, reviewer_editorial)
    decide(version, reviewer_legal, "request_changes", comment="Wait for the go-live date.")
    template_version_submit(version=version, actor=editor)
    decide(version, reviewer_editorial)
    version.refresh_from_db()
    # Round two: editorial approved again, legal is next; round one's approval counted nothing.
    assert version.stage_index == 1


def test_reject_ends_the_review(policy, team, editor, reviewer_editorial, reviewer_legal):
    version = submitted(team, editor)
    decide(version, reviewer_editorial, "reject", comment="Off-label claim.")
    version.refresh_from_db()
    assert version.state == VersionState.REJECTED
    assert version.state_changes.last().comment == "Off-label claim."
    assert_refused("not_in_review", version, reviewer_legal)


@pytest.mark.parametrize("decision", ["reject", "request_changes"])
def test_reject_and_request_changes_need_a_comment(
    decision, policy, team, editor, reviewer_editorial
):
    version = submitted(team, editor)
    exc = assert_refused("comment_required", version, reviewer_editorial, decision, comment="  ")
    assert exc.field == "comment"


def test_unknown_decision_is_refused(policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    assert_refused("invalid_decision", version, reviewer_editorial, "maybe")


def test_draft_cannot_be_decided(policy, team, editor, reviewer_editorial):
    assert_refused("not_in_review", draft(team, editor), reviewer_editorial)


def test_reviewer_must_be_in_the_current_stages_group(
    policy, team, editor, reviewer_legal, marketing
):
    version = submitted(team, editor)
    assert_refused("not_in_stage_group", version, reviewer_legal)
    assert_refused("not_in_stage_group", version, marketing)


def test_reviewer_of_another_team_is_refused_unless_assigned(
    policy, team, other_team, editor, make_user
):
    stranger = make_user("stranger", roles.REVIEWER_EDITORIAL, other_team)
    version = submitted(team, editor)
    assert_refused("not_reviewer_of_team", version, stranger)
    assert not review_queue_for(stranger).exists()

    template_reviewer_assign(template=version.template, user=stranger, actor=editor)
    assert review_queue_for(stranger).get() == version
    decide(version, stranger)
    version.refresh_from_db()
    assert version.stage_index == 1


def test_review_queue_shows_only_what_the_reviewer_may_decide_oldest_first(
    policy, team, other_team, editor, make_user, reviewer_editorial, reviewer_legal, auditor
):
    older = submitted(team, editor)
    newer = submitted(team, editor)
    draft(team, editor)
    three_stage_policy(other_team)
    foreign_editor = make_user("foreign_editor", roles.EDITOR, other_team)
    foreign = submitted(other_team, foreign_editor)

    assert list(review_queue_for(reviewer_editorial)) == [older, newer]
    assert not review_queue_for(reviewer_legal).exists()
    assert not review_queue_for(auditor).exists()
    assert not review_queue_for(editor).exists()

    decide(older, reviewer_editorial)
    assert list(review_queue_for(reviewer_editorial)) == [newer]
    assert list(review_queue_for(reviewer_legal)) == [older]

    # A reviewer of team A never sees team B's queue, and vice versa.
    foreign_reviewer = make_user("foreign_reviewer", roles.REVIEWER_EDITORIAL, other_team)
    assert list(review_queue_for(foreign_reviewer)) == [foreign]
    assert foreign not in review_queue_for(reviewer_editorial)


def test_review_queue_query_count_is_flat(
    policy, team, editor, reviewer_editorial, django_assert_max_num_queries
):
    for _ in range(10):
        submitted(team, editor)
    with django_assert_max_num_queries(6):
        rows = [(v.template.name, v.author.username) for v in review_queue_for(reviewer_editorial)]
    assert len(rows) == 10


def test_rejected_version_is_not_sendable(policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    decide(version, reviewer_editorial, "reject", comment="No.")
    version.refresh_from_db()
    assert not is_sendable(version)


def test_decide_updates_the_callers_instance(policy, team, editor, reviewer_editorial):
    version = submitted(team, editor)
    review_decide(
        version=version,
        reviewer=reviewer_editorial,
        decision="approve",
        content_hash=version.content_hash,
    )
    assert version.stage_index == 1
