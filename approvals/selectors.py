"""Reads of the approvals app: scoped to the caller's teams first (auditors see all), plus
templates a reviewer was assigned to by object permission; and the send gate's question,
`is_sendable`."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db.models import (
    BigIntegerField,
    Case,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user, get_users_with_perms

from approvals.models import (
    ApprovalPolicy,
    ApprovalStage,
    Decision,
    MessageTemplate,
    ProviderStatus,
    ReviewDecision,
    TemplateVersion,
    VersionState,
    VersionStateChange,
)
from crm import selectors as crm_selectors
from crm.models import Channel

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser

REVIEW_PERM = "approvals.review_messagetemplate"

# Refusal codes of sendability(); the send gate stores them with the refused message.
TEMPLATE_NOT_APPROVED = "template_not_approved"
TEMPLATE_EXPIRED = "template_expired"
TEMPLATE_NOT_YET_VALID = "template_not_yet_valid"
PROVIDER_NOT_APPROVED = "provider_not_approved"
TEMPLATE_INACTIVE = "template_inactive"


def assigned_template_ids(user: AnyUser) -> list[int]:
    """Templates the user was assigned to review by object permission (any team).

    Memoised on the user object like crm's team ids; the assign services drop the memo.
    """
    if not user.is_authenticated or not user.is_active:
        return []
    cached = getattr(user, "_approvals_assigned_template_ids", None)
    if cached is None:
        templates = get_objects_for_user(
            user, REVIEW_PERM, klass=MessageTemplate, accept_global_perms=False
        )
        cached = list(templates.values_list("id", flat=True))
        user._approvals_assigned_template_ids = cached
    return cached


def _template_scope(user: AnyUser, prefix: str = "") -> Q:
    """Templates of the user's visible teams, or assigned to the user for review."""
    scope = Q(**{f"{prefix}team_id__in": crm_selectors.visible_team_ids(user)})
    assigned = assigned_template_ids(user)
    if assigned:
        scope |= Q(**{f"{prefix}id__in": assigned})
    return scope


def may_review_template(user: AnyUser, template: MessageTemplate) -> bool:
    """Member of the template's team, or assigned to it by object permission."""
    return template.team_id in crm_selectors.member_team_ids(
        user
    ) or template.pk in assigned_template_ids(user)


def templates_visible_to(user: AnyUser) -> QuerySet[MessageTemplate]:
    return MessageTemplate.objects.filter(_template_scope(user)).select_related(
        "team", "purpose", "owner"
    )


def versions_visible_to(user: AnyUser) -> QuerySet[TemplateVersion]:
    return TemplateVersion.objects.filter(_template_scope(user, "template__")).select_related(
        "template", "template__team", "template__purpose", "author"
    )


def decisions_visible_to(user: AnyUser) -> QuerySet[ReviewDecision]:
    return ReviewDecision.objects.filter(
        _template_scope(user, "version__template__")
    ).select_related("version", "version__template", "stage", "reviewer")


def state_changes_visible_to(user: AnyUser) -> QuerySet[VersionStateChange]:
    return VersionStateChange.objects.filter(
        _template_scope(user, "version__template__")
    ).select_related("version", "version__template", "actor")


def policies_visible_to(user: AnyUser) -> QuerySet[ApprovalPolicy]:
    return (
        ApprovalPolicy.objects.filter(team_id__in=crm_selectors.visible_team_ids(user))
        .select_related("team")
        .prefetch_related("stages__group")
    )


def policy_stages(*, team_id: int, category: str) -> list[ApprovalStage]:
    """The stages of the team's policy for the category, in review order ([] without one)."""
    return list(
        ApprovalStage.objects.filter(policy__team_id=team_id, policy__category=category)
        .select_related("group")
        .order_by("position", "id")
    )


def current_stage(version: TemplateVersion) -> ApprovalStage | None:
    """The stage a version in review waits for (None when not in review or out of stages)."""
    if version.state != VersionState.IN_REVIEW:
        return None
    template = version.template
    stages = policy_stages(team_id=template.team_id, category=template.category)
    return stages[version.stage_index] if version.stage_index < len(stages) else None


def round_start_sequence(version: TemplateVersion) -> int:
    """Decisions up to this sequence belong to earlier review rounds.

    A request for changes sends the version back to draft and ends the round: after the
    resubmission every stage is decided again, by the same rules, from scratch.
    """
    last = (
        ReviewDecision.objects.filter(version=version, decision=Decision.REQUEST_CHANGES)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
        .first()
    )
    return last or 0


def _round_start_subquery() -> Coalesce:
    return Coalesce(
        Subquery(
            ReviewDecision.objects.filter(version=OuterRef("pk"), decision=Decision.REQUEST_CHANGES)
            .order_by("-sequence")
            .values("sequence")[:1]
        ),
        Value(0),
    )


def review_queue_for(user: AnyUser) -> QuerySet[TemplateVersion]:
    """Versions the user may decide now, oldest submission first.

    In review; the current stage's group is one of the user's groups; the template is of one
    of the user's teams or assigned to the user; not authored by the user; not decided by the
    user on another stage, nor on this stage in this round (four-eyes). Never another team's
    versions, even for auditors.
    """
    none = TemplateVersion.objects.none()
    if not user.is_authenticated or not user.is_active:
        return none
    group_ids = set(user.groups.values_list("id", flat=True))
    if not group_ids:
        return none
    team_ids = crm_selectors.member_team_ids(user)
    assigned = assigned_template_ids(user)
    scope = Q(template__team_id__in=team_ids)
    if assigned:
        scope |= Q(template_id__in=assigned)

    # The stage at `stage_index` is the index-th by position, so it is matched per policy here.
    policies = ApprovalPolicy.objects.filter(stages__group_id__in=group_ids).distinct()
    whens = []
    for policy in policies.prefetch_related("stages"):
        stages = sorted(policy.stages.all(), key=lambda stage: (stage.position, stage.id))
        for index, stage in enumerate(stages):
            if stage.group_id in group_ids:
                condition = Q(
                    template__team_id=policy.team_id,
                    template__category=policy.category,
                    stage_index=index,
                )
                whens.append(When(condition, then=Value(stage.pk)))
    if not whens:
        return none

    mine = ReviewDecision.objects.filter(version=OuterRef("pk"), reviewer_id=user.pk)
    return (
        TemplateVersion.objects.filter(scope, state=VersionState.IN_REVIEW)
        .exclude(author_id=user.pk)
        .annotate(
            current_stage_id=Case(*whens, default=None, output_field=BigIntegerField()),
            round_start=_round_start_subquery(),
        )
        .filter(current_stage_id__isnull=False)
        .exclude(Exists(mine.exclude(stage_id=OuterRef("current_stage_id"))))
        .exclude(
            Exists(
                mine.filter(
                    stage_id=OuterRef("current_stage_id"), sequence__gt=OuterRef("round_start")
                )
            )
        )
        .select_related("template", "template__team", "template__purpose", "author")
        .order_by("submitted_at", "pk")
    )


def stage_reviewers(version: TemplateVersion) -> list[Any]:
    """Who may decide the version's current stage: active members of the stage's group who
    are in the template's team or assigned to the template, minus the author and anyone who
    already decided another stage of it."""
    stage = current_stage(version)
    if stage is None:
        return []
    template = version.template
    team_member_ids = set(crm_selectors.team_members(template.team).values_list("id", flat=True))
    assigned_ids = set(
        get_users_with_perms(
            template, only_with_perms_in=["review_messagetemplate"], with_group_users=False
        ).values_list("id", flat=True)
    )
    decided_elsewhere = set(
        ReviewDecision.objects.filter(version=version)
        .exclude(stage=stage)
        .values_list("reviewer_id", flat=True)
    )
    candidates = (
        get_user_model()
        .objects.filter(groups=stage.group, is_active=True)
        .filter(id__in=team_member_ids | assigned_ids)
        .exclude(id__in=decided_elsewhere)
        .order_by("id")
    )
    if version.author_id is not None:
        candidates = candidates.exclude(id=version.author_id)
    return list(candidates)


def sendability(version: TemplateVersion, at: dt.datetime | None = None) -> str | None:
    """None when the version may be sent at `at` (default now), else the refusal code.

    Called by the send gate for every message: no queries when `version.template` is
    loaded (select_related), one otherwise.
    """
    at = at or timezone.now()
    expired = version.valid_until is not None and at >= version.valid_until
    if version.state != VersionState.APPROVED:
        # A version retired because its content expired says so.
        if version.state == VersionState.RETIRED and expired:
            return TEMPLATE_EXPIRED
        return TEMPLATE_NOT_APPROVED
    if expired:
        return TEMPLATE_EXPIRED
    if version.valid_from is not None and at < version.valid_from:
        return TEMPLATE_NOT_YET_VALID
    template = version.template
    if template.channel == Channel.WHATSAPP:
        if version.provider_status != ProviderStatus.APPROVED:
            return PROVIDER_NOT_APPROVED
    elif version.provider_status not in (ProviderStatus.NOT_REQUIRED, ProviderStatus.APPROVED):
        return PROVIDER_NOT_APPROVED
    if not template.is_active:
        return TEMPLATE_INACTIVE
    return None


def is_sendable(version: TemplateVersion, at: dt.datetime | None = None) -> bool:
    """Approved, inside its validity window, provider-approved where required, template active."""
    return sendability(version, at) is None


def previous_approved(version: TemplateVersion) -> TemplateVersion | None:
    """The latest earlier version of the same template that was approved (for diffs)."""
    return (
        TemplateVersion.objects.filter(
            template_id=version.template_id,
            number__lt=version.number,
            approved_at__isnull=False,
        )
        .order_by("-number")
        .first()
    )


def versions_expiring(
    user: AnyUser, days: int = 30, *, now: dt.datetime | None = None
) -> QuerySet[TemplateVersion]:
    """Approved versions the user sees whose content expires within `days`, soonest first."""
    now = now or timezone.now()
    return (
        versions_visible_to(user)
        .filter(
            state=VersionState.APPROVED,
            valid_until__gt=now,
            valid_until__lte=now + dt.timedelta(days=days),
        )
        .order_by("valid_until", "pk")
    )
