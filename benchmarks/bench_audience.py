"""Audience count: contacts with a current grant for purpose + channel, team-scoped and
unsuppressed, through the real selector (consent.selectors.contacts_with_grant).

Data are generated inside PostgreSQL (generate_series), so building a million contacts takes
seconds; events carry placeholder hashes because only the projection is queried here.
"""

from __future__ import annotations

from django.db import connection

from benchmarks.harness import Figure, median, time_runs

TARGET_MS = 100.0


def _populate(size: int) -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_team (name, slug, default_language, default_time_zone, is_active,
                                  created_at, updated_at)
            VALUES ('Bench A', 'bench-a', 'de', 'Europe/Berlin', true, now(), now()),
                   ('Bench B', 'bench-b', 'de', 'Europe/Berlin', true, now(), now())
            RETURNING id
            """
        )
        team_a, team_b = (row[0] for row in cursor.fetchall())
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT CASE WHEN g %% 10 = 0 THEN %s ELSE %s END, '', 'Vorname' || g,
                   'Nachname' || g, CASE WHEN g %% 3 = 0 THEN 'en' ELSE 'de' END,
                   'Europe/Berlin', '', '', 'email', '{}'::jsonb, 'EXT' || g, g %% 100 = 7, NULL,
                   now() - make_interval(secs => g), now()
            FROM generate_series(1, %s) AS g
            """,
            [team_b, team_a, size],
        )
        cursor.execute(
            """
            INSERT INTO crm_contactpoint (contact_id, team_id, channel, address, address_hash,
                                          is_primary, created_at, updated_at)
            SELECT id, team_id, 'email', 'p' || id || '@example.org',
                   encode(sha256(convert_to('p' || id || '@example.org', 'UTF8')), 'hex'),
                   true, now(), now()
            FROM crm_contact
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_purpose (team_id, key, name, description, legal_basis,
                is_marketing, allowed_channels, double_opt_in_channels, validity_months,
                reconfirm_days_before, frequency_cap, frequency_period_hours, opt_in_keywords,
                is_active, created_at, updated_at)
            VALUES (%s, 'newsletter', 'Newsletter', '', 'consent', true, '["email", "sms"]',
                    '[]', 24, 30, NULL, 24, '[]', true, now(), now()),
                   (%s, 'newsletter', 'Newsletter', '', 'consent', true, '["email", "sms"]',
                    '[]', 24, 30, NULL, 24, '[]', true, now(), now())
            RETURNING id
            """,
            [team_a, team_b],
        )
        purpose_a, purpose_b = (row[0] for row in cursor.fetchall())
        # One grant per contact; a quarter also have a later second event (2.5 M events at
        # 2 M contacts is the shape issue 7 names; here 1.25 events per contact).
        cursor.execute(
            """
            WITH numbered AS (
                SELECT c.id AS contact_id, c.team_id, n,
                       CASE WHEN c.team_id = %s THEN %s ELSE %s END AS purpose_id
                FROM crm_contact c
                CROSS JOIN LATERAL generate_series(1, CASE WHEN c.id %% 4 = 0 THEN 2 ELSE 1 END) n
            ), evidence AS (
                INSERT INTO consent_consentevidence (consent_text_id, ip_address, user_agent,
                    source_url, message_text, inbound_message_ref, note, collected_at, actor_id,
                    actor_label, digest, erased_at)
                SELECT NULL, '192.0.2.1', 'bench', '', '', '', contact_id || ':' || n, NULL,
                       NULL, '', md5(contact_id || ':' || n) || md5(n || ':' || contact_id), NULL
                FROM numbered
                RETURNING id, note
            )
            INSERT INTO consent_consentevent (contact_id, team_id, purpose_id, channel, action,
                source, evidence_id, evidence_digest, occurred_at, recorded_at, sequence,
                previous_hash, hash)
            SELECT x.contact_id, x.team_id, x.purpose_id, 'email',
                   CASE WHEN x.n = 2 AND x.contact_id %% 20 BETWEEN 14 AND 16 THEN 'withdrawn'
                        ELSE 'granted' END,
                   'web_form', e.id, md5(e.note) || md5(e.note),
                   now() - make_interval(days => 3 - x.n),
                   now(), x.n, repeat('0', 64), md5('h' || e.id) || md5(e.id || 'h')
            FROM numbered x JOIN evidence e ON e.note = x.contact_id || ':' || x.n
            """,
            [team_a, purpose_a, purpose_b],
        )
        cursor.execute(
            """
            INSERT INTO consent_consent (contact_id, purpose_id, channel, status, since,
                                         valid_until, last_event_id, updated_at)
            SELECT DISTINCT ON (contact_id) contact_id, purpose_id, 'email',
                   CASE WHEN contact_id %% 20 BETWEEN 14 AND 16 THEN 'withdrawn'
                        WHEN contact_id %% 20 BETWEEN 17 AND 18 THEN 'pending'
                        ELSE 'granted' END,
                   occurred_at,
                   CASE WHEN contact_id %% 20 = 19 THEN now() - interval '1 day'
                        ELSE now() + interval '700 days' END,
                   id, now()
            FROM consent_consentevent ORDER BY contact_id, sequence DESC
            """,
            [],
        )
        cursor.execute(
            """
            INSERT INTO consent_suppression (address_hash, channel, reason, note, team_id,
                                             created_at, updated_at)
            SELECT address_hash, 'email', 'manual', '', NULL, now(), now()
            FROM crm_contactpoint WHERE contact_id %% 100 = 3
            """,
            [],
        )
        cursor.execute("ANALYZE")
    return team_a, purpose_a


def _expected(team_id: int, purpose_id: int) -> int:
    """The same answer in hand-written SQL, so a fast wrong answer cannot pass."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM crm_contact c
            WHERE c.team_id = %s AND NOT c.is_restricted AND c.erased_at IS NULL
              AND EXISTS (SELECT 1 FROM consent_consent s WHERE s.contact_id = c.id
                          AND s.purpose_id = %s AND s.channel = 'email' AND s.status = 'granted'
                          AND (s.valid_until IS NULL OR s.valid_until > now()))
              AND EXISTS (SELECT 1 FROM crm_contactpoint p WHERE p.contact_id = c.id
                          AND p.channel = 'email' AND NOT EXISTS (
                              SELECT 1 FROM consent_suppression x
                              WHERE x.address_hash = p.address_hash))
            """,
            [team_id, purpose_id],
        )
        return cursor.fetchone()[0]


def run(size: int, runs: int) -> list[Figure]:
    from consent.selectors import contacts_with_grant

    team_id, purpose_id = _populate(size)
    audience = contacts_with_grant(team_id=team_id, purpose=purpose_id, channel="email")
    count = audience.count()
    expected = _expected(team_id, purpose_id)
    if count != expected:
        raise SystemExit(f"audience count {count} != expected {expected}")
    timings = time_runs(lambda: audience.count(), runs)
    sql, params = audience.query.sql_with_params()
    with connection.cursor() as cursor:
        # The SQL is the ORM's own compilation of the selector, with its parameters apart.
        cursor.execute(f"EXPLAIN SELECT count(*) FROM ({sql}) AS audience", params)  # noqa: S608
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return [
        Figure(
            name="audience count (grant, team, unsuppressed)",
            size=size,
            unit="ms",
            median=median(timings) * 1000,
            target=TARGET_MS,
            higher_is_better=False,
            runs=[t * 1000 for t in timings],
            notes={"audience": count, "uses_consent_audience_index": "consent_audience" in plan},
        )
    ]
