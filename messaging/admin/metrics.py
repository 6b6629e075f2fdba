"""The metrics dashboard in admin (/admin/messaging/message/metrics/).

Charts are inline SVG drawn on the server (a funnel and a time series), styled by a served
stylesheet: no script and no CDN. The figures come from messaging.metrics for the caller's
visible teams, the same as /api/v1/metrics/..., whose CSV the page links to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm.selectors import teams_visible_to, visible_team_ids
from messaging import metrics
from messaging.admin.messages import MessageAdmin
from messaging.models import Message

VIEW_PERM = "messaging.view_message"
CHART_WIDTH: Final = 720
CHART_HEIGHT: Final = 220
BAR_HEIGHT: Final = 28
# The time-series lines and their CSS classes (colours live in metrics.css).
SERIES_LINES: Final = (
    ("sent", _("Sent")),
    ("delivered", _("Delivered")),
    ("replied", _("Replied")),
    ("opt_outs", _("Opt-outs")),
)
FUNNEL_STEPS: Final = (
    ("sent", _("Sent")),
    ("delivered", _("Delivered")),
    ("read", _("Read")),
    ("replied", _("Replied")),
)
GROUP_CHOICES: Final = (
    ("campaign", _("Campaign")),
    ("template", _("Template")),
    ("purpose", _("Purpose")),
    ("team", _("Team")),
)


class MetricsFilterForm(forms.Form):
    since = forms.DateField(label=_("From"), required=False)
    until = forms.DateField(label=_("Until"), required=False)
    team = forms.ModelChoiceField(label=_("Team"), queryset=None, required=False)
    group_by = forms.ChoiceField(label=_("Group by"), choices=GROUP_CHOICES, required=False)
    window_days = forms.IntegerField(
        label=_("Window (days)"),
        min_value=1,
        max_value=90,
        required=False,
        help_text=_("Replies, hand-offs and opt-outs count within this many days of a message."),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_visible_to(user).order_by("name")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        today = timezone.now().astimezone(dt.UTC).date()
        data["until"] = data.get("until") or today
        data["since"] = data.get("since") or data["until"] - dt.timedelta(days=29)
        data["group_by"] = data.get("group_by") or "campaign"
        data["window_days"] = data.get("window_days") or metrics.DEFAULT_WINDOW_DAYS
        if data["since"] > data["until"]:
            raise forms.ValidationError(_("The period starts after it ends."))
        return data


def funnel_svg(totals: dict[str, int]) -> SafeString:
    """Horizontal bars, one per funnel step, scaled to the first step."""
    top = max(totals.get(FUNNEL_STEPS[0][0], 0), 1)
    label_width = 110
    usable = CHART_WIDTH - label_width - 80
    bars = format_html_join(
        "",
        '<g transform="translate(0,{})"><text class="metrics-label" x="0" y="19">{}</text>'
        '<rect class="metrics-bar metrics-{}" x="{}" y="4" width="{}" height="{}"></rect>'
        '<text class="metrics-value" x="{}" y="19">{}</text></g>',
        (
            (
                index * (BAR_HEIGHT + 6),
                label,
                name,
                label_width,
                round(usable * totals.get(name, 0) / top),
                BAR_HEIGHT - 8,
                label_width + round(usable * totals.get(name, 0) / top) + 6,
                totals.get(name, 0),
            )
            for index, (name, label) in enumerate(FUNNEL_STEPS)
        ),
    )
    height = len(FUNNEL_STEPS) * (BAR_HEIGHT + 6)
    return format_html(
        '<svg class="metrics-chart metrics-funnel" role="img" aria-label="{}" '
        'viewBox="0 0 {} {}" width="{}" height="{}">{}</svg>',
        gettext("Funnel"),
        CHART_WIDTH,
        height,
        CHART_WIDTH,
        height,
        bars,
    )


def series_svg(days: Sequence[dict[str, Any]]) -> SafeString:
    """One polyline per figure over the days, a shared y scale and the first/last day."""
    left, bottom, top_margin = 40, 24, 10
    plot_width = CHART_WIDTH - left - 10
    plot_height = CHART_HEIGHT - bottom - top_margin
    peak = max([1, *(day[name] for day in days for name, _label in SERIES_LINES)])
    step = plot_width / max(len(days) - 1, 1)

    def points(name: str) -> str:
        return " ".join(
            f"{left + index * step:.1f},"
            f"{top_margin + plot_height - plot_height * day[name] / peak:.1f}"
            for index, day in enumerate(days)
        )

    lines = format_html_join(
        "",
        '<polyline class="metrics-line metrics-{}" fill="none" points="{}"><title>{}</title>'
        "</polyline>",
        ((name, points(name), label) for name, label in SERIES_LINES),
    )
    axis_y = top_margin + plot_height
    labels = (
        format_html(
            '<text class="metrics-label" x="{}" y="{}">{}</text>'
            '<text class="metrics-label" x="{}" y="{}" text-anchor="end">{}</text>',
            left,
            CHART_HEIGHT - 6,
            days[0]["key"],
            CHART_WIDTH - 10,
            CHART_HEIGHT - 6,
            days[-1]["key"],
        )
        if days
        else ""
    )
    return format_html(
        '<svg class="metrics-chart metrics-series" role="img" aria-label="{}" '
        'viewBox="0 0 {} {}" width="{}" height="{}">'
        '<line class="metrics-axis" x1="{}" y1="{}" x2="{}" y2="{}"></line>'
        '<text class="metrics-label" x="0" y="{}">{}</text>{}{}</svg>',
        gettext("Messages per day"),
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        left,
        axis_y,
        CHART_WIDTH - 10,
        axis_y,
        top_margin + 10,
        peak,
        lines,
        labels,
    )


def metrics_dashboard_view(request: HttpRequest, admin_site: admin.AdminSite) -> HttpResponse:
    """The dashboard for users who may read messages; figures cover their visible teams."""
    if not request.user.has_perm(VIEW_PERM):
        raise PermissionDenied
    # Every field is optional, so an empty query string is a valid form with the defaults;
    # invalid input shows its errors and the page falls back to the defaults.
    form = MetricsFilterForm(request.GET, user=request.user)
    if form.is_valid():
        data = form.cleaned_data
    else:
        defaults = MetricsFilterForm({}, user=request.user)
        defaults.is_valid()
        data = defaults.cleaned_data
    team_ids = [data["team"].pk] if data.get("team") else visible_team_ids(request.user)
    query = metrics.MetricsQuery(
        team_ids=tuple(team_ids),
        since=dt.datetime.combine(data["since"], dt.time.min, tzinfo=dt.UTC),
        until=dt.datetime.combine(data["until"] + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC),
        window_days=data["window_days"],
    )
    figures = metrics.dashboard(query, group_by=data["group_by"])
    days = figures.days
    totals = {name: sum(day[name] for day in days) for name, _label in FUNNEL_STEPS}
    params = {
        "since": data["since"].isoformat(),
        "until": data["until"].isoformat(),
        "window_days": data["window_days"],
        **({"team": data["team"].pk} if data.get("team") else {}),
    }
    request.current_app = admin_site.name
    context = {
        **admin_site.each_context(request),
        "opts": Message._meta,
        "title": gettext("Dialog metrics"),
        "subtitle": None,
        "form": form,
        "group_by": data["group_by"],
        "groups": figures.groups,
        "days": days,
        "handoffs": figures.handoffs,
        "consent": figures.consent,
        "totals": totals,
        "funnel_chart": funnel_svg(totals),
        "series_chart": series_svg(days),
        "csv_overview": _csv_url("metrics-overview", {**params, "group_by": data["group_by"]}),
        "csv_series": _csv_url("metrics-timeseries", params),
        "csv_consent": _csv_url("metrics-consent", params),
    }
    return TemplateResponse(request, "admin/messaging/metrics_dashboard.html", context)


def _csv_url(name: str, params: dict[str, Any]) -> str:
    return f"{reverse(name)}?{urlencode({**params, 'format': 'csv'})}"


class MessageMetricsAdmin(MessageAdmin):
    """The message admin plus the dashboard URL (kept here so the dashboard is one module)."""

    def get_urls(self) -> list[URLPattern]:
        dashboard = path(
            "metrics/",
            self.admin_site.admin_view(
                lambda request: metrics_dashboard_view(request, self.admin_site)
            ),
            name="messaging_message_metrics",
        )
        return [dashboard, *super().get_urls()]


# Re-register Message with the dashboard-carrying admin (same behaviour plus one URL).
admin.site.unregister(Message)
admin.site.register(Message, MessageMetricsAdmin)
