"""Review decisions: the review ledger of each version and the four-eyes rules.

`review_decide` appends a hash-chained ReviewDecision bound to the content hash reviewed and
moves the version on (through template_version_transition) when a stage is complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals import selectors
from approvals.errors import DecisionRefused
from approvals.models import ApprovalStage, Decision, ReviewDecision, TemplateVersion, VersionState
from approvals.services.common import actor_label, history_user
from approvals.services.workflow import (
    TRANSITION_FIELDS,
    notify_author_on_commit,
    notify_reviewers_on_commit,
    template_version_transition,
)
from crm.ledger import GENESIS_HASH

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def _check_decision(
    *,
    version: TemplateVersion,
    reviewer: AbstractBaseUser,
    decision: str,
    reviewed_hash: str,
    comment: str,
) -> ApprovalStage:
    """The four-eyes and binding rules; returns the stage being decided."""
    if decision not in Decision.values:
        raise DecisionRefused(
            _("Unknown decision “%(v)s”.") % {"v": decision},
            code="invalid_decision",
            field="decision",
        )
    if version.state != VersionState.IN_REVIEW:
        raise DecisionRefused(_("This version is not in review."), code="not_in_review")
    if reviewer.pk == version.author_id:
        raise DecisionRefused(
            _("Authors cannot decide on their own versions."), code="author_cannot_decide"
        )
    stage = selectors.current_stage(version)
    if stage is None:
        raise DecisionRefused(
            _("The approval policy has no stage for this version."), code="no_stage"
        )
    if not reviewer.is_active or not reviewer.groups.filter(pk=stage.group_id).exists():
        raise DecisionRefused(
            _("Only members of “%(group)s” decide the stage “%(stage)s”.")
            % {"group": stage.group.name, "stage": stage.name},
            code="not_in_stage_group",
        )
    if not selectors.may_review_template(reviewer, version.template):
        raise DecisionRefused(
            _("You review neither this team's templates nor this template."),
            code="not_reviewer_of_team",
        )
    earlier = list(
        ReviewDecision.objects.filter(version=version, reviewer_id=reviewer.pk).values_list(
            "stage_id", "sequence"
        )
    )
    if any(stage_id != stage.pk for stage_id, _sequence in earlier):
        raise DecisionRefused(
            _("You already decided another stage of this version; one person, one stage."),
            code="already_decided_other_stage",
        )
    round_start = selectors.round_start_sequence(version)
    if any(sequence > round_start for _stage_id, sequence in earlier):
        raise DecisionRefused(
            _("You already decided this stage of this version."), code="already_decided"
        )
    if reviewed_hash != version.content_hash:
        raise DecisionRefused(
            _("The content changed after you opened it; review the current content."),
            code="stale_content",
            field="content_hash",
        )
    if decision in (Decision.REJECT, Decision.REQUEST_CHANGES) and not comment:
        raise DecisionRefused(
            _("Say why: rejecting or requesting changes needs a comment."),
            code="comment_required",
            field="comment",
        )
    return stage


def _append_decision(
    *,
    version: TemplateVersion,
    stage: ApprovalStage,
    reviewer: AbstractBaseUser,
    decision: str,
    comment: str,
) -> ReviewDecision:
    """Seal the decision onto the version's chain (the version row is locked by the caller)."""
    last = (
        ReviewDecision.objects.filter(version=version)
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    entry = ReviewDecision(
        version=version,
        stage=stage,
        stage_name=stage.name,
        reviewer=reviewer,
        reviewer_label=actor_label(reviewer),
        decision=decision,
        comment=comment,
        content_hash=version.content_hash,
        decided_at=timezone.now(),
        sequence=(last["sequence"] + 1) if last else 1,
    )
    entry.seal(last["hash"] if last else GENESIS_HASH)
    entry.save()
    return entry


def _stage_complete(version: TemplateVersion, stage: ApprovalStage) -> bool:
    """Enough distinct reviewers approved this stage, in this round, on this content."""
    approvals = (
        ReviewDecision.objects.filter(
            version=version,
            stage=stage,
            decision=Decision.APPROVE,
            content_hash=version.content_hash,
            sequence__gt=selectors.round_start_sequence(version),
        )
        .values("reviewer_id")
        .distinct()
        .count()
    )
    return approvals >= stage.approvals_required


@transaction.atomic
def review_decide(
    *,
    version: TemplateVersion,
    reviewer: AbstractBaseUser,
    decision: str,
    content_hash: str,
    comment: str = "",
) -> ReviewDecision:
    """Record one reviewer's decision on the current stage, bound to the content reviewed.

    Four-eyes: never the author, one person one stage, a member of the stage's group who
    reviews the template's team (or was assigned to the template). Reject ends the review;
    request changes sends the version back to draft; enough approvals complete the stage,
    and the last stage approves the version.
    """
    comment = (comment or "").strip()
    # Lock the version: its chain must not fork, and two approvals must not both advance it.
    locked = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .select_related("template")
        .get(pk=version.pk)
    )
    stage = _check_decision(
        version=locked,
        reviewer=reviewer,
        decision=decision,
        reviewed_hash=content_hash,
        comment=comment,
    )
    entry = _append_decision(
        version=locked, stage=stage, reviewer=reviewer, decision=decision, comment=comment
    )
    notify_author_on_commit(entry)
    if decision == Decision.REJECT:
        template_version_transition(
            version=locked, to=VersionState.REJECTED, actor=reviewer, comment=comment
        )
    elif decision == Decision.REQUEST_CHANGES:
        template_version_transition(
            version=locked, to=VersionState.DRAFT, actor=reviewer, comment=comment
        )
    elif _stage_complete(locked, stage):
        template = locked.template
        stage_count = len(
            selectors.policy_stages(team_id=template.team_id, category=template.category)
        )
        locked.stage_index += 1
        history_user(locked, reviewer, f"stage {stage.name} approved"[:100])
        locked.save(update_fields=["stage_index", "updated_at"])
        if locked.stage_index >= stage_count:
            template_version_transition(
                version=locked, to=VersionState.APPROVED, actor=reviewer, comment=comment
            )
        else:
            notify_reviewers_on_commit(locked)
    for name in TRANSITION_FIELDS:
        setattr(version, name, getattr(locked, name))
    return entry
