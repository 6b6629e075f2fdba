from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from approvals.errors import PolicyInvalid
from approvals.models import ApprovalPolicy, ApprovalStage
from approvals.selectors import (
    decisions_visible_to,
    policies_visible_to,
    policy_stages,
    templates_visible_to,
    versions_visible_to,
)
from approvals.services import policy_create, template_reviewer_assign, template_reviewer_remove
from crm import roles
from crm.errors import PermissionRefused
from tests.approvals.review_helpers import (
    decide,
    group,
    new_template,
    submitted,
    three_stage_policy,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def editorial(db):
    return group(roles.REVIEWER_EDITORIAL)


def test_policy_keeps_its_stages_in_order(team, editorial, superuser):
    legal = group(roles.REVIEWER_LEGAL)
    policy = policy_create(
        team=team,
        category="marketing",
        name="Marketing review",
        stages=[("Legal", legal, 1, 5), ("Editorial", editorial, 2, 1)],
        actor=superuser,
    )
    stages = policy_stages(team_id=team.pk, category="marketing")
    assert [(s.name, s.group, s.approvals_required) for s in stages] == [
        ("Editorial", editorial, 2),
        ("Legal", legal, 1),
    ]
    assert list(policy.stages.order_by("position").values_list("position", flat=True)) == [1, 5]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"stages": []}, "stages"),
        ({"stages": [("Editorial", "editorial", 1)]}, "stages"),
        ({"stages": [("Editorial", None, 0)]}, "stages"),
        ({"stages": [("", None, 1)]}, "stages"),
        ({"stages": [("Editorial", None)]}, "stages"),
        ({"stages": [("A", None, 1, 0), ("B", None, 1, 0)]}, "stages"),
        ({"stages": [("Legal", None, 1), ("legal", None, 1)]}, "stages"),
        ({"stages": [("Editorial", None, True)]}, "stages"),
        ({"category": "promo"}, "category"),
        ({"name": "  "}, "name"),
    ],
)
def test_policy_create_refuses_bad_input(team, editorial, kwargs, field):
    arguments = {
        "team": team,
        "category": "utility",
        "name": "Utility review",
        "stages": [("Editorial", None, 1)],
        **kwargs,
    }
    # None stands for the editorial group (parametrize runs before the database exists).
    arguments["stages"] = [
        tuple(editorial if part is None else part for part in spec) for spec in arguments["stages"]
    ]
    with pytest.raises(PolicyInvalid) as caught:
        policy_create(actor=None, **arguments)
    assert caught.value.field == field
    assert not ApprovalPolicy.objects.exists()
    assert not ApprovalStage.objects.exists()


def test_unsaved_group_is_refused(team):
    with pytest.raises(PolicyInvalid):
        policy_create(
            team=team,
            category="utility",
            name="x",
            stages=[("Editorial", Group(name="ghost"), 1)],
            actor=None,
        )
    assert not ApprovalPolicy.objects.exists()


def test_one_policy_per_team_and_category(team):
    three_stage_policy(team)
    with pytest.raises(PolicyInvalid) as caught:
        three_stage_policy(team)
    assert caught.value.field == "category"
    assert ApprovalPolicy.objects.count() == 1
    assert ApprovalStage.objects.count() == 3


def test_policy_create_needs_the_permission(team, editor, editorial):
    with pytest.raises(PermissionRefused):
        policy_create(
            team=team,
            category="utility",
            name="x",
            stages=[("Editorial", editorial, 1)],
            actor=editor,
        )
    assert not ApprovalPolicy.objects.exists()


def test_reviewer_assignment_needs_role_and_team(team, editor, outsider, make_user, other_team):
    template = new_template(team, editor)
    stranger = make_user("stranger", roles.REVIEWER_LEGAL, other_team)
    with pytest.raises(PermissionRefused):
        template_reviewer_assign(template=template, user=stranger, actor=outsider)
    assert not templates_visible_to(stranger).exists()

    template_reviewer_assign(template=template, user=stranger, actor=editor)
    assert list(templates_visible_to(stranger)) == [template]
    template_reviewer_remove(template=template, user=stranger, actor=editor)
    assert not templates_visible_to(stranger).exists()


def test_reads_are_scoped_to_the_callers_teams(
    team, other_team, editor, outsider, auditor, reviewer_editorial
):
    three_stage_policy(team)
    version = submitted(team, editor)
    decide(version, reviewer_editorial)

    for user in (editor, reviewer_editorial, auditor):
        assert list(templates_visible_to(user)) == [version.template]
        assert list(versions_visible_to(user)) == [version]
        assert decisions_visible_to(user).count() == 1
    assert policies_visible_to(editor).count() == 1
    assert policies_visible_to(auditor).count() == 1

    assert not templates_visible_to(outsider).exists()
    assert not versions_visible_to(outsider).exists()
    assert not decisions_visible_to(outsider).exists()
    assert not policies_visible_to(outsider).exists()


@pytest.mark.parametrize(
    ("role", "perms", "lacking"),
    [
        (
            roles.EDITOR,
            [
                "approvals.add_templateversion",
                "approvals.change_templateversion",
                "approvals.submit_templateversion",
                "approvals.view_reviewdecision",
            ],
            ["approvals.add_reviewdecision", "approvals.add_approvalpolicy"],
        ),
        (
            roles.REVIEWER_LEGAL,
            ["approvals.view_templateversion", "approvals.add_reviewdecision"],
            ["approvals.change_templateversion", "approvals.submit_templateversion"],
        ),
        (
            roles.MARKETING,
            ["approvals.view_messagetemplate", "approvals.view_templateversion"],
            ["approvals.add_templateversion"],
        ),
        (
            roles.AUDITOR,
            ["approvals.view_reviewdecision", "approvals.view_versionstatechange"],
            ["approvals.add_reviewdecision", "approvals.change_templateversion"],
        ),
    ],
)
def test_roles_hold_the_approvals_permissions(make_user, role, perms, lacking):
    user = make_user(f"user_{role}", role)
    assert all(user.has_perm(perm) for perm in perms)
    assert not any(user.has_perm(perm) for perm in lacking)
