"""Versions and their lifecycle.

`template_version_transition` is the only code that writes `TemplateVersion.state`: it locks
the row, checks VERSION_TRANSITIONS and writes the VersionStateChange in the same
transaction, then registers the on-commit side effects (reviewer notices, provider stage).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals import selectors
from approvals.errors import PolicyMissing, TemplateInvalid, TransitionRefused, VersionImmutable
from approvals.models import (
    VERSION_CONTENT_FIELDS,
    VERSION_TRANSITIONS,
    MessageTemplate,
    ProviderStatus,
    ReviewDecision,
    TemplateVersion,
    VersionState,
    VersionStateChange,
)
from approvals.services.common import actor_label, ensure_may, history_user
from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from crm.ledger import canonical_json, sha256_hex
from crm.models import Channel

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

# A declared variable: `first_name` or `contact.salutation` (no calls, no indexing, no
# leading underscore, so nothing private or magic can be named).
VARIABLE_RE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
TEXT_LIMITS: Final = {"subject": 200, "header": 200, "footer": 200}


def content_hash(version: TemplateVersion) -> str:
    """SHA-256 over the version's content; every review decision is bound to it."""
    return sha256_hex(canonical_json(version.content_payload()))


def _placeholders_of(version: TemplateVersion) -> list[str]:
    """The placeholders the version's texts use, in order of first use (RenderError names
    the field of a malformed one)."""
    from approvals.rendering import placeholders, text_parts

    found: list[str] = []
    for part, text in text_parts(version):
        for name in placeholders(text, field=part):
            if name not in found:
                found.append(name)
    return found


def _check_version_fields(version: TemplateVersion) -> None:
    for name in ("subject", "header", "body", "footer"):
        if not isinstance(getattr(version, name), str):
            raise TemplateInvalid(_("This must be text."), field=name)
    if not version.body.strip():
        raise TemplateInvalid(_("The body must not be empty."), field="body")
    for name, limit in TEXT_LIMITS.items():
        if len(getattr(version, name)) > limit:
            raise TemplateInvalid(
                _("At most %(n)s characters.") % {"n": limit},
                field=name,
            )
    buttons = version.buttons
    if not isinstance(buttons, list) or not all(isinstance(b, dict) for b in buttons):
        raise TemplateInvalid(
            _('Buttons must be a list of objects such as {"type": "quick_reply", "text": "Yes"}.'),
            field="buttons",
        )
    variables = version.variables
    if (
        not isinstance(variables, list)
        or not all(isinstance(v, str) and VARIABLE_RE.match(v) for v in variables)
        or len(set(variables)) != len(variables)
    ):
        raise TemplateInvalid(
            _("Variables must be distinct names such as “first_name” or “contact.salutation”."),
            field="variables",
        )
    for name in ("valid_from", "valid_until"):
        value = getattr(version, name)
        if value is not None and (not isinstance(value, dt.datetime) or timezone.is_naive(value)):
            raise TemplateInvalid(_("Give a date and time with its time zone."), field=name)
    if (
        version.valid_from is not None
        and version.valid_until is not None
        and version.valid_until <= version.valid_from
    ):
        raise TemplateInvalid(
            _("The end of the validity must lie after its start."), field="valid_until"
        )


def _prepare_content(version: TemplateVersion, *, derive_variables: bool) -> None:
    """Validate the content, derive the variables if asked, and seal it with its hash."""
    if version.buttons is None or isinstance(version.buttons, tuple):
        version.buttons = list(version.buttons or ())
    if derive_variables:
        version.variables = []
        _check_version_fields(version)
        version.variables = _placeholders_of(version)
    _check_version_fields(version)
    version.content_hash = content_hash(version)


@transaction.atomic
def template_version_create(
    *,
    template: MessageTemplate,
    actor: AbstractBaseUser | None,
    body: str,
    subject: str = "",
    header: str = "",
    footer: str = "",
    buttons: Iterable[dict[str, Any]] = (),
    variables: list[str] | None = None,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> TemplateVersion:
    """A new draft with the next number. Without `variables`, the placeholders used in the
    text are the variables the version declares."""
    ensure_may(actor, "approvals.add_templateversion", template.team_id)
    # Lock the template: two drafts created at once must not get the same number.
    template = MessageTemplate.objects.select_for_update().get(pk=template.pk)
    if not template.is_active:
        raise TemplateInvalid(_("This template is no longer active."), field="template")
    last = template.versions.order_by("-number").values_list("number", flat=True).first()
    version = TemplateVersion(
        template=template,
        number=(last or 0) + 1,
        subject=subject,
        header=header,
        body=body,
        footer=footer,
        buttons=buttons,
        variables=variables if variables is not None else [],
        valid_from=valid_from,
        valid_until=valid_until,
        author=actor,
    )
    _prepare_content(version, derive_variables=variables is None)
    history_user(version, actor)
    version.save()
    return version


@transaction.atomic
def template_version_update(
    *, version: TemplateVersion, actor: AbstractBaseUser | None, **fields: Any
) -> TemplateVersion:
    """Edit a draft and recompute its content hash. Anything else is immutable.

    Changed text without `variables` re-derives the variables from the placeholders.
    """
    unknown = set(fields) - set(VERSION_CONTENT_FIELDS)
    if unknown:
        raise TemplateInvalid(
            _("These version fields cannot be changed: %(f)s.") % {"f": ", ".join(sorted(unknown))}
        )
    ensure_may(actor, "approvals.change_templateversion", version.template.team_id)
    locked = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .select_related("template")
        .get(pk=version.pk)
    )
    if locked.state != VersionState.DRAFT:
        raise VersionImmutable(
            _("Only draft versions can be edited; create a new version instead.")
        )
    text_changed = bool({"subject", "header", "body", "footer", "buttons"} & set(fields))
    derive = fields.get("variables", ...) is None or ("variables" not in fields and text_changed)
    for name, value in fields.items():
        if name == "variables" and value is None:
            continue
        setattr(locked, name, value)
    _prepare_content(locked, derive_variables=derive)
    history_user(locked, actor)
    locked.save()
    return locked


def notify_reviewers_on_commit(version: TemplateVersion) -> None:
    from approvals.tasks import notify_reviewers as notify_reviewers_task

    version_id, stage_index = version.pk, version.stage_index
    transaction.on_commit(
        lambda: notify_reviewers_task.delay(version_id=version_id, stage_index=stage_index)
    )


def submit_to_provider_on_commit(version: TemplateVersion) -> None:
    from approvals.tasks import submit_to_provider as submit_to_provider_task

    version_id = version.pk
    transaction.on_commit(lambda: submit_to_provider_task.delay(version_id=version_id))


def notify_author_on_commit(decision: ReviewDecision) -> None:
    from approvals.tasks import notify_author as notify_author_task

    decision_id = decision.pk
    transaction.on_commit(lambda: notify_author_task.delay(decision_id=decision_id))


# Fields the transition writes besides `state`.
TRANSITION_FIELDS: Final = (
    "state",
    "stage_index",
    "submitted_at",
    "approved_at",
    "provider_status",
    "updated_at",
)


@transaction.atomic
def template_version_transition(
    *,
    version: TemplateVersion,
    to: str,
    actor: AbstractBaseUser | None,
    comment: str = "",
) -> TemplateVersion:
    """Move a version to `to`: the only code that writes TemplateVersion.state.

    Refuses any move VERSION_TRANSITIONS does not list. Callers decide *who* may; this
    decides *what* may. The state-change row is written in the same transaction.
    """
    # Lock first: two reviewers deciding at the same moment must not both move it.
    locked = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .select_related("template")
        .get(pk=version.pk)
    )
    if to not in VersionState.values or to not in VERSION_TRANSITIONS[locked.state]:
        labels = dict(VersionState.choices)
        raise TransitionRefused(
            _("A %(from)s version cannot become %(to)s.")
            % {"from": labels[locked.state], "to": labels.get(to, to)}
        )
    previous = locked.state
    now = timezone.now()
    locked.state = to
    if to == VersionState.IN_REVIEW:
        locked.submitted_at = now
        locked.stage_index = 0
    elif to == VersionState.DRAFT:
        locked.stage_index = 0
    elif to == VersionState.APPROVED:
        locked.approved_at = now
        needs_provider = locked.template.channel == Channel.WHATSAPP
        locked.provider_status = (
            ProviderStatus.NOT_SUBMITTED if needs_provider else ProviderStatus.NOT_REQUIRED
        )
    history_user(locked, actor, comment[:100])
    locked.save(update_fields=list(TRANSITION_FIELDS))
    VersionStateChange.objects.create(
        version=locked,
        from_state=previous,
        to_state=to,
        actor=actor,
        actor_label=actor_label(actor),
        comment=comment,
    )
    if to == VersionState.IN_REVIEW:
        notify_reviewers_on_commit(locked)
    elif to == VersionState.APPROVED and locked.provider_status == ProviderStatus.NOT_SUBMITTED:
        submit_to_provider_on_commit(locked)
    # The caller's instance follows, so it never shows a state the database does not have.
    for name in TRANSITION_FIELDS:
        setattr(version, name, getattr(locked, name))
    return locked


def _may_submit(actor: AbstractBaseUser, version: TemplateVersion) -> bool:
    team_id = version.template.team_id
    if crm_selectors.user_may_write(actor, "approvals.submit_templateversion", team_id):
        return True
    return actor.pk == version.author_id and team_id in crm_selectors.member_team_ids(actor)


@transaction.atomic
def template_version_submit(
    *, version: TemplateVersion, actor: AbstractBaseUser | None
) -> TemplateVersion:
    """Send a draft into review at the first stage of its team's policy.

    The author or an editor of the team may submit. The channel's rules must hold, the
    content must not have expired, and a policy with at least one stage must exist.
    """
    locked = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .select_related("template")
        .get(pk=version.pk)
    )
    if actor is not None and not _may_submit(actor, locked):
        raise PermissionRefused(_("You may not submit versions for this team."))
    if locked.state != VersionState.DRAFT:
        raise TransitionRefused(_("Only a draft can be submitted for review."))
    template = locked.template
    if not template.is_active:
        raise TemplateInvalid(_("This template is no longer active."), field="template")
    if locked.valid_until is not None and locked.valid_until <= timezone.now():
        raise TemplateInvalid(
            _("The validity of this content has already ended."), field="valid_until"
        )
    from approvals.channel_rules import validate_version

    validate_version(locked)
    if not selectors.policy_stages(team_id=template.team_id, category=template.category):
        raise PolicyMissing(
            _("No approval policy covers %(category)s templates of this team.")
            % {"category": template.get_category_display()}
        )
    return template_version_transition(version=version, to=VersionState.IN_REVIEW, actor=actor)


@transaction.atomic
def template_version_retire(
    *, version: TemplateVersion, actor: AbstractBaseUser | None, comment: str = ""
) -> TemplateVersion:
    """Take an approved version out of use (it can never be sent again)."""
    ensure_may(actor, "approvals.change_templateversion", version.template.team_id)
    return template_version_transition(
        version=version, to=VersionState.RETIRED, actor=actor, comment=comment
    )
