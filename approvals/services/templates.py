"""Message templates: what may be said, per team, channel and language."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _

from approvals.errors import TemplateInvalid
from approvals.models import MessageTemplate, TemplateCategory, VersionState
from approvals.services.common import ensure_may, history_user
from crm import selectors as crm_selectors
from crm.models import Channel, Language, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from consent.models import Purpose

# WhatsApp's rule for template names, applied on every channel so names travel.
TEMPLATE_NAME_RE: Final = re.compile(r"^[a-z0-9_]+$")
TEMPLATE_UPDATE_FIELDS: Final = frozenset(
    {"name", "channel", "category", "language", "purpose", "owner", "is_active"}
)
# Changing these would change which rules the approved wording was checked against.
TEMPLATE_FIXED_AFTER_SUBMIT: Final = frozenset({"channel", "category", "language"})


def _check_template_fields(
    *,
    team_id: int,
    name: str,
    channel: str,
    category: str,
    language: str,
    purpose: Purpose | None,
) -> None:
    if not TEMPLATE_NAME_RE.match(name or "") or len(name) > 120:
        raise TemplateInvalid(
            _("Use 1 to 120 lower-case letters, digits and underscores for the name."),
            field="name",
        )
    if channel not in Channel.values:
        raise TemplateInvalid(_("Unknown channel “%(v)s”.") % {"v": channel}, field="channel")
    if category not in TemplateCategory.values:
        raise TemplateInvalid(_("Unknown category “%(v)s”.") % {"v": category}, field="category")
    if language not in Language.values:
        raise TemplateInvalid(_("Unknown language “%(v)s”.") % {"v": language}, field="language")
    if purpose is None:
        if category == TemplateCategory.MARKETING:
            raise TemplateInvalid(
                _("A marketing template needs the purpose whose consent it relies on."),
                field="purpose",
            )
        return
    if purpose.team_id != team_id:
        raise TemplateInvalid(_("The purpose belongs to another team."), field="purpose")
    if channel not in (purpose.allowed_channels or []):
        raise TemplateInvalid(
            _("“%(purpose)s” does not allow the channel %(channel)s.")
            % {"purpose": purpose.name, "channel": channel},
            field="purpose",
        )
    if not purpose.is_active:
        raise TemplateInvalid(_("This purpose is no longer active."), field="purpose")


def _check_owner(owner: AbstractBaseUser | None, team_id: int) -> None:
    if owner is not None and team_id not in crm_selectors.member_team_ids(owner):
        raise TemplateInvalid(_("The owner must be a member of the team."), field="owner")


def _save_template(template: MessageTemplate) -> None:
    # The unique constraint decides races between two creators of the same name.
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError as exc:
        raise TemplateInvalid(
            _("This team already has a %(channel)s template “%(name)s” in this language.")
            % {"channel": template.channel, "name": template.name},
            field="name",
        ) from exc


def _name_taken(template: MessageTemplate) -> bool:
    return (
        MessageTemplate.objects.filter(
            team_id=template.team_id,
            channel=template.channel,
            name=template.name,
            language=template.language,
        )
        .exclude(pk=template.pk)
        .exists()
    )


@transaction.atomic
def template_create(
    *,
    team: Team,
    name: str,
    channel: str,
    category: str,
    language: str,
    actor: AbstractBaseUser | None,
    purpose: Purpose | None = None,
    owner: AbstractBaseUser | None = None,
) -> MessageTemplate:
    """Create a template. Marketing templates name a purpose of the same team that allows the
    channel; the owner (default: the actor) is told before approved content expires."""
    ensure_may(actor, "approvals.add_messagetemplate", team)
    name = (name or "").strip()
    _check_template_fields(
        team_id=team.pk,
        name=name,
        channel=channel,
        category=category,
        language=language,
        purpose=purpose,
    )
    owner = owner if owner is not None else actor
    _check_owner(owner, team.pk)
    template = MessageTemplate(
        team=team,
        name=name,
        channel=channel,
        category=category,
        language=language,
        purpose=purpose,
        owner=owner,
    )
    if _name_taken(template):
        raise TemplateInvalid(
            _("This team already has a %(channel)s template “%(name)s” in this language.")
            % {"channel": channel, "name": name},
            field="name",
        )
    history_user(template, actor)
    _save_template(template)
    return template


@transaction.atomic
def template_update(
    *, template: MessageTemplate, actor: AbstractBaseUser | None, **fields: Any
) -> MessageTemplate:
    """Change a template's name, purpose, owner or activity. Channel, category and language
    are fixed once a version was submitted: approved wording was checked against them."""
    unknown = set(fields) - TEMPLATE_UPDATE_FIELDS
    if unknown:
        raise TemplateInvalid(
            _("These template fields cannot be changed: %(f)s.") % {"f": ", ".join(sorted(unknown))}
        )
    ensure_may(actor, "approvals.change_messagetemplate", template.team_id)
    locked = MessageTemplate.objects.select_for_update().get(pk=template.pk)
    changing_fixed = {
        name
        for name in TEMPLATE_FIXED_AFTER_SUBMIT & set(fields)
        if fields[name] != getattr(locked, name)
    }
    if changing_fixed and locked.versions.exclude(state=VersionState.DRAFT).exists():
        raise TemplateInvalid(
            _("Channel, category and language are fixed once a version was submitted."),
            field=sorted(changing_fixed)[0],
        )
    if "name" in fields:
        fields["name"] = (fields["name"] or "").strip()
    for name, value in fields.items():
        setattr(locked, name, value)
    _check_template_fields(
        team_id=locked.team_id,
        name=locked.name,
        channel=locked.channel,
        category=locked.category,
        language=locked.language,
        purpose=locked.purpose,
    )
    if "owner" in fields:
        _check_owner(locked.owner, locked.team_id)
    if _name_taken(locked):
        raise TemplateInvalid(
            _("This team already has a %(channel)s template “%(name)s” in this language.")
            % {"channel": locked.channel, "name": locked.name},
            field="name",
        )
    history_user(locked, actor)
    _save_template(locked)
    return locked
