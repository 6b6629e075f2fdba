"""Admin of the crm app: teams, contacts with their addresses, tags, segments and profiles.

Thin by design: querysets come from `crm.selectors` (so other teams' rows are 404), forms only
check input early so errors land on the right field, and every write goes through
`crm.services`, which checks role and team again. Shared mixins live in crm.admin_base, import
screens in crm.admin_imports; importing this package registers them all.
"""

from __future__ import annotations

# Import screens live in their own module; importing it registers them.
from crm import admin_imports  # noqa: F401

# isort: split
from crm.admin.contacts import (
    AddTagForm,
    AssignTeamForm,
    ContactAdmin,
    ContactForm,
    ContactPointAdmin,
    ContactPointForm,
    ContactPointFormSet,
    ContactPointInline,
    HasChannelFilter,
    TagAdmin,
    TagChoiceField,
    TagForm,
    VisibleTagFilter,
)
from crm.admin.profiles import UserProfileAdmin, UserProfileForm
from crm.admin.segments import SegmentAdmin, SegmentForm
from crm.admin.teams import TeamAdmin, TeamForm
from crm.admin_base import ScopedHistoryMixin, ServiceAdminMixin, VisibleTeamFilter

__all__ = [
    "AddTagForm",
    "AssignTeamForm",
    "ContactAdmin",
    "ContactForm",
    "ContactPointAdmin",
    "ContactPointForm",
    "ContactPointFormSet",
    "ContactPointInline",
    "HasChannelFilter",
    "ScopedHistoryMixin",
    "SegmentAdmin",
    "SegmentForm",
    "ServiceAdminMixin",
    "TagAdmin",
    "TagChoiceField",
    "TagForm",
    "TeamAdmin",
    "TeamForm",
    "UserProfileAdmin",
    "UserProfileForm",
    "VisibleTagFilter",
    "VisibleTeamFilter",
]
