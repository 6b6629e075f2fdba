"""The messaging REST API: channel accounts, conversations with their hand-off actions,
messages (sending goes through the send gate), the conversation ledger, automation rules,
the caller's own presence and auditor exports.

Querysets come from `messaging.selectors` (another team's object is a 404), every action
names its permission in `action_perms` (auditors read everything and every write is a 403),
and every write calls one service. A send the gate refuses is a 422 with the gate's reason
as `code` and its decision; status, handler and assignment change only through actions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.http import FileResponse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from crm.api.base import READ_ACTIONS, FilteredViewSet, TeamScopedViewSet, model_perms
from crm.api.pagination import DefaultCursorPagination
from messaging import selectors, services
from messaging.api import filters
from messaging.api import serializers as api
from messaging.models import (
    AgentPresence,
    AutomationRule,
    ChannelAccount,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Message,
    SenderKind,
)
from messaging.selectors import exports_visible_to
from messaging.services import automation
from messaging.services import conversations as handoff
from messaging.services.export_storage import export_file, run_export

EXPORT_PERM = "messaging.export_conversations"


class LedgerCursorPagination(DefaultCursorPagination):
    """The conversation ledger pages by when events were recorded, newest first."""

    ordering = ("-recorded_at", "-id")


class MessagingViewSet(FilteredViewSet):
    """A method the viewset does not offer (PATCH on a message) is 405, not a role's 403."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if self.action is None:
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(summary=_("Channel accounts (senders) of your teams")),
    retrieve=extend_schema(summary=_("One channel account; secrets are never shown")),
)
class ChannelAccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, MessagingViewSet):
    queryset = ChannelAccount.objects.none()
    serializer_class = api.ChannelAccountSerializer
    filterset_fields = ("team", "channel", "provider", "is_active")
    action_perms = model_perms("messaging", "channelaccount", READ_ACTIONS)

    def get_queryset(self) -> QuerySet[ChannelAccount]:
        return selectors.channel_accounts_visible_to(self.request.user).select_related("team")


@extend_schema_view(
    list=extend_schema(summary=_("Conversations of your teams, newest first")),
    retrieve=extend_schema(summary=_("One conversation with its status and response times")),
)
class ConversationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, MessagingViewSet):
    """Status, handler and assignment change only through the actions, each recorded in the
    conversation's ledger."""

    queryset = Conversation.objects.none()
    serializer_class = api.ConversationSerializer
    filterset_class = filters.ConversationFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "assign": api.AssignInputSerializer,
        "notes": api.NoteInputSerializer,
    }
    action_perms = model_perms(
        "messaging",
        "conversation",
        READ_ACTIONS,
        assign="change",
        take_over="change",
        hand_back="change",
        resolve="change",
    ) | {"notes": "messaging.add_message"}

    def get_queryset(self) -> QuerySet[Conversation]:
        return selectors.conversations_visible_to(self.request.user).select_related(
            "contact", "account", "assigned_to"
        )

    def _answer(self, conversation: Conversation) -> Response:
        conversation = self.get_queryset().get(pk=conversation.pk)
        return Response(
            api.ConversationSerializer(conversation, context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary=_("Assign the conversation to an agent of its team"),
        request=api.AssignInputSerializer,
        responses=api.ConversationSerializer,
    )
    @action(detail=True, methods=["post"])
    def assign(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        data = self.validated_input(request)
        handoff.conversation_assign(
            conversation=conversation, agent=data["agent"], actor=request.user
        )
        return self._answer(conversation)

    @extend_schema(
        summary=_("Take the conversation over from the bot (assigns it to you)"),
        request=None,
        responses=api.ConversationSerializer,
    )
    @action(detail=True, methods=["post"], url_path="take-over")
    def take_over(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        handoff.conversation_take_over(conversation=conversation, actor=request.user)
        return self._answer(conversation)

    @extend_schema(
        summary=_("Hand the conversation back to the bot"),
        request=None,
        responses=api.ConversationSerializer,
    )
    @action(detail=True, methods=["post"], url_path="hand-back")
    def hand_back(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        handoff.conversation_hand_back(conversation=conversation, actor=request.user)
        return self._answer(conversation)

    @extend_schema(
        summary=_("Resolve the conversation (a new inbound message reopens it)"),
        request=None,
        responses=api.ConversationSerializer,
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        handoff.conversation_resolve(conversation=conversation, actor=request.user)
        return self._answer(conversation)

    @extend_schema(
        summary=_("Add an internal note to the timeline (never sent to the contact)"),
        request=api.NoteInputSerializer,
        responses={201: api.MessageSerializer},
    )
    @action(detail=True, methods=["post"])
    def notes(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        data = self.validated_input(request)
        note = services.conversation_note_add(
            conversation=conversation, actor=request.user, text=data["text"]
        )
        return Response(
            api.MessageSerializer(note, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )


SEND_REFUSED = OpenApiResponse(
    description=_(
        "The send gate refused: `code` is its reason (no_consent, outside_service_window, "
        "template_not_approved, ...), `decision` what it checked. Nothing was stored."
    )
)


@extend_schema_view(
    list=extend_schema(summary=_("Messages of your teams' conversations, newest first")),
    retrieve=extend_schema(summary=_("One message with its delivery status and gate decision")),
    create=extend_schema(
        summary=_("Send a message through the send gate"),
        request=api.MessageSendInputSerializer,
        responses={201: api.MessageSerializer, 422: SEND_REFUSED},
    ),
)
class MessageViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, MessagingViewSet
):
    """Messages are never changed or deleted here; delivery moves their status."""

    queryset = Message.objects.none()
    serializer_class = api.MessageSerializer
    filterset_class = filters.MessageFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.MessageSendInputSerializer,
    }
    action_perms = model_perms("messaging", "message", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[Message]:
        return selectors.messages_visible_to(self.request.user).select_related("sender")

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        user = self.request.user
        # An agent answering through the API answers as an agent (it stops the first-response
        # clock); integrations send as the API.
        agent = handoff.is_team_agent(user, data["contact"].team_id)
        serializer.instance = services.message_send(
            contact=data["contact"],
            account=data["account"],
            actor=user,
            sender_kind=SenderKind.AGENT if agent else SenderKind.API,
            template_version=data.get("template_version"),
            variables=data.get("variables"),
            text=data.get("text", ""),
            subject=data.get("subject", ""),
            due_at=data.get("due_at"),
        )


@extend_schema_view(
    list=extend_schema(summary=_("The conversation ledger (hash-chained), newest first")),
    retrieve=extend_schema(summary=_("One conversation event")),
)
class ConversationEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, MessagingViewSet):
    """Append-only: events are written by the services that change a conversation."""

    queryset = ConversationEvent.objects.none()
    serializer_class = api.ConversationEventSerializer
    filterset_class = filters.ConversationEventFilter
    pagination_class = LedgerCursorPagination
    action_perms = model_perms("messaging", "conversationevent", READ_ACTIONS)

    def get_queryset(self) -> QuerySet[ConversationEvent]:
        return selectors.conversation_events_visible_to(self.request.user)


@extend_schema_view(
    list=extend_schema(summary=_("Automation rules (keywords, hand-off) of your teams")),
    retrieve=extend_schema(summary=_("One automation rule")),
    create=extend_schema(summary=_("Create an automation rule; replies use approved templates")),
)
class AutomationRuleViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, MessagingViewSet
):
    queryset = AutomationRule.objects.none()
    serializer_class = api.AutomationRuleSerializer
    filterset_class = filters.AutomationRuleFilter
    action_perms = model_perms("messaging", "automationrule", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[AutomationRule]:
        return selectors.automation_rules_visible_to(self.request.user).select_related("team")

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = automation.automation_rule_create(
            team=data.pop("team"), actor=self.request.user, **data
        )


class AgentPresenceViewSet(TeamScopedViewSet):
    """Only the caller's own presence: agents say whether they take new conversations."""

    queryset = AgentPresence.objects.none()
    serializer_class = api.AgentPresenceSerializer
    action_perms: ClassVar[dict[str, str]] = {
        "me": "messaging.view_agentpresence",
        "me_update": "messaging.change_agentpresence",
    }

    def get_queryset(self) -> QuerySet[AgentPresence]:
        return AgentPresence.objects.filter(user=self.request.user)

    def _own(self) -> AgentPresence:
        # Nobody set it yet: show the default (offline) without writing on a read.
        return self.get_queryset().first() or AgentPresence(user=self.request.user)

    @extend_schema(summary=_("Your presence"), responses=api.AgentPresenceSerializer)
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        return Response(self.get_serializer(self._own()).data)

    @extend_schema(
        summary=_("Set your presence (available, away or offline) and capacity"),
        request=api.AgentPresenceSerializer,
        responses=api.AgentPresenceSerializer,
    )
    @me.mapping.put
    def me_update(self, request: Request) -> Response:
        data = self.validated_input(request)
        presence = handoff.agent_presence_set(
            user=request.user,
            status=data["status"],
            capacity=data.get("capacity"),
            actor=request.user,
        )
        return Response(self.get_serializer(presence).data)


@extend_schema_view(
    list=extend_schema(summary=_("Conversation exports made for audits, newest first")),
    retrieve=extend_schema(summary=_("One export with its files")),
    create=extend_schema(
        summary=_("Export conversations (JSON Lines, CSV and a manifest with SHA-256)"),
        request=api.ConversationExportInputSerializer,
        responses={201: api.ConversationExportSerializer},
    ),
)
class ConversationExportViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, MessagingViewSet
):
    """Each export is itself recorded; running one needs messaging.export_conversations."""

    queryset = ConversationExport.objects.none()
    serializer_class = api.ConversationExportSerializer
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.ConversationExportInputSerializer,
    }
    action_perms = model_perms("messaging", "conversationexport", READ_ACTIONS) | {
        "create": EXPORT_PERM,
        "file": EXPORT_PERM,
    }

    def get_queryset(self) -> QuerySet[ConversationExport]:
        return exports_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        team, contact = data.get("team"), data.get("contact")
        serializer.instance = run_export(
            actor=self.request.user,
            team_ids=[team.pk] if team else None,
            contact_id=contact.pk if contact else None,
            since=data.get("since"),
            until=data.get("until"),
        )

    @extend_schema(
        summary=_("Download one file of an export"),
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH)],
        responses={
            (status.HTTP_200_OK, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            status.HTTP_404_NOT_FOUND: OpenApiResponse(description=_("No such file.")),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"files/(?P<name>[^/]+)", url_name="file")
    def file(self, request: Request, pk: str | None = None, name: str = "") -> FileResponse:
        path = export_file(self.get_object(), name)
        if path is None:
            raise exceptions.NotFound(_("This export has no such file."))
        return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
