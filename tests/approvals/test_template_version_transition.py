from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.errors import (
    ChannelRulesViolated,
    PolicyMissing,
    RenderError,
    TemplateInvalid,
    TransitionRefused,
    VersionImmutable,
)
from approvals.models import (
    VERSION_TRANSITIONS,
    MessageTemplate,
    ProviderStatus,
    TemplateVersion,
    VersionState,
    VersionStateChange,
)
from approvals.services import (
    content_hash,
    template_create,
    template_update,
    template_version_create,
    template_version_retire,
    template_version_submit,
    template_version_transition,
    template_version_update,
)
from crm.errors import PermissionRefused
from tests.approvals.review_helpers import (
    BODY,
    approved,
    draft,
    new_template,
    submitted,
    three_stage_policy,
)
from tests.factories import MessageTemplateFactory, PurposeFactory, TemplateVersionFactory

pytestmark = pytest.mark.django_db

PAIRS = [(a, b) for a in VersionState for b in VersionState if a != b]


@pytest.mark.parametrize(("start", "target"), PAIRS)
def test_only_listed_transitions_happen(start, target, editor):
    version = TemplateVersionFactory(state=start)
    allowed = target in VERSION_TRANSITIONS[start]

    if allowed:
        template_version_transition(version=version, to=target, actor=editor, comment="why")
    else:
        with pytest.raises(TransitionRefused):
            template_version_transition(version=version, to=target, actor=editor)

    version.refresh_from_db()
    assert version.state == (target if allowed else start)
    assert version.state_changes.count() == (1 if allowed else 0)
    if allowed:
        change = version.state_changes.get()
        assert (change.from_state, change.to_state) == (start, target)
        assert (change.actor, change.actor_label, change.comment) == (editor, "editor", "why")


def test_unknown_target_state_is_refused(editor):
    version = TemplateVersionFactory()
    with pytest.raises(TransitionRefused):
        template_version_transition(version=version, to="published", actor=editor)
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    assert not VersionStateChange.objects.exists()


def test_transition_updates_the_callers_instance(editor):
    version = TemplateVersionFactory()
    template_version_transition(version=version, to=VersionState.IN_REVIEW, actor=editor)
    assert version.state == VersionState.IN_REVIEW
    assert version.submitted_at is not None
    assert version.stage_index == 0


@pytest.mark.parametrize(
    ("channel", "provider_status"),
    [("email", ProviderStatus.NOT_REQUIRED), ("whatsapp", ProviderStatus.NOT_SUBMITTED)],
)
def test_approval_stamps_time_and_provider_stage(channel, provider_status, editor):
    version = TemplateVersionFactory(state=VersionState.IN_REVIEW, template__channel=channel)
    template_version_transition(version=version, to=VersionState.APPROVED, actor=editor)
    version.refresh_from_db()
    assert version.approved_at is not None
    assert version.provider_status == provider_status


def test_nothing_else_assigns_the_version_state():
    """One choke point: only the transition service writes TemplateVersion.state."""
    root = Path(__file__).resolve().parents[2] / "approvals"
    pattern = re.compile(r"\.state\s*=[^=]")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "migrations" not in path.parts
        and path.name != "workflow.py"
        and pattern.search(path.read_text())
    ]
    assert offenders == []


# Templates


def test_template_create_sets_owner_to_actor(team, editor):
    template = new_template(team, editor)
    assert template.owner == editor
    assert template.history.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "Kino Programm"}, "name"),
        ({"name": ""}, "name"),
        ({"channel": "fax"}, "channel"),
        ({"category": "promo"}, "category"),
        ({"language": "xx"}, "language"),
        ({"category": "marketing"}, "purpose"),
    ],
)
def test_template_create_refuses_bad_input(team, editor, fields, field):
    arguments = {
        "name": "programme",
        "channel": "email",
        "category": "utility",
        "language": "de",
        **fields,
    }
    with pytest.raises(TemplateInvalid) as caught:
        template_create(team=team, actor=editor, **arguments)
    assert caught.value.field == field
    assert not MessageTemplate.objects.exists()


def test_marketing_template_needs_a_purpose_of_its_team_allowing_the_channel(
    team, other_team, editor
):
    foreign = PurposeFactory(team=other_team)
    sms_only = PurposeFactory(team=team, allowed_channels=["sms"])
    for purpose in (foreign, sms_only):
        with pytest.raises(TemplateInvalid) as caught:
            template_create(
                team=team,
                name="newsletter",
                channel="email",
                category="marketing",
                language="de",
                purpose=purpose,
                actor=editor,
            )
        assert caught.value.field == "purpose"
    assert not MessageTemplate.objects.exists()

    good = PurposeFactory(team=team, allowed_channels=["email"])
    template = template_create(
        team=team,
        name="newsletter",
        channel="email",
        category="marketing",
        language="de",
        purpose=good,
        actor=editor,
    )
    assert template.purpose == good


def test_template_name_is_unique_per_team_channel_and_language(team, editor):
    new_template(team, editor, language="de")
    name = MessageTemplate.objects.get().name
    with pytest.raises(TemplateInvalid):
        template_create(
            team=team, name=name, channel="email", category="utility", language="de", actor=editor
        )
    assert MessageTemplate.objects.count() == 1


def test_template_create_needs_role_and_team(team, outsider, reviewer_legal):
    for actor in (outsider, reviewer_legal):
        with pytest.raises(PermissionRefused):
            template_create(
                team=team,
                name="programme",
                channel="email",
                category="utility",
                language="de",
                actor=actor,
            )
    assert not MessageTemplate.objects.exists()


def test_template_owner_must_belong_to_the_team(team, editor, outsider):
    with pytest.raises(TemplateInvalid) as caught:
        new_template(team, editor, owner=outsider)
    assert caught.value.field == "owner"


def test_channel_is_fixed_once_a_version_was_submitted(team, editor):
    three_stage_policy(team)
    template = new_template(team, editor)
    template = template_update(template=template, actor=editor, channel="sms")
    assert template.channel == "sms"
    template = template_update(template=template, actor=editor, channel="email")

    submitted(team, editor, template=template)
    with pytest.raises(TemplateInvalid) as caught:
        template_update(template=template, actor=editor, channel="sms")
    assert caught.value.field == "channel"
    template.refresh_from_db()
    assert template.channel == "email"
    # The owner and the name may still change.
    assert template_update(template=template, actor=editor, is_active=False).is_active is False


def test_template_update_refuses_unknown_fields(team, editor):
    template = new_template(team, editor)
    with pytest.raises(TemplateInvalid):
        template_update(template=template, actor=editor, team=None)


# Versions


def test_version_create_numbers_and_derives_variables(team, editor):
    first = draft(team, editor)
    second = draft(team, editor, template=first.template, body="{{ first_name }} {{ last_name }}")
    assert (first.number, second.number) == (1, 2)
    assert first.variables == ["first_name"]
    assert second.variables == ["first_name", "last_name"]
    assert first.state == VersionState.DRAFT
    assert first.author == editor
    assert first.content_hash == content_hash(first)
    assert first.content_hash != second.content_hash


def test_version_create_keeps_declared_variables(team, editor):
    version = draft(team, editor, variables=["first_name", "contact.salutation"])
    assert version.variables == ["first_name", "contact.salutation"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"body": "   "}, "body"),
        ({"subject": "x" * 201}, "subject"),
        ({"buttons": "Yes"}, "buttons"),
        ({"buttons": ["Yes"]}, "buttons"),
        ({"variables": ["first name"]}, "variables"),
        ({"variables": ["a", "a"]}, "variables"),
        ({"variables": ["__class__.mro"]}, "variables"),
        ({"valid_from": dt.datetime(2030, 1, 1)}, "valid_from"),
        (
            {
                "valid_from": timezone.now() + dt.timedelta(days=2),
                "valid_until": timezone.now() + dt.timedelta(days=1),
            },
            "valid_until",
        ),
    ],
)
def test_version_create_refuses_bad_input(team, editor, fields, field):
    template = new_template(team, editor)
    with pytest.raises(TemplateInvalid) as caught:
        draft(team, editor, template=template, **fields)
    assert caught.value.field == field
    assert not TemplateVersion.objects.exists()


def test_version_create_needs_role_and_team(team, editor, outsider, reviewer_legal):
    template = new_template(team, editor)
    for actor in (outsider, reviewer_legal):
        with pytest.raises(PermissionRefused):
            template_version_create(template=template, actor=actor, body=BODY)
    assert not TemplateVersion.objects.exists()


def test_draft_edit_recomputes_hash_and_variables(team, editor):
    version = draft(team, editor)
    before = version.content_hash
    template_version_update(version=version, actor=editor, body="Guten Tag {{ last_name }}")
    version.refresh_from_db()
    assert version.variables == ["last_name"]
    assert version.content_hash != before
    assert version.content_hash == content_hash(version)


@pytest.mark.parametrize("reach", ["in_review", "approved"])
def test_submitted_and_approved_versions_are_immutable(
    reach, team, editor, reviewer_editorial, reviewer_legal, reviewer_medical
):
    three_stage_policy(team)
    if reach == "approved":
        version = approved(team, editor, [reviewer_editorial, reviewer_legal, reviewer_medical])
    else:
        version = submitted(team, editor)
    before = TemplateVersion.objects.values().get(pk=version.pk)

    with pytest.raises(VersionImmutable):
        template_version_update(version=version, actor=editor, body="Neu!")
    assert TemplateVersion.objects.values().get(pk=version.pk) == before

    # The model refuses as well, for any code path that skips the service.
    version.refresh_from_db()
    version.body = "Neu!"
    with pytest.raises(ValidationError):
        version.full_clean()
    with pytest.raises(VersionImmutable):
        version.save()
    version.valid_until = timezone.now() + dt.timedelta(days=999)
    with pytest.raises(VersionImmutable):
        version.save(update_fields=["valid_until"])
    assert TemplateVersion.objects.values().get(pk=version.pk) == before


def test_draft_passes_the_model_guard(team, editor):
    version = draft(team, editor)
    version.body = "Neu!"
    version.full_clean()


# Submission


def test_submit_moves_a_draft_into_the_first_stage(team, editor):
    three_stage_policy(team)
    version = draft(team, editor)
    template_version_submit(version=version, actor=editor)
    version.refresh_from_db()
    assert version.state == VersionState.IN_REVIEW
    assert version.stage_index == 0
    assert version.submitted_at is not None


def test_submit_without_a_policy_is_refused(team, editor):
    version = draft(team, editor)
    with pytest.raises(PolicyMissing):
        template_version_submit(version=version, actor=editor)
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    assert not version.state_changes.exists()


def test_submit_checks_the_channel_rules(team, editor):
    three_stage_policy(team)
    version = draft(team, editor, subject="")
    with pytest.raises(ChannelRulesViolated) as caught:
        template_version_submit(version=version, actor=editor)
    assert any(violation.field == "subject" for violation in caught.value.violations)
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT
    assert not version.state_changes.exists()


def test_submit_refuses_content_that_already_expired(team, editor):
    three_stage_policy(team)
    version = draft(team, editor, valid_until=timezone.now() - dt.timedelta(minutes=1))
    with pytest.raises(TemplateInvalid) as caught:
        template_version_submit(version=version, actor=editor)
    assert caught.value.field == "valid_until"
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT


def test_only_author_or_team_editor_submits(team, editor, make_user, outsider, marketing):
    three_stage_policy(team)
    version = draft(team, editor)
    for actor in (outsider, marketing):
        with pytest.raises(PermissionRefused):
            template_version_submit(version=version, actor=actor)
    version.refresh_from_db()
    assert version.state == VersionState.DRAFT

    colleague = make_user("editor2", "editor", team)
    template_version_submit(version=version, actor=colleague)
    version.refresh_from_db()
    assert version.state == VersionState.IN_REVIEW


def test_submit_twice_is_refused(team, editor):
    three_stage_policy(team)
    version = submitted(team, editor)
    with pytest.raises(TransitionRefused):
        template_version_submit(version=version, actor=editor)
    assert version.state_changes.count() == 1


def test_inactive_template_takes_no_new_versions(team, editor):
    template = MessageTemplateFactory(team=team, is_active=False)
    with pytest.raises(TemplateInvalid):
        template_version_create(template=template, actor=editor, body=BODY, subject="x")
    assert not TemplateVersion.objects.exists()


def test_retire_needs_role_and_team(
    team, editor, outsider, reviewer_editorial, reviewer_legal, reviewer_medical
):
    three_stage_policy(team)
    version = approved(team, editor, [reviewer_editorial, reviewer_legal, reviewer_medical])
    with pytest.raises(PermissionRefused):
        template_version_retire(version=version, actor=outsider)
    version.refresh_from_db()
    assert version.state == VersionState.APPROVED

    template_version_retire(version=version, actor=editor, comment="campaign over")
    version.refresh_from_db()
    assert version.state == VersionState.RETIRED
    assert version.state_changes.last().comment == "campaign over"


def test_malformed_placeholder_is_refused_at_create(team, editor):
    template = new_template(team, editor)
    with pytest.raises(RenderError) as caught:
        draft(team, editor, template=template, body="Hallo {{ first_name ")
    assert caught.value.field == "body"
    assert not TemplateVersion.objects.exists()
