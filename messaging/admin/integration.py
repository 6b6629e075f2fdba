"""Outbound event webhooks in admin: subscriptions written through the events services (URL
checked for SSRF, secret shown once after creating), their deliveries read-only inline, and
re-enabling a subscription that was disabled after repeated failure."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from crm.admin_base import (
    ReadOnlyAdminMixin,
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
    report_domain_error,
)
from crm.errors import DomainError
from messaging.models import EventType, WebhookDelivery, WebhookSubscription
from messaging.services import events

SUBSCRIPTION_FIELDS = ("url", "event_types", "description")


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=500, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        label=_("event types"), choices=EventType.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookSubscription
        fields = ["team", *SUBSCRIPTION_FIELDS]


class WebhookDeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookDelivery
    fields = (
        "created_at",
        "event_type",
        "event_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "delivered_at",
    )
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    extra = 0
    max_num = 0
    show_change_link = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("messaging.view_webhookdelivery")


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(
    ScopedHistoryMixin, ServiceAdminMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    form = WebhookSubscriptionForm
    inlines = (WebhookDeliveryInline,)
    list_display = ("url", "team", "event_list", "is_active", "failure_count", "disabled_at")
    list_filter = (("team", VisibleTeamFilter), "is_active")
    list_select_related = ("team",)
    search_fields = ("url", "description")
    readonly_fields = ("owner", "is_active", "failure_count", "disabled_at", "disabled_reason")
    actions = ("enable_selected",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookSubscription]:
        return super().get_queryset(request).select_related("team", "owner")

    def get_readonly_fields(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> tuple:
        return (*self.readonly_fields, "team") if obj is not None else ()

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> bool:
        # Its deliveries are the record of what was sent to whom: keep them.
        return False

    @admin.display(description=_("event types"))
    def event_list(self, subscription: WebhookSubscription) -> str:
        return ", ".join(subscription.event_types or [])

    def save_model(
        self,
        request: HttpRequest,
        obj: WebhookSubscription,
        form: WebhookSubscriptionForm,
        change: bool,
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            changed = {name: cleaned[name] for name in form.changed_data if name in cleaned}
            changed.pop("team", None)
            if changed:
                adopt(
                    obj,
                    events.webhook_subscription_update(
                        subscription=obj, actor=request.user, **changed
                    ),
                )
            return
        subscription = events.webhook_subscription_create(
            team=cleaned["team"],
            url=cleaned["url"],
            event_types=cleaned["event_types"],
            description=cleaned.get("description", ""),
            owner=request.user,
            actor=request.user,
        )
        adopt(obj, subscription)
        messages.warning(
            request,
            gettext("Signing secret (store it now, it is not shown again): %(secret)s")
            % {"secret": subscription.secret},
        )

    @admin.action(description=_("Re-enable the selected subscriptions"), permissions=["change"])
    def enable_selected(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> None:
        enabled = 0
        for subscription in queryset.filter(is_active=False):
            try:
                events.webhook_subscription_enable(subscription=subscription, actor=request.user)
            except DomainError as error:
                report_domain_error(request, error)
                continue
            enabled += 1
        self.message_user(
            request, gettext("%(count)d subscriptions re-enabled.") % {"count": enabled}
        )
