"""Approval policies with their ordered stages.

A policy is created with all its stages at once (approvals.services.policy_create) and is
read-only afterwards: versions in review count their progress by stage position, so stages
must not move under them.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from approvals import selectors, services
from approvals.models import ApprovalPolicy, ApprovalStage
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
)


class ApprovalStageInline(admin.TabularInline):
    """Stages in review order; editable only while the policy is being created."""

    model = ApprovalStage
    fields = ("position", "name", "group", "approvals_required")
    # Stages are decided in the order of the rows; position is numbered from it.
    readonly_fields = ("position",)
    extra = 3
    min_num = 1
    can_delete = False

    def get_formset(
        self, request: HttpRequest, obj: ApprovalPolicy | None = None, **kwargs: Any
    ) -> Any:
        return super().get_formset(request, obj, validate_min=True, **kwargs)

    def _may_create(self, request: HttpRequest, obj: ApprovalPolicy | None) -> bool:
        return obj is None and request.user.has_perm("approvals.add_approvalpolicy")

    def has_add_permission(self, request: HttpRequest, obj: ApprovalPolicy | None = None) -> bool:
        return self._may_create(request, obj)

    def has_change_permission(
        self, request: HttpRequest, obj: ApprovalPolicy | None = None
    ) -> bool:
        return self._may_create(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: ApprovalPolicy | None = None
    ) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: ApprovalPolicy | None = None) -> bool:
        return request.user.has_perm("approvals.view_approvalpolicy")


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(
    ServiceAdminMixin, ScopedHistoryMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    list_display = ("name", "team", "category", "stage_list")
    list_filter = (("team", VisibleTeamFilter), "category")
    search_fields = ("name",)
    fields = ("team", "category", "name")
    inlines = (ApprovalStageInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApprovalPolicy]:
        return selectors.policies_visible_to(request.user)

    def has_change_permission(
        self, request: HttpRequest, obj: ApprovalPolicy | None = None
    ) -> bool:
        # No edits: a new arrangement of stages is a new policy.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: ApprovalPolicy | None = None
    ) -> bool:
        return False

    @admin.display(description=_("stages"))
    def stage_list(self, policy: ApprovalPolicy) -> str:
        return " → ".join(stage.name for stage in policy.stages.all())

    def save_model(
        self, request: HttpRequest, obj: ApprovalPolicy, form: forms.ModelForm, change: bool
    ) -> None:
        # The policy is created with its stages in save_related, once the inline is known.
        return

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: list, change: bool
    ) -> None:
        [formset] = formsets
        rows = [
            stage_form.cleaned_data
            for stage_form in formset.forms
            if stage_form.has_changed() and stage_form.cleaned_data
        ]
        cleaned = form.cleaned_data
        policy = services.policy_create(
            team=cleaned["team"],
            category=cleaned["category"],
            name=cleaned["name"],
            stages=[(row["name"], row["group"], row["approvals_required"]) for row in rows],
            actor=request.user,
        )
        adopt(form.instance, policy)
        # construct_change_message reads these lists.
        formset.new_objects = list(policy.stages.all())
        formset.changed_objects, formset.deleted_objects = [], []

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"name": _("Review"), **super().get_changeform_initial_data(request)}
