"""The webhook inbox: verified provider requests waiting for, or done with, processing.

Read-only: rows are written by the webhook view and the processing task only. A row stuck in
"pending" is queued again by the sweep; one that failed has its body in quarantine.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from crm.admin_base import VisibleTeamFilter
from messaging.admin.messages import ReadOnlyScopedAdmin
from messaging.models import InboundWebhook


@admin.register(InboundWebhook)
class InboundWebhookAdmin(ReadOnlyScopedAdmin):
    team_field = "account__team"
    list_display = ("received_at", "account", "status", "attempts", "processed_at")
    list_filter = ("status", ("account__team", VisibleTeamFilter))
    list_select_related = ("account",)
    date_hierarchy = "received_at"

    def get_readonly_fields(self, request: HttpRequest, obj: InboundWebhook | None = None) -> list:
        return [field.name for field in self.model._meta.fields]
