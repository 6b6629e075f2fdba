"""Dialog metrics: reads only, computed in SQL aggregations (no per-row Python).

Every figure is attributed to an outbound message and looks `window_days` ahead of it:
a reply is the contact's first inbound message in that window, dialog depth counts the
messages that followed, a hand-off or an opt-out (consent withdrawal) counts when it
happened in that window. Medians come from PostgreSQL's percentile_cont; elsewhere from a
window-function query (ROW_NUMBER over the ordered values), so a group costs no extra query.
Callers pass the team ids they may see (crm.selectors.visible_team_ids): nothing here scopes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from django.db import connection
from django.db.models import (
    Avg,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate

from consent.models import ConsentAction, ConsentEvent
from messaging.models import (
    Conversation,
    ConversationEvent,
    Direction,
    EventKind,
    Message,
    MessageStatus,
)

CAMPAIGN_ORIGIN_PREFIX: Final = "campaign:"
DEFAULT_WINDOW_DAYS: Final = 7
GROUPINGS: Final = ("campaign", "template", "purpose", "team", "day")
CONVERSATION_GROUPINGS: Final = ("team", "day")
CONSENT_GROUPINGS: Final = ("purpose", "day")
GRANT_ACTIONS: Final = (ConsentAction.GRANTED, ConsentAction.CONFIRMED)

# Column order of the message figures (the API and the CSV export use the same order).
MESSAGE_FIELDS: Final = (
    "key",
    "label",
    "messages",
    "sent",
    "delivered",
    "read",
    "failed",
    "replied",
    "reply_rate",
    "median_reply_seconds",
    "dialog_depth",
    "handoffs",
    "median_human_response_seconds",
    "opt_outs",
)
CONVERSATION_FIELDS: Final = ("key", "label", "handoffs", "median_human_response_seconds")
CONSENT_FIELDS: Final = ("key", "label", "grants", "withdrawals", "growth")


@dataclass(frozen=True)
class MetricsQuery:
    """What to measure: teams (already scoped to the caller), the period [since, until),
    optional narrowing to one campaign, template or purpose, and the look-ahead window."""

    team_ids: tuple[int, ...]
    since: dt.datetime
    until: dt.datetime
    window_days: int = DEFAULT_WINDOW_DAYS
    campaign: str = ""
    template_id: int | None = None
    purpose_id: int | None = None

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(days=self.window_days)


def _group_columns(group_by: str, *, prefix: str = "") -> dict[str, Any]:
    """The key and label expressions of a grouping, on a Message (prefix "") or on a model
    that reaches the message's fields through `prefix`."""
    if group_by == "campaign":
        return {"key": F(f"{prefix}origin"), "label": F(f"{prefix}origin")}
    if group_by == "template":
        return {
            "key": F(f"{prefix}template_version__template_id"),
            "label": F(f"{prefix}template_version__template__name"),
        }
    if group_by == "purpose":
        return {"key": F(f"{prefix}purpose_id"), "label": F(f"{prefix}purpose__name")}
    if group_by == "team":
        return {"key": F(f"{prefix}team_id"), "label": F(f"{prefix}team__name")}
    if group_by == "day":
        day = TruncDate(f"{prefix}created_at", tzinfo=dt.UTC)
        return {"key": day, "label": day}
    raise ValueError(f"Unknown grouping {group_by!r}")


def _group_filter(group_by: str) -> Q:
    """Messages outside the grouping's dimension (no campaign, no template) are left out."""
    if group_by == "campaign":
        return Q(origin__startswith=CAMPAIGN_ORIGIN_PREFIX)
    if group_by == "template":
        return Q(template_version__isnull=False)
    if group_by == "purpose":
        return Q(purpose__isnull=False)
    return Q()


def _key(value: Any) -> Any:
    # Days come back as date objects from the ORM and as text from raw SQLite rows.
    if isinstance(value, dt.date | str):
        return str(value)
    return value


def outbound_messages(query: MetricsQuery) -> QuerySet[Message]:
    """Accepted outbound messages created in the period, each annotated with its outcome
    (first reply time, depth, hand-off, opt-out) in the window after it."""
    qs = Message.objects.filter(
        team_id__in=query.team_ids,
        direction=Direction.OUTBOUND,
        created_at__gte=query.since,
        created_at__lt=query.until,
    ).exclude(status=MessageStatus.REFUSED)
    if query.campaign:
        qs = qs.filter(origin=query.campaign)
    if query.template_id is not None:
        qs = qs.filter(template_version__template_id=query.template_id)
    if query.purpose_id is not None:
        qs = qs.filter(purpose_id=query.purpose_id)
    qs = qs.annotate(
        metric_at=Coalesce("sent_at", "created_at"),
        metric_until=ExpressionWrapper(
            Coalesce("sent_at", "created_at") + Value(query.window), output_field=DateTimeField()
        ),
    )
    # `pk > outer pk` (messages of a conversation are numbered in order under its lock) lets
    # the (conversation, id) index find the later messages; without it PostgreSQL tends to
    # intersect with the created_at index, which costs a scan of the whole window per row.
    after = Message.objects.filter(
        conversation=OuterRef("conversation"),
        pk__gt=OuterRef("pk"),
        created_at__gt=OuterRef("metric_at"),
        created_at__lte=OuterRef("metric_until"),
    )
    depth = (
        after.exclude(direction=Direction.NOTE)
        .order_by()
        .values("conversation")
        .annotate(n=Count("pk"))
        .values("n")
    )
    first_reply = (
        after.filter(direction=Direction.INBOUND).order_by("created_at").values("created_at")[:1]
    )
    handoff = ConversationEvent.objects.filter(
        conversation=OuterRef("conversation"),
        kind=EventKind.HANDED_OFF,
        occurred_at__gt=OuterRef("metric_at"),
        occurred_at__lte=OuterRef("metric_until"),
    )
    opt_out = ConsentEvent.objects.filter(
        contact=OuterRef("contact"),
        action=ConsentAction.WITHDRAWN,
        occurred_at__gt=OuterRef("metric_at"),
        occurred_at__lte=OuterRef("metric_until"),
    )
    return qs.annotate(
        first_reply_at=Subquery(first_reply, output_field=DateTimeField()),
        depth=Coalesce(Subquery(depth, output_field=IntegerField()), 0),
        handed_off=Exists(handoff),
        opted_out=Exists(opt_out),
    )


def _median_seconds(rows: QuerySet) -> dict[Any, float]:
    """Median of `v` (a duration) per `k`, for a queryset of `.values(k=..., v=...)`.

    The ORM compiles the rows; the median is one SQL statement around them.
    """
    # No ORDER BY (Message's default one joins the conversation): the median sorts anyway.
    sql, params = rows.order_by().query.sql_with_params()
    if connection.vendor == "postgresql":
        statement = (
            "SELECT k, percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM v)) "  # noqa: S608 - ORM SQL, params apart
            f"FROM ({sql}) AS rows WHERE v IS NOT NULL GROUP BY k"
        )
    else:
        # SQLite has no percentile: the middle one or two rows of each ordered group.
        # Durations are microseconds there (django_timestamp_diff).
        statement = (
            "SELECT k, AVG(v) / 1000000.0 FROM ("  # noqa: S608 - ORM SQL, params apart
            "SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn, "
            "COUNT(*) OVER (PARTITION BY k) AS n "
            f"FROM ({sql}) AS rows WHERE v IS NOT NULL"
            ") AS ranked WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY k"
        )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return {_key(k): round(float(v), 3) for k, v in cursor.fetchall()}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def message_metrics(query: MetricsQuery, *, group_by: str) -> list[dict[str, Any]]:
    """Per campaign, template, purpose, team or day: the funnel, replies, depth, hand-offs
    and opt-outs of outbound messages. Three queries, whatever the number of rows."""
    columns = _group_columns(group_by)
    messages = outbound_messages(query).filter(_group_filter(group_by))
    rows = (
        messages.values(**columns)
        .annotate(
            messages=Count("pk"),
            sent=Count("pk", filter=Q(sent_at__isnull=False)),
            delivered=Count(
                "pk", filter=Q(status__in=[MessageStatus.DELIVERED, MessageStatus.READ])
            ),
            read=Count("pk", filter=Q(status=MessageStatus.READ)),
            failed=Count("pk", filter=Q(status=MessageStatus.FAILED)),
            replied=Count("pk", filter=Q(first_reply_at__isnull=False)),
            dialog_depth=Avg("depth"),
            handoffs=Count("pk", filter=Q(handed_off=True)),
            opt_outs=Count("pk", filter=Q(opted_out=True)),
        )
        .order_by("key")
    )
    # No IS NOT NULL filter here: it would evaluate the reply subquery twice per row, and
    # _median_seconds skips the rows without a value anyway.
    reply_times = _median_seconds(
        messages.values(
            k=columns["key"],
            v=ExpressionWrapper(F("first_reply_at") - F("metric_at"), DurationField()),
        )
    )
    # The conversation's (latest) hand-off, if it fell in this message's window.
    human_times = _median_seconds(
        messages.filter(
            conversation__handed_off_at__gt=F("metric_at"),
            conversation__handed_off_at__lte=F("metric_until"),
            conversation__first_response_at__gte=F("conversation__handed_off_at"),
        ).values(
            k=columns["key"],
            v=ExpressionWrapper(
                F("conversation__first_response_at") - F("conversation__handed_off_at"),
                DurationField(),
            ),
        )
    )
    result = []
    for row in rows:
        key = _key(row["key"])
        # Reply rate over what reached the provider; a message never sent cannot be answered.
        reached = max(row["sent"], row["delivered"])
        depth = row["dialog_depth"]
        result.append(
            {
                **row,
                "key": key,
                "label": str(row["label"]) if row["label"] is not None else "",
                "reply_rate": _rate(row["replied"], reached),
                "median_reply_seconds": reply_times.get(key),
                "dialog_depth": round(float(depth), 2) if depth is not None else None,
                "median_human_response_seconds": human_times.get(key),
            }
        )
    return [{name: item[name] for name in MESSAGE_FIELDS} for item in result]


def conversation_metrics(query: MetricsQuery, *, group_by: str) -> list[dict[str, Any]]:
    """Per team or day: hand-offs to humans in the period (their events) and the median
    time from a hand-off in the period to the first human response. Two queries."""
    if group_by not in CONVERSATION_GROUPINGS:
        raise ValueError(f"Unknown grouping {group_by!r}")
    if group_by == "team":
        event_columns = {"key": F("conversation__team_id"), "label": F("conversation__team__name")}
        conversation_key: Any = F("team_id")
    else:
        day = TruncDate("occurred_at", tzinfo=dt.UTC)
        event_columns = {"key": day, "label": day}
        conversation_key = TruncDate("handed_off_at", tzinfo=dt.UTC)
    events = (
        ConversationEvent.objects.filter(
            conversation__team_id__in=query.team_ids,
            kind=EventKind.HANDED_OFF,
            occurred_at__gte=query.since,
            occurred_at__lt=query.until,
        )
        .values(**event_columns)
        .annotate(handoffs=Count("pk"))
        .order_by("key")
    )
    responses = _median_seconds(
        Conversation.objects.filter(
            team_id__in=query.team_ids,
            handed_off_at__gte=query.since,
            handed_off_at__lt=query.until,
            first_response_at__gte=F("handed_off_at"),
        ).values(
            k=conversation_key,
            v=ExpressionWrapper(F("first_response_at") - F("handed_off_at"), DurationField()),
        )
    )
    return [
        {
            "key": _key(row["key"]),
            "label": str(row["label"]),
            "handoffs": row["handoffs"],
            "median_human_response_seconds": responses.get(_key(row["key"])),
        }
        for row in events
    ]


def consent_growth(query: MetricsQuery, *, group_by: str = "purpose") -> list[dict[str, Any]]:
    """Per purpose or day: consents granted (directly or confirmed) minus withdrawn in the
    period. One query."""
    if group_by not in CONSENT_GROUPINGS:
        raise ValueError(f"Unknown grouping {group_by!r}")
    if group_by == "purpose":
        columns: dict[str, Any] = {"key": F("purpose_id"), "label": F("purpose__name")}
    else:
        day = TruncDate("occurred_at", tzinfo=dt.UTC)
        columns = {"key": day, "label": day}
    events = ConsentEvent.objects.filter(
        team_id__in=query.team_ids, occurred_at__gte=query.since, occurred_at__lt=query.until
    )
    if query.purpose_id is not None:
        events = events.filter(purpose_id=query.purpose_id)
    rows = (
        events.values(**columns)
        .annotate(
            grants=Count("pk", filter=Q(action__in=GRANT_ACTIONS)),
            withdrawals=Count("pk", filter=Q(action=ConsentAction.WITHDRAWN)),
        )
        .filter(Q(grants__gt=0) | Q(withdrawals__gt=0))
        .order_by("key")
    )
    return [
        {
            "key": _key(row["key"]),
            "label": str(row["label"]),
            "grants": row["grants"],
            "withdrawals": row["withdrawals"],
            "growth": row["grants"] - row["withdrawals"],
        }
        for row in rows
    ]


def daily_series(query: MetricsQuery) -> list[dict[str, Any]]:
    """One row per day with any activity: the message figures, hand-offs and consent
    growth side by side (for the dashboard's time series and the API)."""
    days: dict[str, dict[str, Any]] = {}
    empty = {"handoffs_total": 0, "consent_growth": 0}
    for row in message_metrics(query, group_by="day"):
        days[row["key"]] = {**row, **empty}
    for row in conversation_metrics(query, group_by="day"):
        days.setdefault(row["key"], _empty_day(row["key"]))["handoffs_total"] = row["handoffs"]
    for row in consent_growth(query, group_by="day"):
        days.setdefault(row["key"], _empty_day(row["key"]))["consent_growth"] = row["growth"]
    return [days[key] for key in sorted(days)]


SERIES_FIELDS: Final = (*MESSAGE_FIELDS, "handoffs_total", "consent_growth")


def _empty_day(key: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SERIES_FIELDS, 0)
    row.update(
        key=key,
        label=key,
        reply_rate=None,
        median_reply_seconds=None,
        dialog_depth=None,
        median_human_response_seconds=None,
    )
    return row
