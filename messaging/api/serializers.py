"""Read serializers of the messaging API and small input serializers for its writes.

Every status, handler, assignment and delivery field is read-only: only the services move
them (through the actions of the views). Input serializers check shape and scope only (which
contact, account, template version or agent an id may name); the rules (the send gate,
hand-off, assignment) live in the services.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from approvals.models import MessageTemplate, TemplateVersion
from crm import selectors as crm_selectors
from crm.api.serializers import (
    ReadBackMixin,
    VisibleTeamField,
    WritableContactField,
    WritableTeamField,
)
from crm.models import Contact, Team
from messaging.models import (
    AgentPresence,
    AutomationRule,
    ChannelAccount,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Message,
    PresenceStatus,
)
from messaging.selectors import is_overdue
from messaging.services.export_storage import export_files
from messaging.services.send import TEXT_MAX_CHARS

MAX_VARIABLES = 50


def _user(field: serializers.Field) -> Any:
    return field.context["request"].user


class WritableAccountField(serializers.PrimaryKeyRelatedField):
    """A channel account of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[ChannelAccount]:
        return ChannelAccount.objects.filter(team_id__in=crm_selectors.member_team_ids(_user(self)))


class WritableTemplateVersionField(serializers.PrimaryKeyRelatedField):
    """A template version of one of the caller's teams (the send gate checks its approval)."""

    def get_queryset(self) -> QuerySet[TemplateVersion]:
        member_teams = crm_selectors.member_team_ids(_user(self))
        return TemplateVersion.objects.filter(template__team_id__in=member_teams)


class WritableTemplateField(serializers.PrimaryKeyRelatedField):
    def get_queryset(self) -> QuerySet[MessageTemplate]:
        member_teams = crm_selectors.member_team_ids(_user(self))
        return MessageTemplate.objects.filter(team_id__in=member_teams)


class AgentField(serializers.PrimaryKeyRelatedField):
    """An active user; whether they are an agent of the conversation's team is the service's
    rule (answered with its code)."""

    def get_queryset(self) -> QuerySet:
        return get_user_model().objects.filter(is_active=True)


class VisibleContactField(serializers.PrimaryKeyRelatedField):
    """A contact of a team the caller may read (auditors: every team)."""

    def get_queryset(self) -> QuerySet[Contact]:
        return Contact.objects.filter(team_id__in=crm_selectors.visible_team_ids(_user(self)))


class ChannelAccountSerializer(serializers.ModelSerializer):
    """A sender. Secrets are never part of it: `credentials_env` only names where they live."""

    team_name = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = ChannelAccount
        fields = [
            "id",
            "team",
            "team_name",
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    contact_name = serializers.CharField(source="contact.full_name", read_only=True)
    account_name = serializers.CharField(source="account.name", read_only=True)
    assigned_to_name = serializers.SlugRelatedField(
        source="assigned_to", slug_field="username", read_only=True
    )
    service_window_open = serializers.SerializerMethodField(
        help_text=_("Whether free text may be sent now (WhatsApp's 24-hour window).")
    )
    overdue = serializers.SerializerMethodField(
        help_text=_("A human should have answered already and nobody has.")
    )

    class Meta:
        model = Conversation
        fields = [
            "id",
            "team",
            "contact",
            "contact_name",
            "account",
            "account_name",
            "channel",
            "status",
            "handler",
            "assigned_to",
            "assigned_to_name",
            "service_window_ends_at",
            "service_window_open",
            "first_response_due_at",
            "first_response_at",
            "overdue",
            "handed_off_at",
            "last_message_at",
            "last_inbound_at",
            "resolved_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_service_window_open(self, conversation: Conversation) -> bool:
        ends = conversation.service_window_ends_at
        return ends is not None and ends > timezone.now()

    def get_overdue(self, conversation: Conversation) -> bool:
        return is_overdue(conversation, timezone.now())


class MessageSerializer(serializers.ModelSerializer):
    """A message as stored, with the send gate's decision. Erased bodies read as erased."""

    sender_name = serializers.SlugRelatedField(
        source="sender", slug_field="username", read_only=True
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation",
            "team",
            "contact",
            "account",
            "channel",
            "direction",
            "kind",
            "template_version",
            "purpose",
            "variables",
            "subject",
            "body",
            "body_hash",
            "sender_kind",
            "sender",
            "sender_name",
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
        ]
        read_only_fields = fields


class MessageSendInputSerializer(ReadBackMixin, serializers.Serializer):
    """Send through the send gate: an approved template version (with variables) or free
    text (only inside a service window). A refusal is a 422 with the gate's reason."""

    read_serializer_class = MessageSerializer
    contact = WritableContactField(queryset=Contact.objects.none())
    account = WritableAccountField(queryset=ChannelAccount.objects.none())
    template_version = WritableTemplateVersionField(
        queryset=TemplateVersion.objects.none(), required=False, allow_null=True
    )
    variables = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=1000),
        required=False,
        help_text=_('Values for the template\'s placeholders, e.g. {"film": "Metropolis"}.'),
    )
    text = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=TEXT_MAX_CHARS,
        help_text=_("Free text: only to contacts who wrote within the service window."),
    )
    subject = serializers.CharField(required=False, allow_blank=True, max_length=255)
    due_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text=_("Send later (ISO 8601); the send gate is asked again when it is due."),
    )

    def validate_variables(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_VARIABLES:
            raise serializers.ValidationError(
                _("At most %(max)d variables.") % {"max": MAX_VARIABLES}
            )
        return value


class NoteInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=TEXT_MAX_CHARS, help_text=_("Never sent."))


class AssignInputSerializer(serializers.Serializer):
    agent = AgentField(
        queryset=get_user_model().objects.none(),
        help_text=_("Id of an agent of the conversation's team."),
    )


class ConversationEventSerializer(serializers.ModelSerializer):
    """One link of a conversation's hash chain (ids, states and hashes, never text)."""

    class Meta:
        model = ConversationEvent
        fields = [
            "id",
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
        ]
        read_only_fields = fields


class AutomationRuleSerializer(serializers.ModelSerializer):
    """Read shape, and the create input (the service checks keywords, account and template)."""

    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)
    account = WritableAccountField(
        queryset=ChannelAccount.objects.none(), required=False, allow_null=True
    )
    template = WritableTemplateField(
        queryset=MessageTemplate.objects.none(), required=False, allow_null=True
    )
    keywords = serializers.ListField(
        child=serializers.CharField(max_length=40),
        required=False,
        help_text=_('For example ["FILM", "KINO"].'),
    )

    class Meta:
        model = AutomationRule
        fields = [
            "id",
            "team",
            "team_name",
            "account",
            "name",
            "keywords",
            "action",
            "template",
            "priority",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "team_name", "created_at", "updated_at"]


class AgentPresenceSerializer(serializers.ModelSerializer):
    """The caller's own presence: whether new conversations are assigned to them."""

    status = serializers.ChoiceField(choices=PresenceStatus.choices)
    capacity = serializers.IntegerField(min_value=1, max_value=100, required=False)

    class Meta:
        model = AgentPresence
        fields = ["status", "capacity", "last_assigned_at", "updated_at"]
        read_only_fields = ["last_assigned_at", "updated_at"]


class ExportFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(help_text=_("Bytes."))
    url = serializers.URLField()


class ConversationExportSerializer(serializers.ModelSerializer):
    files = serializers.SerializerMethodField()

    class Meta:
        model = ConversationExport
        fields = [
            "id",
            "actor_label",
            "filters",
            "conversation_count",
            "message_count",
            "event_count",
            "manifest_sha256",
            "files",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ExportFileSerializer(many=True))
    def get_files(self, export: ConversationExport) -> list[dict[str, Any]]:
        request = self.context.get("request")
        return [
            {
                "name": path.name,
                "size": path.stat().st_size,
                "url": reverse(
                    "conversation-export-file",
                    kwargs={"pk": export.pk, "name": path.name},
                    request=request,
                ),
            }
            for path in export_files(export)
        ]


class ConversationExportInputSerializer(ReadBackMixin, serializers.Serializer):
    """What to export; nothing chosen means every conversation the caller may read."""

    read_serializer_class = ConversationExportSerializer
    team = VisibleTeamField(queryset=Team.objects.none(), required=False, allow_null=True)
    contact = VisibleContactField(queryset=Contact.objects.none(), required=False, allow_null=True)
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and until <= since:
            raise serializers.ValidationError({"until": [_("Must lie after “since”.")]})
        return attrs
