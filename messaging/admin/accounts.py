"""Channel accounts (senders) and agents' presence in admin.

A channel account never shows a secret: it names the environment prefix its secrets are read
from, and the page says which variables the provider expects and whether each is set (yes/no,
never the value). Presence is set by each agent for themselves.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

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
from messaging.errors import ChannelAccountInvalid
from messaging.models import PROVIDER_CREDENTIALS, AgentPresence, ChannelAccount
from messaging.services import account_fields_validate, channel_account_create
from messaging.services import conversations as handoff

if TYPE_CHECKING:
    from django.forms import ModelForm

ACCOUNT_FIELDS = (
    "name",
    "slug",
    "channel",
    "provider",
    "address",
    "external_id",
    "credentials_env",
    "quiet_hours_start",
    "quiet_hours_end",
    "first_response_minutes",
    "messages_per_second",
    "is_active",
)


def expected_variables(account: ChannelAccount) -> list[tuple[str, bool]]:
    """(environment variable, whether it is set) for each secret the provider reads."""
    prefix = account.credentials_env
    if not prefix:
        return []
    names = PROVIDER_CREDENTIALS.get(account.provider, ())
    return [
        (f"{prefix}_{name.upper()}", bool(os.environ.get(f"{prefix}_{name.upper()}")))
        for name in names
    ]


class ChannelAccountForm(TeamOwnedFormMixin, forms.ModelForm):
    """Checks the provider against the channel with the same function the service uses."""

    class Meta:
        model = ChannelAccount
        fields = ["team", *ACCOUNT_FIELDS]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        provider, channel = cleaned.get("provider"), cleaned.get("channel")
        if provider and channel:
            try:
                account_fields_validate(
                    provider=provider,
                    channel=channel,
                    credentials_env=cleaned.get("credentials_env") or "",
                )
            except ChannelAccountInvalid as error:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        start, end = cleaned.get("quiet_hours_start"), cleaned.get("quiet_hours_end")
        if (start is None) != (end is None):
            self.add_error("quiet_hours_end", _("Give both the start and the end, or neither."))
        return cleaned


@admin.register(ChannelAccount)
class ChannelAccountAdmin(
    ScopedHistoryMixin, ServiceAdminMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    """Senders are switched off (active), never deleted: messages point at them for good."""

    form = ChannelAccountForm
    list_display = ("name", "team", "channel", "provider", "address", "is_active", "secrets_set")
    list_filter = (("team", VisibleTeamFilter), "channel", "provider", "is_active")
    list_select_related = ("team",)
    search_fields = ("name", "slug", "address", "external_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChannelAccount]:
        return selectors.channel_accounts_visible_to(request.user).select_related("team")

    def get_fieldsets(self, request: HttpRequest, obj: ChannelAccount | None = None) -> list:
        fieldsets = [
            (None, {"fields": ["team", "name", "slug", "is_active"]}),
            (
                _("Provider"),
                {
                    "fields": [
                        ("channel", "provider"),
                        "address",
                        "external_id",
                        "credentials_env",
                    ]
                },
            ),
            (
                _("Sending rules"),
                {
                    "fields": [
                        ("quiet_hours_start", "quiet_hours_end"),
                        "first_response_minutes",
                        "messages_per_second",
                    ]
                },
            ),
        ]
        if obj is not None:
            fieldsets[1][1]["fields"].append("credentials_status")
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ChannelAccount | None = None) -> tuple:
        # The team owns the account's conversations and messages: it never changes.
        return ("team", "credentials_status") if obj is not None else ()

    def has_delete_permission(
        self, request: HttpRequest, obj: ChannelAccount | None = None
    ) -> bool:
        return False

    @admin.display(description=_("secrets set"), boolean=True)
    def secrets_set(self, account: ChannelAccount) -> bool | None:
        variables = expected_variables(account)
        if not variables:
            return None
        return all(is_set for _name, is_set in variables)

    @admin.display(description=_("expected environment variables"))
    def credentials_status(self, account: ChannelAccount) -> str:
        variables = expected_variables(account)
        if not variables:
            if PROVIDER_CREDENTIALS.get(account.provider):
                return gettext("Set a credentials environment prefix to read the secrets.")
            return gettext("This provider needs no secrets.")
        yes, no = gettext("set"), gettext("not set")
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><code>{}</code>: {}</li>",
                ((name, yes if is_set else no) for name, is_set in variables),
            ),
        )

    def save_model(
        self, request: HttpRequest, obj: ChannelAccount, form: ModelForm, change: bool
    ) -> None:
        if change:
            # The form checked provider and channel with account_fields_validate; the team is
            # read-only, so no other rule applies to an edit.
            super().save_model(request, obj, form, change)
            return
        cleaned = form.cleaned_data
        account = channel_account_create(
            team=cleaned["team"],
            actor=request.user,
            **{name: cleaned[name] for name in ACCOUNT_FIELDS if name in cleaned},
        )
        adopt(obj, account)


class AgentPresenceForm(forms.ModelForm):
    class Meta:
        model = AgentPresence
        fields = ["status", "capacity"]


@admin.register(AgentPresence)
class AgentPresenceAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """Agents set their own presence; who reads every team (auditors) sees everyone's."""

    form = AgentPresenceForm
    list_display = ("user", "status", "capacity", "last_assigned_at", "updated_at")
    list_filter = ("status",)
    list_select_related = ("user",)
    search_fields = ("user__username",)
    readonly_fields = ("user", "last_assigned_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentPresence]:
        queryset = super().get_queryset(request)
        if crm_selectors.user_sees_all_teams(request.user):
            return queryset
        return queryset.filter(user_id=request.user.pk)

    def get_fields(self, request: HttpRequest, obj: AgentPresence | None = None) -> list[str]:
        if obj is None:
            return ["status", "capacity"]
        return ["user", "status", "capacity", "last_assigned_at", "updated_at"]

    def _own(self, request: HttpRequest, obj: AgentPresence | None) -> bool:
        return obj is None or obj.user_id == request.user.pk

    def has_change_permission(self, request: HttpRequest, obj: AgentPresence | None = None) -> bool:
        return request.user.has_perm("messaging.change_agentpresence") and self._own(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The first time an agent says they are available: their own row, created by the service.
        has_row = AgentPresence.objects.filter(user_id=request.user.pk).exists()
        return request.user.has_perm("messaging.change_agentpresence") and not has_row

    def has_delete_permission(self, request: HttpRequest, obj: AgentPresence | None = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: AgentPresence, form: ModelForm, change: bool
    ) -> None:
        presence = handoff.agent_presence_set(
            user=obj.user if change else request.user,
            status=form.cleaned_data["status"],
            capacity=form.cleaned_data["capacity"],
            actor=request.user,
        )
        adopt(obj, presence)
