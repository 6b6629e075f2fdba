"""The campaigns API: create and read campaigns; dry run, launch, pause, resume and cancel
are actions that each call one service.

Querysets are scoped to the caller's teams (another team's campaign is a 404); state,
counters and recipients are read-only and change only through the services.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.models import TemplateVersion
from crm import selectors as crm_selectors
from crm.api.base import model_perms
from crm.api.serializers import WritableTeamField
from crm.models import Segment, Team
from messaging.api.serializers import WritableAccountField, WritableTemplateVersionField
from messaging.api.views import MessagingViewSet
from messaging.models import Campaign, CampaignTemplate, ChannelAccount
from messaging.services import campaigns


class WritableSegmentField(serializers.PrimaryKeyRelatedField):
    """A segment of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[Segment]:
        user = self.context["request"].user
        return Segment.objects.filter(team_id__in=crm_selectors.member_team_ids(user))


class CampaignTemplateSerializer(serializers.ModelSerializer):
    account = WritableAccountField(queryset=ChannelAccount.objects.none())
    template_version = WritableTemplateVersionField(queryset=TemplateVersion.objects.none())

    class Meta:
        model = CampaignTemplate
        fields = ["account", "channel", "template_version", "position"]
        read_only_fields = ["channel", "position"]


class CampaignSerializer(serializers.ModelSerializer):
    """Read shape, and the create input (the service checks versions, channels and purpose).

    `templates` are in fallback order: for the preferred-channel mode, the first one a
    contact has consented to is used when their preferred channel is not possible.
    """

    team = WritableTeamField(queryset=Team.objects.all())
    segment = WritableSegmentField(queryset=Segment.objects.none(), required=False, allow_null=True)
    templates = CampaignTemplateSerializer(many=True)
    progress = serializers.FloatField(read_only=True)
    # Plain text in the schema: another "state" enum (template versions) already owns the name.
    state = serializers.CharField(
        read_only=True,
        help_text=_("draft, scheduled, running, paused, completed, cancelled or stopped"),
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
            "team",
            "name",
            "segment",
            "purpose",
            "channel_mode",
            "templates",
            "scheduled_at",
            "throttle_per_second",
            "state",
            "state_reason",
            "recipients_count",
            "sent_count",
            "refused_count",
            "failed_count",
            "progress",
            "launched_at",
            "finished_at",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "purpose",
            "state",
            "state_reason",
            "recipients_count",
            "sent_count",
            "refused_count",
            "failed_count",
            "launched_at",
            "finished_at",
            "created_at",
        ]


@extend_schema_view(
    list=extend_schema(summary=_("Campaigns of your teams, newest first")),
    retrieve=extend_schema(summary=_("One campaign with its state and progress")),
    create=extend_schema(summary=_("Create a draft campaign; every template must be sendable")),
)
class CampaignViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, MessagingViewSet
):
    queryset = Campaign.objects.none()
    serializer_class = CampaignSerializer
    filterset_fields = ("team", "state")
    action_perms = model_perms(
        "messaging",
        "campaign",
        ("list", "retrieve", "create"),
        dry_run="change",
        launch="change",
        pause="change",
        resume="change",
        cancel="change",
    )

    def get_queryset(self) -> QuerySet[Campaign]:
        return (
            Campaign.objects.filter(team_id__in=crm_selectors.visible_team_ids(self.request.user))
            .select_related("team")
            .prefetch_related("templates")
        )

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data: dict[str, Any] = dict(serializer.validated_data)
        choices = [
            campaigns.TemplateChoice(
                account=item["account"], template_version=item["template_version"]
            )
            for item in data.pop("templates")
        ]
        serializer.instance = campaigns.campaign_create(
            team=data.pop("team"), actor=self.request.user, templates=choices, **data
        )

    def _respond(self, campaign: Campaign) -> Response:
        return Response(self.get_serializer(campaign).data)

    @extend_schema(
        summary=_("Counts per refusal reason if the campaign launched now"),
        request=None,
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, pk: str) -> Response:
        return Response(campaigns.campaign_dry_run(self.get_object()))

    @extend_schema(summary=_("Launch (or schedule) the campaign"), request=None)
    @action(detail=True, methods=["post"])
    def launch(self, request: Request, pk: str) -> Response:
        return self._respond(
            campaigns.campaign_launch(campaign=self.get_object(), actor=request.user)
        )

    @extend_schema(summary=_("Pause after the current batch"), request=None)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._respond(
            campaigns.campaign_pause(campaign=self.get_object(), actor=request.user)
        )

    @extend_schema(summary=_("Resume a paused campaign"), request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._respond(
            campaigns.campaign_resume(campaign=self.get_object(), actor=request.user)
        )

    @extend_schema(summary=_("Cancel the campaign for good"), request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._respond(
            campaigns.campaign_cancel(campaign=self.get_object(), actor=request.user)
        )
