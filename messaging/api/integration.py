"""Outbound event webhooks in the API: integrators' subscriptions and their deliveries.

The signing secret is in the answer to the create request only; afterwards it is never shown.
Subscriptions are scoped to the caller's teams (another team's is a 404); url, event types and
description change through the update service (a new URL is checked for SSRF again), and a
disabled subscription comes back with the `enable` action.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from crm import selectors as crm_selectors
from crm.api.base import TeamScopedViewSet, model_perms
from crm.api.serializers import WritableTeamField
from crm.models import Team
from messaging.models import EventType, WebhookDelivery, WebhookSubscription
from messaging.services import events


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    """Read shape and update input; the secret is never part of it."""

    team = WritableTeamField(queryset=Team.objects.all())
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), allow_empty=False
    )
    owner = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "team",
            "url",
            "event_types",
            "description",
            "owner",
            "is_active",
            "failure_count",
            "disabled_at",
            "disabled_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "owner",
            "is_active",
            "failure_count",
            "disabled_at",
            "disabled_reason",
            "created_at",
            "updated_at",
        ]


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    """The answer to a create: the one time the signing secret is shown."""

    secret = serializers.CharField(
        read_only=True, help_text=_("Store it now: it is not shown again.")
    )

    class Meta(WebhookSubscriptionSerializer.Meta):
        fields = [*WebhookSubscriptionSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "payload",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "created_at",
            "next_attempt_at",
            "delivered_at",
        ]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(summary=_("Event webhook subscriptions of your teams")),
    retrieve=extend_schema(summary=_("One subscription (its secret is never shown again)")),
    create=extend_schema(
        summary=_("Subscribe a URL to events; the answer holds the signing secret, once"),
        responses={201: WebhookSubscriptionCreatedSerializer},
    ),
    update=extend_schema(summary=_("Change url, event types or description")),
    partial_update=extend_schema(summary=_("Change url, event types or description")),
)
class WebhookSubscriptionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    TeamScopedViewSet,
):
    queryset = WebhookSubscription.objects.none()
    serializer_class = WebhookSubscriptionSerializer
    action_perms = model_perms(
        "messaging",
        "webhooksubscription",
        ("list", "retrieve", "create", "update", "partial_update"),
        enable="change",
    ) | {"deliveries": "messaging.view_webhookdelivery"}

    def get_queryset(self) -> QuerySet[WebhookSubscription]:
        return WebhookSubscription.objects.filter(
            team_id__in=crm_selectors.visible_team_ids(self.request.user)
        ).select_related("team")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self.validated_input(request)
        subscription = events.webhook_subscription_create(
            team=data["team"],
            url=data["url"],
            event_types=data["event_types"],
            description=data.get("description", ""),
            owner=request.user,
            actor=request.user,
        )
        body = WebhookSubscriptionCreatedSerializer(
            subscription, context=self.get_serializer_context()
        ).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        changes = dict(serializer.validated_data)
        # The team is where the subscription lives, not something an update moves.
        changes.pop("team", None)
        serializer.instance = events.webhook_subscription_update(
            subscription=serializer.instance, actor=self.request.user, **changes
        )

    @extend_schema(
        summary=_("Re-enable a subscription disabled after repeated failure"),
        request=None,
        responses=WebhookSubscriptionSerializer,
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        subscription = events.webhook_subscription_enable(
            subscription=self.get_object(), actor=request.user
        )
        return Response(self.get_serializer(subscription).data)

    @extend_schema(
        summary=_("The subscription's deliveries, newest first"),
        responses=WebhookDeliverySerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        deliveries = self.get_object().deliveries.order_by("-created_at", "-id")
        page = self.paginate_queryset(deliveries)
        serializer = WebhookDeliverySerializer(page if page is not None else deliveries, many=True)
        if page is not None:
            return self.get_paginated_response(serializer.data)
        return Response(serializer.data)

    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {}
