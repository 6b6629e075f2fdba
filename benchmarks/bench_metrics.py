"""Dialog metrics: one team's 90-day overview (messaging.metrics.message_metrics grouped by
team, every figure: funnel, replies and their median, depth, hand-offs, opt-outs).

Data are generated inside PostgreSQL (INSERT ... SELECT generate_series): two teams, one
conversation per contact with ten messages each over the last year, outbound and inbound in
turn (every third conversation is never answered), a campaign message opening each
conversation, hand-offs with a human response in every 25th and a withdrawal in every 50th.
Ledger rows carry placeholder hashes because only the figures are read here.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.utils import timezone

from benchmarks.harness import Figure, median, time_runs

TARGET_MS = 500.0
MESSAGES_PER_CONVERSATION = 10
PERIOD_DAYS = 90


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


def _expected(team_id: int, since: dt.datetime, until: dt.datetime) -> tuple[int, int]:
    """Outbound messages and replied ones in hand-written SQL, so a wrong answer cannot pass."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE EXISTS (
                SELECT 1 FROM messaging_message r
                WHERE r.conversation_id = m.conversation_id AND r.direction = 'inbound'
                  AND r.created_at > coalesce(m.sent_at, m.created_at)
                  AND r.created_at <= coalesce(m.sent_at, m.created_at) + interval '7 days'))
            FROM messaging_message m
            WHERE m.team_id = %s AND m.direction = 'outbound' AND m.status <> 'refused'
              AND m.created_at >= %s AND m.created_at < %s
            """,
            [team_id, since, until],
        )
        return cursor.fetchone()


def run(size: int, runs: int) -> list[Figure]:
    from messaging.metrics import MetricsQuery, message_metrics

    team_id = _populate(size)
    now = timezone.now()
    query = MetricsQuery(team_ids=(team_id,), since=now - dt.timedelta(days=PERIOD_DAYS), until=now)
    [row] = message_metrics(query, group_by="team")
    expected = _expected(team_id, query.since, query.until)
    if (row["messages"], row["replied"]) != expected:
        raise SystemExit(f"metrics {row['messages'], row['replied']} != expected {expected}")
    timings = time_runs(lambda: message_metrics(query, group_by="team"), runs)
    return [
        Figure(
            name="metrics overview (team, 90 days, all figures)",
            size=size,
            unit="ms",
            median=median(timings) * 1000,
            target=TARGET_MS,
            higher_is_better=False,
            runs=[t * 1000 for t in timings],
            notes={
                "messages": row["messages"],
                "replied": row["replied"],
                "handoffs": row["handoffs"],
                "opt_outs": row["opt_outs"],
            },
        )
    ]
