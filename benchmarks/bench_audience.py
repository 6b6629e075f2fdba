"""Audience count: contacts with a current grant for purpose + channel, team-scoped and
unsuppressed, through the real selector (consent.selectors.contacts_with_grant).

Data are generated inside PostgreSQL (generate_series): a million contacts in two teams with
about 2.5 million consent events (1.0 M contacts, 2.48 M events, 2.2 M projection rows).
Events carry placeholder hashes because only the projection is queried here.
bench_campaigns reuses `populate` and `expected_audience`.
"""

from __future__ import annotations

from django.db import connection

from benchmarks.harness import Figure, median, time_runs

TARGET_MS = 100.0


# The ledger of every contact, as slots: (slot, purpose, channel, action, which contacts,
# days ago). About 2.5 events per contact over two purposes and three channels: double opt-in
# requests, grants, confirmations, withdrawals and grants that have run out (24 months).
_EVENT_SLOTS = """
    (1, 'newsletter', 'email', 'requested', g %% 4 = 0,
        CASE WHEN g %% 20 = 19 THEN 801 ELSE 301 END),
    (2, 'newsletter', 'email', CASE WHEN g %% 4 = 0 THEN 'confirmed' ELSE 'granted' END,
        g %% 10 <> 0, CASE WHEN g %% 20 = 19 THEN 800 ELSE 300 END),
    (3, 'newsletter', 'email', 'withdrawn', g %% 10 = 1, 100),
    (4, 'newsletter', 'sms', 'granted', g %% 2 = 0, 200),
    (5, 'offers', 'email', 'granted', g %% 3 = 0, 250),
    (6, 'offers', 'sms', 'requested', g %% 5 = 0, 50),
    (7, 'offers', 'whatsapp', 'granted', g %% 5 = 1, 150)
"""


def populate(size: int) -> tuple[int, int]:
    """`size` contacts in two teams (70/30) with ledger, projection, addresses, suppressions.

    The projection's audience columns are filled by consent_reachability_refresh, as the
    product's write paths fill them; expected_audience does not read them.

    Returns the larger team and its newsletter purpose. Contact ids equal their generator
    number `g`, so every shape below is a pure function of `g`.
    """
    from consent.services import consent_reachability_refresh
    from crm.models import Contact

    with connection.cursor() as cursor:
        # The rows are consistent by construction; skipping the per-row foreign-key triggers
        # of the generated millions turns minutes into seconds (setup only, never timed).
        cursor.execute("SET session_replication_role = replica")
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
            INSERT INTO crm_contact (id, team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT g, CASE WHEN g %% 10 < 7 THEN %s ELSE %s END, '', 'Vorname' || g,
                   'Nachname' || g, CASE WHEN g %% 3 = 0 THEN 'en' ELSE 'de' END,
                   'Europe/Berlin', '', '', CASE WHEN g %% 4 = 1 THEN 'sms' ELSE 'email' END,
                   '{}'::jsonb, 'EXT' || g, g %% 100 = 7,
                   CASE WHEN g %% 500 = 11 THEN now() END,
                   now() - make_interval(secs => g), now()
            FROM generate_series(1, %s) AS g
            """,
            [team_a, team_b, size],
        )
        # E-mail for all but 2 %; a second, clean e-mail for half of the suppressed ones
        # (still reachable); a mobile number for every other contact.
        cursor.execute(
            """
            INSERT INTO crm_contactpoint (contact_id, team_id, channel, address, address_hash,
                                          is_primary, created_at, updated_at)
            SELECT id, team_id, channel, address,
                   encode(sha256(convert_to(address, 'UTF8')), 'hex'), is_primary, now(), now()
            FROM (
                SELECT id, team_id, 'email' AS channel, 'p' || id || '@example.org' AS address,
                       true AS is_primary
                FROM crm_contact WHERE id %% 50 <> 5
                UNION ALL
                SELECT id, team_id, 'email', 'second' || id || '@example.org', false
                FROM crm_contact WHERE id %% 200 = 3
                UNION ALL
                SELECT id, team_id, 'sms', '+49170' || lpad(id::text, 8, '0'), true
                FROM crm_contact WHERE id %% 2 = 0
            ) AS points
            """,
            [],
        )
        cursor.execute(
            """
            INSERT INTO consent_purpose (team_id, key, name, description, legal_basis,
                is_marketing, allowed_channels, double_opt_in_channels, validity_months,
                reconfirm_days_before, frequency_cap, frequency_period_hours, opt_in_keywords,
                is_active, created_at, updated_at)
            SELECT team_id, key, initcap(key), '', 'consent', true,
                   '["email", "sms", "whatsapp"]', '[]', 24, 30, NULL, 24, '[]', true, now(),
                   now()
            FROM unnest(ARRAY[%s, %s]) AS team_id
            CROSS JOIN unnest(ARRAY['newsletter', 'offers']) AS key
            """,
            [team_a, team_b],
        )
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE bench_events AS
            SELECT row_number() OVER (ORDER BY c.id, s.slot) AS id, c.id AS contact_id,
                   c.team_id, p.id AS purpose_id, s.channel, s.action,
                   row_number() OVER (PARTITION BY c.id ORDER BY s.slot) AS sequence,
                   now() - make_interval(days => s.days_ago) AS occurred_at
            FROM crm_contact c
            CROSS JOIN LATERAL (SELECT c.id AS g) AS generator
            CROSS JOIN LATERAL (VALUES {_EVENT_SLOTS}) AS s(slot, purpose_key, channel, action,
                                                          applies, days_ago)
            JOIN consent_purpose p ON p.team_id = c.team_id AND p.key = s.purpose_key
            WHERE s.applies
            """,  # noqa: S608 - a constant of this module
            [],
        )
        # Placeholder digests and hashes: only the projection is queried here.
        cursor.execute(
            """
            INSERT INTO consent_consentevidence (id, consent_text_id, ip_address, user_agent,
                source_url, message_text, inbound_message_ref, note, collected_at, actor_id,
                actor_label, digest, erased_at)
            SELECT id, NULL, '192.0.2.1', 'bench', '', '', '', '', NULL, NULL, '',
                   md5(id::text) || md5('e' || id), NULL
            FROM bench_events
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_consentevent (id, contact_id, team_id, purpose_id, channel,
                action, source, evidence_id, evidence_digest, occurred_at, recorded_at,
                sequence, previous_hash, hash)
            SELECT id, contact_id, team_id, purpose_id, channel, action, 'web_form', id,
                   md5(id::text) || md5('e' || id), occurred_at, now(), sequence,
                   repeat('0', 64), md5('h' || id) || md5(id || 'h')
            FROM bench_events
            """
        )
        # The projection as consent_record leaves it: the latest event per (contact,
        # purpose, channel) decides; a grant is valid for the purpose's 24 months.
        cursor.execute(
            """
            INSERT INTO consent_consent (contact_id, purpose_id, channel, status, since,
                                         valid_until, last_event_id, updated_at)
            SELECT DISTINCT ON (contact_id, purpose_id, channel) contact_id, purpose_id,
                   channel, status, occurred_at,
                   CASE WHEN status = 'granted' THEN occurred_at + interval '24 months' END,
                   id, now()
            FROM (
                SELECT *, CASE action WHEN 'requested' THEN 'pending'
                                      WHEN 'confirmed' THEN 'granted' ELSE action END AS status
                FROM bench_events
            ) AS events
            ORDER BY contact_id, purpose_id, channel, occurred_at DESC, sequence DESC
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_suppression (address_hash, channel, reason, note, team_id,
                                             created_at, updated_at)
            SELECT address_hash, 'email', 'manual', '', NULL, now(), now()
            FROM crm_contactpoint WHERE contact_id %% 100 = 3 AND is_primary
            """,
            [],
        )
        # The projection's audience columns (team, reachable), filled by the product's own
        # service as its write paths do, once for every contact (setup, never timed).
        consent_reachability_refresh(contact_ids=Contact.objects.order_by().values("pk"))
        for table in ("crm_contact", "consent_consentevidence", "consent_consentevent"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table}))"
            )
        cursor.execute("DROP TABLE bench_events")
        cursor.execute("SET session_replication_role = DEFAULT")
        # What autovacuum does to settled tables: statistics, and the visibility map that
        # lets the audience count be answered from the index alone.
        cursor.execute(
            "VACUUM ANALYZE crm_contact, crm_contactpoint, consent_consent, consent_suppression"
        )
        cursor.execute("ANALYZE")
        cursor.execute(
            "SELECT id FROM consent_purpose WHERE team_id = %s AND key = 'newsletter'", [team_a]
        )
        return team_a, cursor.fetchone()[0]


def expected_audience(team_id: int, purpose_id: int) -> int:
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
    from django.test.utils import CaptureQueriesContext

    from consent.selectors import contacts_with_grant

    team_id, purpose_id = populate(size)
    audience = contacts_with_grant(team_id=team_id, purpose=purpose_id, channel="email")
    count = audience.count()
    expected = expected_audience(team_id, purpose_id)
    if count != expected:
        raise SystemExit(f"audience count {count} != expected {expected}")
    timings = time_runs(lambda: audience.count(), runs)
    # The plan of exactly the statement .count() sends.
    with CaptureQueriesContext(connection) as captured:
        audience.count()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + captured.captured_queries[-1]["sql"])
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
            notes={
                "audience": count,
                "index_only_on_consent_audience_reachable": (
                    "Index Only Scan using consent_audience_reachable" in plan
                ),
            },
        )
    ]
