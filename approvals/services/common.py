"""Small helpers shared by the approvals services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from crm.models import Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def ensure_may(actor: AbstractBaseUser | None, perm: str, team: Team | int) -> None:
    """The role (model permission) plus membership of the owning team; None is the system."""
    if actor is not None and not crm_selectors.user_may_write(actor, perm, team):
        raise PermissionRefused(_("You may not do this for this team."))


def actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else ""


def history_user(instance: Any, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """Tell django-simple-history who made the next save and why (at most 100 characters)."""
    if actor is not None:
        instance._history_user = actor
    if reason:
        instance._change_reason = reason[:100]
