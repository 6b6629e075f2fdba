"""Messages, the conversation ledger, receipts, the outbox and quarantined webhook payloads:
read-only for everyone. Messages are written by the send gate and the webhooks, events by the
services that change a conversation, receipts by providers, the outbox by delivery.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from crm.admin_base import (
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
)
from messaging import selectors
from messaging.models import (
    ConversationEvent,
    Message,
    OutboxEntry,
    QuarantinedPayload,
    StatusReceipt,
)

EXCERPT_CHARS = 60


def conversation_link(conversation_id: int, label: object) -> str:
    url = reverse("admin:messaging_conversation_change", args=[conversation_id])
    return format_html('<a href="{}">{}</a>', url, label)


class ReadOnlyScopedAdmin(
    ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin
):
    """Base of the read-only admins below: scoped to visible teams, never changed here."""

    actions = None


@admin.register(Message)
class MessageAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "created_at",
        "conversation_column",
        "direction",
        "kind",
        "status",
        "sender_kind",
        "excerpt",
    )
    list_filter = (
        "direction",
        "status",
        "channel",
        "kind",
        "sender_kind",
        ("team", VisibleTeamFilter),
    )
    list_select_related = ("contact",)
    search_fields = ("provider_message_id", "origin")
    date_hierarchy = "created_at"
    fields = (
        "conversation",
        "direction",
        "kind",
        "channel",
        "template_version",
        "purpose",
        "variables",
        "subject",
        "body",
        "body_hash",
        "sender_kind",
        "sender",
        "origin",
        "status",
        "gate_decision",
        "provider_message_id",
        "due_at",
        "created_at",
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
        "error_code",
        "error_detail",
        "erased_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return selectors.messages_visible_to(request.user)

    @admin.display(description=_("conversation"), ordering="conversation")
    def conversation_column(self, message: Message) -> str:
        return conversation_link(message.conversation_id, message.contact)

    @admin.display(description=_("text"))
    def excerpt(self, message: Message) -> str:
        return Truncator(message.subject or message.body).chars(EXCERPT_CHARS)


@admin.register(ConversationEvent)
class ConversationEventAdmin(ReadOnlyScopedAdmin):
    """The hash-chained ledger of every conversation: what happened, in order."""

    team_field = "conversation__team"
    list_display = (
        "recorded_at",
        "conversation_column",
        "sequence",
        "kind",
        "actor_label",
        "short_hash",
    )
    list_filter = ("kind", ("conversation__team", VisibleTeamFilter))
    list_select_related = ("conversation__contact",)
    search_fields = ("actor_label", "hash")
    date_hierarchy = "recorded_at"
    fields = (
        "conversation",
        "sequence",
        "kind",
        "message",
        "actor_label",
        "data",
        "occurred_at",
        "recorded_at",
        "previous_hash",
        "hash",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversationEvent]:
        return selectors.conversation_events_visible_to(request.user)

    @admin.display(description=_("conversation"), ordering="conversation")
    def conversation_column(self, event: ConversationEvent) -> str:
        return conversation_link(event.conversation_id, event.conversation.contact)

    @admin.display(description=_("hash"))
    def short_hash(self, event: ConversationEvent) -> str:
        return event.hash[:12]


@admin.register(StatusReceipt)
class StatusReceiptAdmin(ReadOnlyScopedAdmin):
    """Every delivery receipt as the provider sent it, matched to its message or not."""

    team_field = "account__team"
    list_display = (
        "received_at",
        "account",
        "provider_message_id",
        "provider_status",
        "error_code",
        "message",
        "applied",
    )
    list_filter = ("provider_status", "applied", ("account__team", VisibleTeamFilter))
    list_select_related = ("account", "message")
    search_fields = ("provider_message_id", "error_code")
    date_hierarchy = "received_at"

    def get_readonly_fields(self, request: HttpRequest, obj: StatusReceipt | None = None) -> list:
        return [field.name for field in self.model._meta.fields]


@admin.register(OutboxEntry)
class OutboxEntryAdmin(ReadOnlyScopedAdmin):
    """What delivery still has to send (pending) or has sent (done), with its attempts."""

    team_field = "message__team"
    list_display = ("message", "state", "due_at", "attempts", "dispatched_at", "last_error")
    list_filter = ("state", ("message__team", VisibleTeamFilter))
    list_select_related = ("message",)
    date_hierarchy = "due_at"

    def get_readonly_fields(self, request: HttpRequest, obj: OutboxEntry | None = None) -> list:
        return [field.name for field in self.model._meta.fields]


@admin.register(QuarantinedPayload)
class QuarantinedPayloadAdmin(ReadOnlyScopedAdmin):
    """Signed webhook payloads whose processing failed, kept with their body for a retry."""

    team_field = "account__team"
    list_display = ("received_at", "account", "provider", "error_excerpt", "resolved_at")
    list_filter = ("provider", ("account__team", VisibleTeamFilter))
    list_select_related = ("account",)
    date_hierarchy = "received_at"

    def get_readonly_fields(
        self, request: HttpRequest, obj: QuarantinedPayload | None = None
    ) -> list:
        return [field.name for field in self.model._meta.fields]

    @admin.display(description=_("error"))
    def error_excerpt(self, payload: QuarantinedPayload) -> str:
        return Truncator(payload.error).chars(EXCERPT_CHARS)
