"""Automation rules in admin: created and changed through the automation services, which check
keywords (no consent words, no clash within the team), the account and the reply template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from approvals.models import MessageTemplate
from crm import selectors as crm_selectors
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamOwnedFormMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
)
from messaging import selectors
from messaging.models import AutomationRule, ChannelAccount
from messaging.services import automation

if TYPE_CHECKING:
    from django.db.models import Field

RULE_FIELDS = ("account", "name", "keywords", "action", "template", "priority", "is_active")


class AutomationRuleForm(TeamOwnedFormMixin, forms.ModelForm):
    keywords = forms.CharField(
        required=False,
        label=_("keywords"),
        help_text=_("Comma-separated, e.g. FILM, KINO. Empty for the default reply."),
    )

    class Meta:
        model = AutomationRule
        fields = ["team", *RULE_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["keywords"] = ", ".join(self.instance.keywords or [])

    def clean_keywords(self) -> list[str]:
        raw = self.cleaned_data.get("keywords") or ""
        return [word.strip() for word in raw.split(",") if word.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        team_id = self.team_id()
        for name in ("account", "template"):
            chosen = cleaned.get(name)
            if chosen is not None and team_id is not None and chosen.team_id != team_id:
                self.add_error(name, _("Choose one of the rule's team."))
        return cleaned


@admin.register(AutomationRule)
class AutomationRuleAdmin(
    ScopedHistoryMixin, ServiceAdminMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    form = AutomationRuleForm
    list_display = ("name", "team", "account", "keyword_list", "action", "priority", "is_active")
    list_filter = (("team", VisibleTeamFilter), "action", "is_active")
    list_select_related = ("team", "account")
    search_fields = ("name",)
    ordering = ("team", "priority", "id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AutomationRule]:
        return selectors.automation_rules_visible_to(request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: AutomationRule | None = None) -> tuple:
        return ("team",) if obj is not None else ()

    def has_delete_permission(
        self, request: HttpRequest, obj: AutomationRule | None = None
    ) -> bool:
        # Switch a rule off instead: its replies in past conversations name it as origin.
        return False

    def formfield_for_foreignkey(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        member_teams = crm_selectors.member_team_ids(request.user)
        if db_field.name == "account":
            kwargs["queryset"] = ChannelAccount.objects.filter(
                team_id__in=member_teams
            ).select_related("team")
        if db_field.name == "template":
            kwargs["queryset"] = MessageTemplate.objects.filter(
                team_id__in=member_teams, is_active=True
            ).select_related("team")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("keywords"))
    def keyword_list(self, rule: AutomationRule) -> str:
        return ", ".join(rule.keywords or [])

    def save_model(
        self, request: HttpRequest, obj: AutomationRule, form: AutomationRuleForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            changed = {name: cleaned[name] for name in form.changed_data if name in RULE_FIELDS}
            if changed:
                adopt(
                    obj,
                    automation.automation_rule_update(rule=obj, actor=request.user, **changed),
                )
            return
        rule = automation.automation_rule_create(
            team=cleaned["team"],
            actor=request.user,
            **{name: cleaned[name] for name in RULE_FIELDS if name in cleaned},
        )
        adopt(obj, rule)
