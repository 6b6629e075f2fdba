"""Dialog metrics: reads only, computed in SQL aggregations (no per-row Python).

Every figure is attributed to an outbound message and looks `window_days` ahead of it:
a reply is the contact's first inbound message in that window, dialog depth counts the
messages that followed, a hand-off or an opt-out (consent withdrawal) counts when it
happened in that window. Each message's outcome is computed once per statement and
aggregated under every grouping asked for, so the dashboard's table and its days cost one
statement. On PostgreSQL one LATERAL look-ahead per message (covering (conversation, id)
index only) gives both depth and first reply, and hand-offs and opt-outs are joined as sets;
SQLite, which has no LATERAL, runs the same figures as correlated subqueries (the portable
form, which tests compare with the PostgreSQL one). Medians come from PostgreSQL's
percentile_cont, on SQLite from a MEDIAN aggregate registered on the connection.
Callers pass the team ids they may see (crm.selectors.visible_team_ids): nothing here scopes.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate

from consent.models import ConsentAction, ConsentEvent
from messaging.models import (
    Campaign,
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
# PostgreSQL's work_mem for the message figures statement: it keeps its outcome rows (about
# 200 bytes a message, twice: the period's messages and their outcomes) and sorts them per
# grouping. At the default 4 MB one team's 90 days at 1,000,000 messages (80,000 outbound)
# went to temporary files three times; set per transaction, so other statements keep 4 MB.
FIGURES_WORK_MEM: Final = "64MB"


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

    def __post_init__(self) -> None:
        # The API and the admin form accept 1 to 90 days; a window that ends before it starts
        # is a programming error (PostgreSQL's ranges would refuse it in the middle of SQL).
        if self.window_days < 1:
            raise ValueError(f"window_days must be at least 1, not {self.window_days}")

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(days=self.window_days)


def _group_columns(group_by: str, *, prefix: str = "") -> dict[str, Any]:
    """The key and label expressions of a grouping, on a Message (prefix "") or on a model
    that reaches the message's fields through `prefix`. A message outside the grouping's
    dimension (no campaign, template or purpose) has no key and is left out of its rows."""
    if group_by == "campaign":
        campaign = Case(
            When(
                **{f"{prefix}origin__startswith": CAMPAIGN_ORIGIN_PREFIX}, then=F(f"{prefix}origin")
            )
        )
        return {"key": campaign, "label": campaign}
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


def _key(value: Any) -> Any:
    # Days come back as date objects from the ORM and as text from raw SQLite rows.
    if isinstance(value, dt.date | str):
        return str(value)
    return value


def _period_messages(query: MetricsQuery) -> QuerySet[Message]:
    """Accepted outbound messages created in the period, with the start and end of the
    window after each (`metric_at`, `metric_until`)."""
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
    return qs.annotate(
        metric_at=Coalesce("sent_at", "created_at"),
        metric_until=ExpressionWrapper(
            Coalesce("sent_at", "created_at") + Value(query.window), output_field=DateTimeField()
        ),
    )


def outbound_messages(query: MetricsQuery) -> QuerySet[Message]:
    """Accepted outbound messages created in the period, each annotated with its outcome
    (first reply time, depth, hand-off, opt-out) in the window after it."""
    qs = _period_messages(query)
    # `pk > outer pk` (messages of a conversation are numbered in order under its lock) lets
    # the covering (conversation, id) index find the later messages without the table;
    # without it PostgreSQL tends to intersect with the created_at index, which costs a scan
    # of the whole window per row.
    after = Message.objects.filter(
        conversation=OuterRef("conversation"),
        pk__gt=OuterRef("pk"),
        created_at__gt=OuterRef("metric_at"),
        created_at__lte=OuterRef("metric_until"),
    )
    # Aggregates over the conversation (one group), not ORDER BY ... LIMIT 1: no sort per row.
    later = after.order_by().values("conversation")
    depth = later.exclude(direction=Direction.NOTE).annotate(n=Count("pk")).values("n")
    first_reply = (
        later.filter(direction=Direction.INBOUND).annotate(at=Min("created_at")).values("at")
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


def _row_columns(groupings: Sequence[str]) -> dict[str, Any]:
    """The key of each grouping, and its label where that is another column (a campaign's
    and a day's label is their key, computed once)."""
    columns: dict[str, Any] = {}
    for group_by in groupings:
        group = _group_columns(group_by)
        columns[f"key_{group_by}"] = group["key"]
        if group["label"] is not group["key"]:
            columns[f"label_{group_by}"] = group["label"]
    return columns


def _label_column(group_by: str) -> str:
    """The outcome row column that holds the label of `group_by` (see _row_columns)."""
    group = _group_columns(group_by)
    return f"key_{group_by}" if group["label"] is group["key"] else f"label_{group_by}"


def _human_response() -> Case:
    """The conversation's (latest) hand-off time to a human response, if that hand-off fell
    in the message's window (the portable form; _outcomes_sql_postgresql writes it in SQL)."""
    return Case(
        When(
            Q(
                conversation__handed_off_at__gt=F("metric_at"),
                conversation__handed_off_at__lte=F("metric_until"),
                conversation__first_response_at__gte=F("conversation__handed_off_at"),
            ),
            then=F("conversation__first_response_at") - F("conversation__handed_off_at"),
        ),
        output_field=DurationField(),
    )


def _outcome_rows(query: MetricsQuery, groupings: Sequence[str]) -> QuerySet[Message]:
    """One row per outbound message: its key and label under each grouping and what the
    figures aggregate. Each outcome subquery appears once, so it runs once per message.
    The portable form (SQLite); PostgreSQL runs _outcomes_sql_postgresql."""
    # No ORDER BY: Message's default one joins the conversation, and the rows are grouped.
    return (
        outbound_messages(query)
        .values(
            "sent_at",
            "status",
            "depth",
            "handed_off",
            "opted_out",
            **_row_columns(groupings),
            human_response=_human_response(),
            reply=ExpressionWrapper(F("first_reply_at") - F("metric_at"), DurationField()),
        )
        .order_by()
    )


def _outcomes_sql_portable(
    query: MetricsQuery, groupings: Sequence[str]
) -> tuple[str, Sequence[Any]]:
    """The outcome rows as correlated subqueries per message (any database)."""
    return _outcome_rows(query, groupings).query.sql_with_params()


def _outcomes_sql_postgresql(
    query: MetricsQuery, groupings: Sequence[str]
) -> tuple[str, Sequence[Any]]:
    """The outcome rows with the columns of _outcome_rows, set-based where PostgreSQL can:

    - the period's outbound messages are read once, from their covering partial index
      (msg_message_outbound_period) without visiting the table;
    - one LATERAL aggregate per message reads its later messages once for both depth and
      first reply (as correlated subqueries they were two scans of the same index range),
      the messages taken in (conversation, id) order so that consecutive look-aheads read
      the same index pages (in the order the period's scan returns them, each one went to
      other pages);
    - hand-offs and opt-outs join one row per conversation and per contact, its events'
      instants as a multirange that the message's window overlaps or not (as semi-joins
      they read the period's messages twice more, kept in a CTE);
    - the human response joins only the conversations that were handed off and answered
      (joining every conversation hashed the whole table, 100,000 rows at 1,000,000
      messages, for the few per cent that can have one).

    The figures are those of _outcomes_sql_portable; tests compare the two on PostgreSQL.
    """
    row_columns = _row_columns(groupings)
    # A subquery with ORDER BY is planned on its own and its order kept by the LATERAL join.
    base_sql, base_params = (
        _period_messages(query)
        .values(
            "id",
            "conversation_id",
            "contact_id",
            "sent_at",
            "status",
            "metric_at",
            "metric_until",
            **row_columns,
        )
        .order_by("conversation_id", "id")
        .query.sql_with_params()
    )
    message = Message._meta.db_table
    conversation = Conversation._meta.db_table
    event = ConversationEvent._meta.db_table
    consent = ConsentEvent._meta.db_table
    # Only what the figures read leaves the statement's outcome rows (they are kept for
    # every grouping's aggregation), not the ids and windows the look-aheads need.
    columns = ", ".join(f"b.{column}" for column in ("sent_at", "status", *row_columns))
    # (metric_at, metric_until] is the window; the CASE builds it only for the few messages
    # whose conversation or contact has such events at all.
    window = "tstzrange(b.metric_at, b.metric_until, '(]')"
    sql = (
        # Answered hand-offs on their own, from their partial index: joined directly, the
        # conversations were merge-joined in the messages' order, read whole by primary key.
        # A message's conversation is of the message's team (conversations never move), so
        # the teams' own are all it can join.
        "WITH answered AS MATERIALIZED (SELECT v.id, v.handed_off_at, v.first_response_at "  # noqa: S608 - ORM SQL and table names, values are params
        f"FROM {conversation} v WHERE v.team_id = ANY(%s) "
        "AND v.handed_off_at IS NOT NULL AND v.first_response_at >= v.handed_off_at) "
        f"SELECT {columns}, later.depth, later.first_reply - b.metric_at AS reply, "
        f"CASE WHEN h.instants IS NULL THEN false ELSE h.instants && {window} END AS handed_off, "
        f"CASE WHEN o.instants IS NULL THEN false ELSE o.instants && {window} END AS opted_out, "
        "CASE WHEN a.handed_off_at > b.metric_at AND a.handed_off_at <= b.metric_until "
        "THEN a.first_response_at - a.handed_off_at END AS human_response "
        f"FROM ({base_sql}) b CROSS JOIN LATERAL ("
        "SELECT COUNT(*) FILTER (WHERE r.direction <> %s) AS depth, "
        "MIN(r.created_at) FILTER (WHERE r.direction = %s) AS first_reply "
        # `r.id > b.id` bounds the covering (conversation, id) index range (outbound_messages).
        f"FROM {message} r WHERE r.conversation_id = b.conversation_id AND r.id > b.id "
        "AND r.created_at > b.metric_at AND r.created_at <= b.metric_until) later "
        "LEFT JOIN (SELECT e.conversation_id, "
        "range_agg(tstzrange(e.occurred_at, e.occurred_at, '[]')) AS instants "
        f"FROM {event} e WHERE e.kind = %s GROUP BY e.conversation_id) h "
        "ON h.conversation_id = b.conversation_id "
        "LEFT JOIN (SELECT c.contact_id, "
        "range_agg(tstzrange(c.occurred_at, c.occurred_at, '[]')) AS instants "
        f"FROM {consent} c WHERE c.action = %s GROUP BY c.contact_id) o "
        "ON o.contact_id = b.contact_id "
        "LEFT JOIN answered a ON a.id = b.conversation_id"
    )
    params = [
        list(query.team_ids),
        *base_params,
        Direction.NOTE,
        Direction.INBOUND,
        EventKind.HANDED_OFF,
        ConsentAction.WITHDRAWN,
    ]
    return sql, params


class _SQLiteMedian:
    """MEDIAN() for SQLite, which has no percentile function (PostgreSQL uses its own)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _median_seconds_sql(column: str) -> str:
    """SQL for the median of a duration column in seconds (NULLs are left out)."""
    if connection.vendor == "postgresql":
        return f"percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM {column}))"
    connection.ensure_connection()
    connection.connection.create_aggregate("metrics_median", 1, _SQLiteMedian)
    # Durations are microseconds there (django_timestamp_diff).
    return f"metrics_median({column}) / 1000000.0"


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None


def _median_seconds(rows: QuerySet) -> dict[Any, float]:
    """Median of `v` (a duration) per `k`, for a queryset of `.values(k=..., v=...)`.

    The ORM compiles the rows; the median is one SQL statement around them.
    """
    # No ORDER BY (Message's default one joins the conversation): the median sorts anyway.
    sql, params = rows.order_by().query.sql_with_params()
    statement = f"SELECT k, {_median_seconds_sql('v')} FROM ({sql}) AS rows GROUP BY k"  # noqa: S608 - ORM SQL, params apart
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return {_key(k): _seconds(v) for k, v in cursor.fetchall()}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _message_figures_sql(groupings: Sequence[str]) -> tuple[str, list[Any]]:
    """The aggregation over the outcome rows (CTE `outcomes`): one SELECT per grouping,
    joined by UNION ALL, keys and labels as text (their types differ between groupings)."""
    selects = []
    params: list[Any] = []
    for group_by in groupings:
        key, label = f"key_{group_by}", _label_column(group_by)
        grouped = key if label == key else f"{key}, {label}"
        selects.append(
            "SELECT %s AS grouping, "  # noqa: S608 - column names are ours, values are params
            f"CAST({key} AS TEXT) AS k, CAST({label} AS TEXT) AS l, COUNT(*), "
            "COUNT(sent_at), "
            "SUM(CASE WHEN status IN (%s, %s) THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status = %s THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status = %s THEN 1 ELSE 0 END), "
            "COUNT(reply), AVG(depth), "
            "SUM(CASE WHEN handed_off THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN opted_out THEN 1 ELSE 0 END), "
            f"{_median_seconds_sql('reply')}, {_median_seconds_sql('human_response')} "
            f"FROM outcomes WHERE {key} IS NOT NULL GROUP BY {grouped}"
        )
        params += [
            group_by,
            MessageStatus.DELIVERED,
            MessageStatus.READ,
            MessageStatus.READ,
            MessageStatus.FAILED,
        ]
    return " UNION ALL ".join(selects), params


def _message_row(group_by: str, row: Sequence[Any]) -> dict[str, Any]:
    (_grouping, key, label, messages, sent, delivered, read, failed, replied, depth,
     handoffs, opt_outs, reply_median, human_median) = row  # fmt: skip
    return {
        # Team, template and purpose ids come back as text (see _message_figures_sql).
        "key": key if group_by in ("campaign", "day") else int(key),
        "label": label if label is not None else "",
        "messages": messages,
        "sent": sent,
        "delivered": delivered,
        "read": read,
        "failed": failed,
        "replied": replied,
        # Reply rate over what reached the provider; a message never sent cannot be answered.
        "reply_rate": _rate(replied, max(sent, delivered)),
        "median_reply_seconds": _seconds(reply_median),
        "dialog_depth": round(float(depth), 2) if depth is not None else None,
        "handoffs": handoffs,
        "median_human_response_seconds": _seconds(human_median),
        "opt_outs": opt_outs,
    }


def message_figures(
    query: MetricsQuery, groupings: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The message figures under several groupings at once (the dashboard's table and its
    days): one statement, each message's outcome computed once, whatever the number of
    groupings or rows (on PostgreSQL a transaction-local work_mem, no JIT and no parallel workers
    are set before it)."""
    _check_groupings(groupings)
    if connection.vendor != "postgresql":
        return _message_figures(query, groupings, outcomes_sql=_outcomes_sql_portable)
    # set_config(..., true) is SET LOCAL: it ends with the transaction, here its own one, or
    # the caller's if there is one (no savepoint: this only reads).
    # JIT is off for it: from about 1,000,000 messages its estimated cost passes jit_above_cost,
    # and compiling its expressions took longer (about 80 ms) than they then saved, as its time
    # goes to index look-ups and sorts (past jit_optimize_above_cost compiling costs far more).
    # No parallel workers either: the LATERAL look-ahead (most of the time) cannot run in them,
    # its outer references are parameters PostgreSQL 15 keeps to the leader, so only the
    # period's scan would; measured no faster, and its Gather Merge waits on every worker
    # when the cores are busy.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true), "
            "set_config('max_parallel_workers_per_gather', '0', true)",
            [FIGURES_WORK_MEM],
        )
        return _message_figures(query, groupings, outcomes_sql=_outcomes_sql_postgresql)


def _check_groupings(groupings: Sequence[str]) -> None:
    for group_by in groupings:
        if group_by not in GROUPINGS:
            raise ValueError(f"Unknown grouping {group_by!r}")


def _message_figures(
    query: MetricsQuery,
    groupings: Sequence[str],
    *,
    outcomes_sql: Callable[[MetricsQuery, Sequence[str]], tuple[str, Sequence[Any]]],
) -> dict[str, list[dict[str, Any]]]:
    groupings = tuple(dict.fromkeys(groupings))
    rows_sql, rows_params = outcomes_sql(query, groupings)
    figures_sql, figures_params = _message_figures_sql(groupings)
    result: dict[str, list[dict[str, Any]]] = {group_by: [] for group_by in groupings}
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH outcomes AS ({rows_sql}) {figures_sql}",
            [*rows_params, *figures_params],
        )
        for row in cursor.fetchall():
            result[row[0]].append(_message_row(row[0], row))
    for rows in result.values():
        rows.sort(key=lambda row: row["key"])
    if result.get("campaign"):
        _name_campaigns(result["campaign"])
    return result


def _campaign_id(row: dict[str, Any]) -> int | None:
    suffix = row["key"].removeprefix(CAMPAIGN_ORIGIN_PREFIX)
    return int(suffix) if suffix.isdigit() else None


def _name_campaigns(rows: list[dict[str, Any]]) -> None:
    """Label campaign rows with the campaign's name (one query); the key stays the origin."""
    names = dict(
        Campaign.objects.filter(pk__in={_campaign_id(row) for row in rows}).values_list(
            "pk", "name"
        )
    )
    for row in rows:
        row["label"] = names.get(_campaign_id(row), row["label"])


def message_metrics(query: MetricsQuery, *, group_by: str) -> list[dict[str, Any]]:
    """Per campaign, template, purpose, team or day: the funnel, replies, depth, hand-offs
    and opt-outs of outbound messages. One query, whatever the number of rows."""
    return message_figures(query, (group_by,))[group_by]


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


SERIES_FIELDS: Final = (*MESSAGE_FIELDS, "handoffs_total", "consent_growth")


def _daily_rows(query: MetricsQuery, message_days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The message figures per day with the day's hand-offs and consent growth beside them."""
    days: dict[str, dict[str, Any]] = {}
    empty = {"handoffs_total": 0, "consent_growth": 0}
    for row in message_days:
        days[row["key"]] = {**row, **empty}
    for row in conversation_metrics(query, group_by="day"):
        days.setdefault(row["key"], _empty_day(row["key"]))["handoffs_total"] = row["handoffs"]
    for row in consent_growth(query, group_by="day"):
        days.setdefault(row["key"], _empty_day(row["key"]))["consent_growth"] = row["growth"]
    return [days[key] for key in sorted(days)]


def daily_series(query: MetricsQuery) -> list[dict[str, Any]]:
    """One row per day with any activity: the message figures, hand-offs and consent
    growth side by side (for the dashboard's time series and the API). Four queries."""
    return _daily_rows(query, message_metrics(query, group_by="day"))


@dataclass(frozen=True)
class Dashboard:
    """Everything the metrics dashboard shows for one query."""

    groups: list[dict[str, Any]]
    days: list[dict[str, Any]]
    handoffs: list[dict[str, Any]]
    consent: list[dict[str, Any]]


def dashboard(query: MetricsQuery, *, group_by: str) -> Dashboard:
    """The dashboard's figures: message figures per `group_by` and per day (one statement
    for both), the daily series, hand-offs per team and consent growth per purpose.
    Eight queries (seven without campaign rows), whatever the number of messages or rows;
    on PostgreSQL one more sets the figures statement's work_mem, JIT and parallelism."""
    figures = message_figures(query, (group_by, "day"))
    return Dashboard(
        groups=figures[group_by],
        days=_daily_rows(query, figures["day"]),
        handoffs=conversation_metrics(query, group_by="team"),
        consent=consent_growth(query),
    )


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
