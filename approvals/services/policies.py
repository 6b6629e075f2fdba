"""Approval policies (ordered stages per team and category) and assigned reviewers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from guardian.shortcuts import assign_perm, remove_perm

from approvals.errors import PolicyInvalid
from approvals.models import ApprovalPolicy, ApprovalStage, MessageTemplate, TemplateCategory
from approvals.selectors import REVIEW_PERM
from approvals.services.common import ensure_may, history_user
from crm.models import Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def _stage_rows(stages: Sequence[Sequence[Any]]) -> list[tuple[int, str, Group, int]]:
    """(position, name, group, approvals_required) per stage; list order is the position
    unless a fourth element gives it."""
    if not stages:
        raise PolicyInvalid(_("A policy needs at least one stage."), field="stages")
    rows = []
    for index, spec in enumerate(stages):
        if len(spec) not in (3, 4):
            raise PolicyInvalid(
                _("Give each stage as (name, group, approvals needed)."), field="stages"
            )
        name, group, required = spec[0], spec[1], spec[2]
        position = spec[3] if len(spec) == 4 else index
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 80:
            raise PolicyInvalid(_("Each stage needs a name of 1 to 80 characters."), field="stages")
        if not isinstance(group, Group) or group.pk is None:
            raise PolicyInvalid(
                _("Stage “%(stage)s” needs an existing group.") % {"stage": name}, field="stages"
            )
        if isinstance(required, bool) or not isinstance(required, int) or required < 1:
            raise PolicyInvalid(
                _("Stage “%(stage)s” needs at least one approval.") % {"stage": name},
                field="stages",
            )
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise PolicyInvalid(_("Stage positions are whole numbers from 0."), field="stages")
        rows.append((position, name.strip(), group, required))
    if len({row[0] for row in rows}) != len(rows):
        raise PolicyInvalid(_("Two stages share a position."), field="stages")
    if len({row[1].casefold() for row in rows}) != len(rows):
        raise PolicyInvalid(_("Two stages share a name."), field="stages")
    return sorted(rows, key=lambda row: row[0])


@transaction.atomic
def policy_create(
    *,
    team: Team,
    category: str,
    name: str,
    stages: Sequence[Sequence[Any]],
    actor: AbstractBaseUser | None,
) -> ApprovalPolicy:
    """The ordered review stages for a team's templates of one category (one per category).

    Each stage is (name, group, approvals needed); at least one stage, at least one
    approval each, distinct positions and names.
    """
    ensure_may(actor, "approvals.add_approvalpolicy", team)
    if category not in TemplateCategory.values:
        raise PolicyInvalid(_("Unknown category “%(v)s”.") % {"v": category}, field="category")
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise PolicyInvalid(_("Give the policy a name of 1 to 120 characters."), field="name")
    rows = _stage_rows(stages)
    if ApprovalPolicy.objects.filter(team=team, category=category).exists():
        raise PolicyInvalid(
            _("This team already has a policy for this category."), field="category"
        )
    policy = ApprovalPolicy(team=team, category=category, name=name)
    history_user(policy, actor)
    policy.save()
    for position, stage_name, group, required in rows:
        stage = ApprovalStage(
            policy=policy,
            position=position,
            name=stage_name,
            group=group,
            approvals_required=required,
        )
        history_user(stage, actor)
        stage.save()
    return policy


def _forget_assignments(user: AbstractBaseUser) -> None:
    user.__dict__.pop("_approvals_assigned_template_ids", None)


@transaction.atomic
def template_reviewer_assign(
    *, template: MessageTemplate, user: AbstractBaseUser, actor: AbstractBaseUser | None
) -> None:
    """Let `user` review this template's versions (guardian object permission). They still
    decide only stages whose group they are in."""
    ensure_may(actor, "approvals.change_messagetemplate", template.team_id)
    assign_perm(REVIEW_PERM, user, template)
    _forget_assignments(user)


@transaction.atomic
def template_reviewer_remove(
    *, template: MessageTemplate, user: AbstractBaseUser, actor: AbstractBaseUser | None
) -> None:
    ensure_may(actor, "approvals.change_messagetemplate", template.team_id)
    remove_perm(REVIEW_PERM, user, template)
    _forget_assignments(user)
