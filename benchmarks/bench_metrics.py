"""Dialog metrics: one team's 90-day view, as the admin dashboard reads it
(messaging.metrics.dashboard: message figures per campaign and per day, the daily series,
hand-offs, consent growth), plus each query on its own and the API's team overview.
Every figure is checked against hand-written SQL first.

Data are generated inside PostgreSQL (INSERT ... SELECT generate_series): two teams, one
conversation per contact with ten messages each over the last year, outbound and inbound in
turn (every third conversation is never answered), a campaign message opening each
conversation, hand-offs with a human response in every 25th and a withdrawal in every 50th.
Ledger rows carry placeholder hashes because only the figures are read here.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Final

from django.db import connection
from django.utils import timezone

from benchmarks.harness import Figure, median, time_runs

TARGET_MS = 500.0
# The test suite's smoke run (run.py --smoke) needs enough data for every figure to be non-zero.
SMOKE_SIZE = 2000
MESSAGES_PER_CONVERSATION = 10
PERIOD_DAYS = 90
# Team overview figures compared one by one; dashboard day rows summed and compared.
TEAM_CHECKED: Final = (
    "messages",
    "replied",
    "dialog_depth",
    "handoffs",
    "opt_outs",
    "median_reply_seconds",
)
DAY_SUMMED: Final = ("messages", "replied", "handoffs", "opt_outs")


def _populate(size: int) -> int:
    conversations = max(size // MESSAGES_PER_CONVERSATION, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_team (name, slug, default_language, default_time_zone, is_active,
                                  created_at, updated_at)
            VALUES ('Bench Metrics A', 'bench-metrics-a', 'de', 'Europe/Berlin', true, now(),
                    now()),
                   ('Bench Metrics B', 'bench-metrics-b', 'de', 'Europe/Berlin', true, now(),
                    now())
            RETURNING id
            """
        )
        team_a, team_b = (row[0] for row in cursor.fetchall())
        cursor.execute(
            """
            INSERT INTO messaging_channelaccount (team_id, name, slug, channel, provider,
                address, external_id, credentials_env, first_response_minutes,
                messages_per_second, is_active, created_at, updated_at)
            VALUES (%s, 'Metrics A', 'bench-metrics-a', 'whatsapp', 'console', '+4930123456',
                    '', '', 60, 20, true, now(), now()),
                   (%s, 'Metrics B', 'bench-metrics-b', 'whatsapp', 'console', '+4930123457',
                    '', '', 60, 20, true, now(), now())
            RETURNING id
            """,
            [team_a, team_b],
        )
        account_a, account_b = (row[0] for row in cursor.fetchall())
        cursor.execute(
            """
            INSERT INTO consent_purpose (team_id, key, name, description, legal_basis,
                is_marketing, allowed_channels, double_opt_in_channels, validity_months,
                reconfirm_days_before, frequency_cap, frequency_period_hours, opt_in_keywords,
                is_active, created_at, updated_at)
            SELECT t, 'newsletter', 'Newsletter', '', 'consent', true, '["whatsapp"]', '[]', 24,
                   30, NULL, 24, '[]', true, now(), now()
            FROM unnest(ARRAY[%s, %s]::bigint[]) AS t
            """,
            [team_a, team_b],
        )
        # Contact g belongs to team A when g is even; its conversation starts g/n of a year ago.
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT CASE WHEN g %% 2 = 0 THEN %s ELSE %s END, '', 'Vorname' || g,
                   'Nachname' || g, 'de', 'Europe/Berlin', '', '', 'whatsapp', '{}'::jsonb,
                   'M' || g, false, NULL, now(), now()
            FROM generate_series(1, %s) AS g
            """,
            [team_a, team_b, conversations],
        )
        cursor.execute(
            """
            INSERT INTO messaging_conversation (team_id, contact_id, account_id, channel, status,
                handler, last_sequence, head_hash, handed_off_at, first_response_at, created_at,
                updated_at)
            SELECT c.team_id, c.id, CASE WHEN c.team_id = %s THEN %s ELSE %s END, 'whatsapp',
                   'open', CASE WHEN c.id %% 25 = 0 THEN 'human' ELSE 'bot' END, 0, '',
                   CASE WHEN c.id %% 25 = 0 THEN s.at + interval '3 hours' END,
                   CASE WHEN c.id %% 25 = 0
                        THEN s.at + interval '3 hours' + make_interval(mins => (c.id %% 60)::int)
                   END,
                   s.at, now()
            FROM crm_contact c
            CROSS JOIN LATERAL (SELECT now() - interval '365 days'
                                + (c.id %% %s) * interval '365 days' / %s AS at) s
            WHERE c.team_id IN (%s, %s)
            """,
            [team_a, account_a, account_b, conversations, conversations, team_a, team_b],
        )
        cursor.execute(
            """
            INSERT INTO messaging_message (conversation_id, team_id, contact_id, account_id,
                channel, direction, kind, variables, subject, body, body_hash, sender_kind,
                origin, gate_decision, idempotency_key, status, created_at, sent_at,
                delivered_at, read_at, failed_at, error_code, error_detail, purpose_id)
            SELECT v.id, v.team_id, v.contact_id, v.account_id, 'whatsapp',
                   CASE WHEN x.inbound THEN 'inbound' ELSE 'outbound' END, 'text', '{}', '',
                   'Hallo', md5(x.g::text) || md5(x.g::text),
                   CASE WHEN x.inbound THEN 'contact' WHEN s.seq = 0 THEN 'campaign'
                        ELSE 'agent' END,
                   CASE WHEN s.seq = 0 THEN 'campaign:' || (v.contact_id %% 20) ELSE '' END,
                   '{}', md5('k' || x.g)::uuid,
                   CASE WHEN x.inbound THEN 'received' WHEN x.g %% 10 = 0 THEN 'failed'
                        WHEN x.g %% 10 < 3 THEN 'sent' WHEN x.g %% 10 < 7 THEN 'delivered'
                        ELSE 'read' END,
                   x.at,
                   CASE WHEN NOT x.inbound AND x.g %% 10 <> 0 THEN x.at + interval '1 second' END,
                   CASE WHEN NOT x.inbound AND x.g %% 10 >= 3 THEN x.at + interval '5 seconds'
                   END,
                   CASE WHEN NOT x.inbound AND x.g %% 10 >= 7 THEN x.at + interval '1 minute' END,
                   CASE WHEN NOT x.inbound AND x.g %% 10 = 0 THEN x.at + interval '2 seconds' END,
                   '', '',
                   CASE WHEN s.seq = 0 THEN p.id END
            FROM messaging_conversation v
            JOIN consent_purpose p ON p.team_id = v.team_id
            CROSS JOIN generate_series(0, %s - 1) AS s(seq)
            CROSS JOIN LATERAL (
                SELECT v.contact_id * %s + s.seq AS g,
                       s.seq %% 2 = 1 AND v.contact_id %% 3 <> 0 AS inbound,
                       v.created_at + s.seq * interval '47 minutes' AS at
            ) x
            WHERE v.team_id IN (%s, %s)
            """,
            [MESSAGES_PER_CONVERSATION, MESSAGES_PER_CONVERSATION, team_a, team_b],
        )
        cursor.execute(
            """
            INSERT INTO messaging_conversationevent (conversation_id, sequence, kind, message_id,
                actor_id, actor_label, data, occurred_at, recorded_at, previous_hash, hash)
            SELECT id, 1, 'handed_off', NULL, NULL, 'system', '{}', handed_off_at, handed_off_at,
                   repeat('0', 64), md5('h' || id) || md5(id || 'h')
            FROM messaging_conversation
            WHERE handed_off_at IS NOT NULL AND team_id IN (%s, %s)
            """,
            [team_a, team_b],
        )
        cursor.execute(
            """
            WITH withdrawing AS (
                SELECT v.contact_id, v.team_id, p.id AS purpose_id,
                       v.created_at + interval '1 day' AS at
                FROM messaging_conversation v JOIN consent_purpose p ON p.team_id = v.team_id
                WHERE v.contact_id %% 50 = 0 AND v.team_id IN (%s, %s)
            ), evidence AS (
                INSERT INTO consent_consentevidence (consent_text_id, ip_address, user_agent,
                    source_url, message_text, inbound_message_ref, note, collected_at, actor_id,
                    actor_label, digest, erased_at)
                SELECT NULL, NULL, '', '', 'STOP', '', contact_id::text, NULL, NULL, '',
                       md5(contact_id::text) || md5(contact_id::text), NULL
                FROM withdrawing
                RETURNING id, note
            )
            INSERT INTO consent_consentevent (contact_id, team_id, purpose_id, channel, action,
                source, evidence_id, evidence_digest, occurred_at, recorded_at, sequence,
                previous_hash, hash)
            SELECT w.contact_id, w.team_id, w.purpose_id, 'whatsapp', 'withdrawn', 'keyword',
                   e.id, md5(e.note) || md5(e.note), w.at, w.at, 1, repeat('0', 64),
                   md5('w' || e.id) || md5(e.id || 'w')
            FROM withdrawing w JOIN evidence e ON e.note = w.contact_id::text
            """,
            [team_a, team_b],
        )
        cursor.execute("ANALYZE")
    return team_a


def _vacuum() -> None:
    # A table in steady state: autovacuum has set the visibility map, so the covering index's
    # look-ahead reads the index only (right after a bulk load it would still visit the heap).
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE messaging_message")


def _expected(team_id: int, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """The team's figures in hand-written SQL (LATERAL look-ahead, written apart from the
    ORM's), so a fast wrong answer cannot pass."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(f.first_reply), round(avg(f.depth), 2),
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM messaging_conversationevent e
                       WHERE e.conversation_id = m.conversation_id AND e.kind = 'handed_off'
                         AND e.occurred_at > m.at AND e.occurred_at <= m.at + interval '7 days')),
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM consent_consentevent c
                       WHERE c.contact_id = m.contact_id AND c.action = 'withdrawn'
                         AND c.occurred_at > m.at AND c.occurred_at <= m.at + interval '7 days')),
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY EXTRACT(EPOCH FROM f.first_reply - m.at)),
                   count(*) FILTER (WHERE m.origin LIKE 'campaign:%%')
            FROM (SELECT id, conversation_id, contact_id, origin,
                         coalesce(sent_at, created_at) AS at
                  FROM messaging_message
                  WHERE team_id = %s AND direction = 'outbound' AND status <> 'refused'
                    AND created_at >= %s AND created_at < %s) m
            CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE r.direction <> 'note') AS depth,
                       min(r.created_at) FILTER (WHERE r.direction = 'inbound') AS first_reply
                FROM messaging_message r
                WHERE r.conversation_id = m.conversation_id AND r.id > m.id
                  AND r.created_at > m.at AND r.created_at <= m.at + interval '7 days') f
            """,
            [team_id, since, until],
        )
        row = cursor.fetchone()
    names = ("messages", "replied", "dialog_depth", "handoffs", "opt_outs", "median_reply_seconds")
    expected = dict(zip(names, row[:-1], strict=True))
    expected["dialog_depth"] = float(expected["dialog_depth"])
    expected["median_reply_seconds"] = round(float(expected["median_reply_seconds"]), 3)
    expected["campaign_messages"] = row[-1]
    return expected


def _check(expected: dict[str, Any], team_row: dict[str, Any], board: Any) -> None:
    """The team overview must equal the hand-written figures; the dashboard's days and
    campaigns must add up to them."""
    wrong = {name: team_row[name] for name in TEAM_CHECKED if team_row[name] != expected[name]}
    days = {name: sum(day[name] for day in board.days) for name in DAY_SUMMED}
    wrong |= {f"days.{name}": value for name, value in days.items() if value != expected[name]}
    campaigns = sum(row["messages"] for row in board.groups)
    if campaigns != expected["campaign_messages"]:
        wrong["campaigns.messages"] = campaigns
    if wrong:
        raise SystemExit(f"metrics differ from hand-written SQL: {wrong} (expected {expected})")


def _reference_ms() -> float:
    """A fixed CPU-bound statement, timed beside the figures: it shows how loaded the
    machine was (about 70 ms on an idle core)."""
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute("SELECT count(*) FROM generate_series(1, 1000000)")
        cursor.fetchone()
        return (time.perf_counter() - started) * 1000


def run(size: int, runs: int) -> list[Figure]:
    from messaging import metrics

    team_id = _populate(size)
    _vacuum()
    now = timezone.now()
    query = metrics.MetricsQuery(
        team_ids=(team_id,), since=now - dt.timedelta(days=PERIOD_DAYS), until=now
    )
    # What the admin dashboard calls (its default grouping), and the API's team overview.
    views: dict[str, Callable[[], Any]] = {
        "metrics dashboard (team, 90 days, all queries)": lambda: metrics.dashboard(
            query, group_by="campaign"
        ),
        "  message figures (campaign + day, 1 query)": lambda: metrics.message_figures(
            query, ("campaign", "day")
        ),
        "  API overview (team, all figures)": lambda: metrics.message_metrics(
            query, group_by="team"
        ),
        "  API timeseries (daily series)": lambda: metrics.daily_series(query),
        "  hand-offs per team": lambda: metrics.conversation_metrics(query, group_by="team"),
        "  consent growth per purpose": lambda: metrics.consent_growth(query),
    }
    expected = _expected(team_id, query.since, query.until)
    board = metrics.dashboard(query, group_by="campaign")
    [team_row] = metrics.message_metrics(query, group_by="team")
    _check(expected, team_row, board)
    figures = []
    for title, view in views.items():
        reference = _reference_ms()
        timings = time_runs(view, runs)
        milliseconds = median(timings) * 1000
        figures.append(
            Figure(
                name=title,
                size=size,
                unit="ms",
                median=milliseconds,
                target=TARGET_MS,
                higher_is_better=False,
                runs=[t * 1000 for t in timings],
                notes={
                    **{name: team_row[name] for name in TEAM_CHECKED},
                    "verified_against_sql": True,
                    "outbound_messages_in_view": expected["messages"],
                    "us_per_outbound_message": round(milliseconds * 1000 / expected["messages"], 2),
                    "load_reference_ms": round(reference, 1),
                },
            )
        )
    return figures
