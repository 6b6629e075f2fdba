"""Dialog metrics in the API: `/api/v1/metrics/{overview,timeseries,handoffs,consent}/`.

Read-only and team-scoped: the figures cover the caller's visible teams (or one of them with
`?team=`; another team's id is a 404). Callers need messaging.view_message (marketing,
agents, auditors). `?format=csv` returns the same rows as a spreadsheet-safe CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any, ClassVar

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, permissions, renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crm.api.base import ActionPermission
from crm.exports import csv_safe
from crm.selectors import visible_team_ids
from messaging import metrics

VIEW_PERM = "messaging.view_message"
DEFAULT_PERIOD_DAYS = 30


class MetricsCSVRenderer(renderers.BaseRenderer):
    """The view's rows as CSV, columns in the view's `fields` order; text cells are made
    safe for spreadsheets (numbers, also negative ones, stay numbers)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if isinstance(data, dict) and "results" in data:
            fields = (renderer_context or {})["view"].fields
            writer.writerow(fields)
            for row in data["results"]:
                writer.writerow([_cell(row[name]) for name in fields])
        else:
            # An error (400, 403, 404) in CSV form: one line per message.
            writer.writerow(["field", "detail"])
            for key, value in (data or {}).items():
                writer.writerow([key, csv_safe(value)])
        # The BOM lets spreadsheet programs read umlauts in labels correctly.
        return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, int | float) else csv_safe(value)


class MetricsQuerySerializer(serializers.Serializer):
    """The query string: period (days, inclusive, UTC), team, narrowing and window."""

    since = serializers.DateField(required=False, help_text=_("First day (default: 30 days ago)."))
    until = serializers.DateField(required=False, help_text=_("Last day (default: today)."))
    team = serializers.IntegerField(required=False, help_text=_("One of your teams."))
    campaign = serializers.CharField(
        required=False, max_length=60, help_text=_("A campaign origin, e.g. campaign:12.")
    )
    template = serializers.IntegerField(required=False)
    purpose = serializers.IntegerField(required=False)
    window_days = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=90,
        default=metrics.DEFAULT_WINDOW_DAYS,
        help_text=_("Days after a message in which replies, hand-offs and opt-outs count."),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today = timezone.now().astimezone(dt.UTC).date()
        attrs.setdefault("until", today)
        attrs.setdefault("since", attrs["until"] - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1))
        if attrs["since"] > attrs["until"]:
            raise serializers.ValidationError({"since": _("The period starts after it ends.")})
        return attrs


def _grouping_field(choices: tuple[str, ...]) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices, default=choices[0], required=False)


class OverviewQuerySerializer(MetricsQuerySerializer):
    group_by = _grouping_field(metrics.GROUPINGS)


class HandoffQuerySerializer(MetricsQuerySerializer):
    group_by = _grouping_field(metrics.CONVERSATION_GROUPINGS)


class ConsentQuerySerializer(MetricsQuerySerializer):
    group_by = _grouping_field(metrics.CONSENT_GROUPINGS)


class MetricsRowSerializer(serializers.Serializer):
    key = serializers.JSONField(help_text=_("Campaign origin, template, purpose or team id, day."))
    label = serializers.CharField()


class MessageMetricsSerializer(MetricsRowSerializer):
    messages = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    read = serializers.IntegerField()
    failed = serializers.IntegerField()
    replied = serializers.IntegerField()
    reply_rate = serializers.FloatField(allow_null=True)
    median_reply_seconds = serializers.FloatField(allow_null=True)
    dialog_depth = serializers.FloatField(allow_null=True)
    handoffs = serializers.IntegerField()
    median_human_response_seconds = serializers.FloatField(allow_null=True)
    opt_outs = serializers.IntegerField()


class DailyMetricsSerializer(MessageMetricsSerializer):
    handoffs_total = serializers.IntegerField()
    consent_growth = serializers.IntegerField()


class HandoffMetricsSerializer(MetricsRowSerializer):
    handoffs = serializers.IntegerField()
    median_human_response_seconds = serializers.FloatField(allow_null=True)


class ConsentGrowthSerializer(MetricsRowSerializer):
    grants = serializers.IntegerField()
    withdrawals = serializers.IntegerField()
    growth = serializers.IntegerField()


def metrics_query_for(user: Any, data: dict[str, Any]) -> metrics.MetricsQuery:
    """Validated query parameters scoped to the user's visible teams (a foreign team is 404)."""
    team_ids = visible_team_ids(user)
    if data.get("team") is not None:
        if data["team"] not in team_ids:
            raise exceptions.NotFound(_("No such team."))
        team_ids = [data["team"]]
    return metrics.MetricsQuery(
        team_ids=tuple(team_ids),
        since=dt.datetime.combine(data["since"], dt.time.min, tzinfo=dt.UTC),
        until=dt.datetime.combine(data["until"] + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC),
        window_days=data["window_days"],
        campaign=data.get("campaign", ""),
        template_id=data.get("template"),
        purpose_id=data.get("purpose"),
    )


class MetricsView(APIView):
    """Base: role check, query validation and scoping, one metrics read, JSON or CSV."""

    permission_classes: ClassVar[list] = [permissions.IsAuthenticated, ActionPermission]
    renderer_classes: ClassVar[list] = [
        renderers.JSONRenderer,
        renderers.BrowsableAPIRenderer,
        MetricsCSVRenderer,
    ]
    action_perms: ClassVar[dict[str, str]] = {"get": VIEW_PERM}
    query_serializer: ClassVar[type[MetricsQuerySerializer]]
    fields: ClassVar[tuple[str, ...]]
    filename: ClassVar[str]

    def rows(self, query: metrics.MetricsQuery, group_by: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        params = self.query_serializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        query = metrics_query_for(request.user, data)
        group_by = data.get("group_by", "day")
        response = Response(
            {
                "since": data["since"],
                "until": data["until"],
                "window_days": query.window_days,
                "group_by": group_by,
                "results": self.rows(query, group_by),
            }
        )
        if (
            getattr(request, "accepted_renderer", None)
            and request.accepted_renderer.format == "csv"
        ):
            response["Content-Disposition"] = f'attachment; filename="{self.filename}"'
        return response


def _envelope(row: type[serializers.Serializer]) -> type[serializers.Serializer]:
    return type(
        f"{row.__name__.removesuffix('Serializer')}ResultSerializer",
        (serializers.Serializer,),
        {
            "since": serializers.DateField(),
            "until": serializers.DateField(),
            "window_days": serializers.IntegerField(),
            "group_by": serializers.CharField(),
            "results": row(many=True),
        },
    )


def _documented(
    summary: str, query: type[serializers.Serializer], row: type[serializers.Serializer]
) -> Callable:
    return extend_schema_view(
        get=extend_schema(summary=summary, parameters=[query], responses=_envelope(row))
    )


@_documented(
    _("Message figures per campaign, template, purpose, team or day"),
    OverviewQuerySerializer,
    MessageMetricsSerializer,
)
class MetricsOverviewView(MetricsView):
    query_serializer = OverviewQuerySerializer
    fields = metrics.MESSAGE_FIELDS
    filename = "metrics-overview.csv"

    def rows(self, query: metrics.MetricsQuery, group_by: str) -> list[dict[str, Any]]:
        return metrics.message_metrics(query, group_by=group_by)


@_documented(
    _("Message figures, hand-offs and consent growth per day"),
    MetricsQuerySerializer,
    DailyMetricsSerializer,
)
class MetricsTimeseriesView(MetricsView):
    query_serializer = MetricsQuerySerializer
    fields = metrics.SERIES_FIELDS
    filename = "metrics-timeseries.csv"

    def rows(self, query: metrics.MetricsQuery, group_by: str) -> list[dict[str, Any]]:
        return metrics.daily_series(query)


@_documented(
    _("Hand-offs to humans and time to first human response per team or day"),
    HandoffQuerySerializer,
    HandoffMetricsSerializer,
)
class MetricsHandoffsView(MetricsView):
    query_serializer = HandoffQuerySerializer
    fields = metrics.CONVERSATION_FIELDS
    filename = "metrics-handoffs.csv"

    def rows(self, query: metrics.MetricsQuery, group_by: str) -> list[dict[str, Any]]:
        return metrics.conversation_metrics(query, group_by=group_by)


@_documented(
    _("Consent growth (grants minus withdrawals) per purpose or day"),
    ConsentQuerySerializer,
    ConsentGrowthSerializer,
)
class MetricsConsentView(MetricsView):
    query_serializer = ConsentQuerySerializer
    fields = metrics.CONSENT_FIELDS
    filename = "metrics-consent.csv"

    def rows(self, query: metrics.MetricsQuery, group_by: str) -> list[dict[str, Any]]:
        return metrics.consent_growth(query, group_by=group_by)
