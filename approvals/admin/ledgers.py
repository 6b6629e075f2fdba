"""The review ledger and the state-change trail in admin: read-only for everyone."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from approvals import selectors
from approvals.models import ReviewDecision, VersionStateChange
from crm.admin_base import (
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
)


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(
    ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin
):
    """Append-only and hash-chained per version: decisions are made on the review page."""

    team_field = "version__template__team"
    list_display = (
        "decided_at",
        "version",
        "stage_name",
        "reviewer_label",
        "decision",
        "excerpt",
        "short_hash",
    )
    list_filter = ("decision", "stage_name", ("version__template__team", VisibleTeamFilter))
    search_fields = ("comment", "reviewer_label", "version__template__name")
    date_hierarchy = "decided_at"
    fields = (
        "version",
        "sequence",
        "stage_name",
        "reviewer_label",
        "decision",
        "comment",
        "content_hash",
        "decided_at",
        "previous_hash",
        "hash",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReviewDecision]:
        return selectors.decisions_visible_to(request.user)

    @admin.display(description=_("comment"))
    def excerpt(self, decision: ReviewDecision) -> str:
        return Truncator(decision.comment).chars(60)

    @admin.display(description=_("content hash reviewed"))
    def short_hash(self, decision: ReviewDecision) -> str:
        return decision.content_hash[:12]


@admin.register(VersionStateChange)
class VersionStateChangeAdmin(
    ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin
):
    """Every state change of every version, written with it by the transition service."""

    team_field = "version__template__team"
    list_display = ("changed_at", "version", "from_state", "to_state", "actor_label", "excerpt")
    list_filter = ("to_state", ("version__template__team", VisibleTeamFilter))
    search_fields = ("comment", "actor_label", "version__template__name")
    date_hierarchy = "changed_at"
    fields = ("version", "from_state", "to_state", "actor_label", "comment", "changed_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[VersionStateChange]:
        return selectors.state_changes_visible_to(request.user)

    @admin.display(description=_("comment"))
    def excerpt(self, change: VersionStateChange) -> str:
        return Truncator(change.comment).chars(60)
