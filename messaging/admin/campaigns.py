"""Campaigns in admin: drafts are created and changed through the campaign services (the
templates inline is their input), and dry run, launch, pause, resume and cancel are actions
that call one service each. Recipients and state changes are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from approvals.models import VersionState
from crm import selectors as crm_selectors
from crm.admin_base import (
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
)
from crm.errors import DomainError
from messaging.models import (
    Campaign,
    CampaignRecipient,
    CampaignState,
    CampaignStateChange,
    CampaignTemplate,
)
from messaging.services import campaigns
from messaging.services.campaigns import NO_ADDRESS, NO_CONSENT, RESTRICTED, SUPPRESSED

CAMPAIGN_FIELDS = (
    "team",
    "name",
    "segment",
    "channel_mode",
    "scheduled_at",
    "throttle_per_second",
)
STATUS_FIELDS = (
    "purpose",
    "state",
    "progress_bar",
    "state_reason",
    "recipients_count",
    "sent_count",
    "refused_count",
    "failed_count",
    "launched_at",
    "finished_at",
    "next_batch_due_at",
    "created_by",
)
# How the dry run's buckets (campaigns.campaign_dry_run) read in the admin.
DRY_RUN_LABELS = {
    "total": _("contacts"),
    "eligible": _("eligible"),
    RESTRICTED: _("processing restricted"),
    NO_ADDRESS: _("no address on the channel"),
    SUPPRESSED: _("suppressed"),
    NO_CONSENT: _("no consent"),
}


class CampaignTemplateInline(admin.TabularInline):
    """One row per channel, in fallback order; the input of campaign_create/update."""

    model = CampaignTemplate
    fields = ("account", "template_version", "channel")
    readonly_fields = ("channel",)
    extra = 1
    ordering = ("position", "id")

    def _editable(self, obj: Campaign | None) -> bool:
        return obj is None or obj.state == CampaignState.DRAFT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(obj) and request.user.has_perm("messaging.change_campaign")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(obj) and request.user.has_perm("messaging.change_campaign")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        team_ids = crm_selectors.member_team_ids(request.user)
        if db_field.name == "account":
            kwargs["queryset"] = db_field.related_model.objects.filter(team_id__in=team_ids)
        elif db_field.name == "template_version":
            # Only approved wording is offered; the service still checks it can be sent now.
            kwargs["queryset"] = db_field.related_model.objects.filter(
                template__team_id__in=team_ids, state=VersionState.APPROVED
            ).select_related("template")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class CampaignStateChangeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CampaignStateChange
    fields = ("occurred_at", "from_state", "to_state", "actor_label", "reason")
    readonly_fields = fields
    extra = 0


@admin.register(Campaign)
class CampaignAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    # The progress bar sits beside the state, where it is in view without scrolling.
    list_display = (
        "name",
        "team",
        "state",
        "progress_bar",
        "channel_mode",
        "scheduled_at",
        "recipients_count",
        "sent_count",
        "refused_count",
        "failed_count",
    )
    list_filter = (("team", VisibleTeamFilter), "state", "channel_mode")
    list_select_related = ("team",)
    search_fields = ("name",)
    inlines = (CampaignTemplateInline, CampaignStateChangeInline)
    actions = ("dry_run", "launch", "pause", "resume", "cancel")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return super().get_queryset(request).select_related("team", "purpose")

    def get_fields(self, request: HttpRequest, obj: Campaign | None = None) -> tuple:
        return CAMPAIGN_FIELDS if obj is None else (*CAMPAIGN_FIELDS, *STATUS_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> tuple:
        if obj is None:
            return ()
        if obj.state != CampaignState.DRAFT:
            return (*CAMPAIGN_FIELDS, *STATUS_FIELDS)
        return ("team", *STATUS_FIELDS)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "segment":
            kwargs["queryset"] = db_field.related_model.objects.filter(
                team_id__in=crm_selectors.member_team_ids(request.user)
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("progress"))
    def progress_bar(self, obj: Campaign) -> str:
        if obj.state in (CampaignState.DRAFT, CampaignState.SCHEDULED):
            return "-"
        percent = round(obj.progress * 100)
        return format_html(
            '<progress value="{}" max="100" title="{} %">{} %</progress> {} / {}',
            percent,
            percent,
            percent,
            obj.processed_count,
            obj.recipients_count,
        )

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        # The campaign is written in save_related, where the templates inline is known.
        return None

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        rows = [
            row
            for formset in formsets
            if formset.model is CampaignTemplate
            for row in formset.cleaned_data
            if row and not row.get("DELETE") and row.get("account") and row.get("template_version")
        ]
        choices = [
            campaigns.TemplateChoice(
                account=row["account"], template_version=row["template_version"]
            )
            for row in rows
        ]
        data = {
            name: form.cleaned_data.get(name)
            for name in CAMPAIGN_FIELDS
            if name != "team" and name in form.cleaned_data
        }
        if change:
            saved = campaigns.campaign_update(
                campaign=form.instance, actor=request.user, templates=choices, **data
            )
        else:
            saved = campaigns.campaign_create(
                team=form.cleaned_data["team"], actor=request.user, templates=choices, **data
            )
        adopt(form.instance, saved)
        for formset in formsets:
            # The service wrote the templates; the admin's change message reads these.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def _each(self, request: HttpRequest, queryset: QuerySet[Campaign], service: Any) -> None:
        done = 0
        for campaign in queryset:
            try:
                service(campaign=campaign, actor=request.user)
            except DomainError as error:
                messages.error(request, f"{campaign}: {error.message}")
            else:
                done += 1
        if done:
            messages.success(
                request,
                ngettext("%(count)d campaign updated.", "%(count)d campaigns updated.", done)
                % {"count": done},
            )

    @admin.action(description=_("Dry run: count recipients and refusals"), permissions=["change"])
    def dry_run(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            counts = campaigns.campaign_dry_run(campaign)
            summary = ", ".join(
                f"{DRY_RUN_LABELS.get(key, key)}: {value}" for key, value in counts.items()
            )
            messages.info(
                request,
                _("Dry run of %(campaign)s: %(counts)s.")
                % {"campaign": campaign, "counts": summary},
            )

    @admin.action(description=_("Launch"), permissions=["change"])
    def launch(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._each(request, queryset, campaigns.campaign_launch)

    @admin.action(description=_("Pause after the current batch"), permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._each(request, queryset, campaigns.campaign_pause)

    @admin.action(description=_("Resume"), permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._each(request, queryset, campaigns.campaign_resume)

    @admin.action(description=_("Cancel"), permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._each(request, queryset, campaigns.campaign_cancel)


@admin.register(CampaignRecipient)
class CampaignRecipientAdmin(ReadOnlyAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Per-recipient outcome: sent (with its message), refused with the gate's reason, failed."""

    team_field = "campaign__team"
    list_display = ("campaign", "contact", "channel", "status", "reason", "processed_at")
    list_filter = ("status", "channel", "reason")
    list_select_related = ("campaign", "contact")
    search_fields = ("campaign__name",)
    raw_id_fields = ("campaign", "contact", "account", "message")
