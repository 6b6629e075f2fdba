"""Send-gate throughput: decisions one at a time (send_gate_evaluate, and message_send end to
end on the console provider) and in campaign batches (campaign_batch_decisions, the code
campaign_send_batch runs, through send_gate_evaluate_many).

Contacts, contact points, consents, suppressions, earlier messages (frequency cap) and
campaign recipients are generated inside PostgreSQL. Every contact is planted with one
outcome, chosen by `id % 20` (see PLANTED); the batch run must reproduce exactly the planted
counts per reason, and the one-at-a-time decisions must equal the batch ones.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator

from django.db import connection, transaction
from django.db.models.functions import Mod
from django.utils import timezone

from benchmarks.harness import Figure, median

TARGET_SINGLE_PER_SECOND = 2_000.0
TARGET_BATCH_PER_SECOND = 20_000.0
SINGLE_SAMPLE = 100_000
SEND_SAMPLE = 1_000
CAMPAIGN_BATCH = 1_000
# Outcome per `contact.id % 20`; the other remainders are plain allowed sends.
PLANTED = {
    1: "no_consent",  # never asked
    2: "no_consent",  # withdrawn
    3: "no_consent",  # grant expired
    4: "suppressed",
    5: "no_address",
    6: "contact_restricted",
    7: "contact_erased",
    8: "frequency_cap",  # already got the one message a day the purpose allows
    9: "quiet_hours",  # lives where it is night now: allowed, deferred
}
ALLOWED_OUTCOMES = (None, "quiet_hours")
QUIET_START, QUIET_END = dt.time(22, 0), dt.time(6, 0)


def _zone_at_local_hour(hour: int, now: dt.datetime) -> str:
    """An Etc/GMT zone where it is `hour` o'clock at `now` (POSIX sign: Etc/GMT-2 = UTC+2)."""
    offset = (hour - now.hour + 12) % 24 - 12
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


def _populate(size: int, now: dt.datetime) -> dict[str, int]:
    from approvals.models import MessageTemplate, TemplateVersion
    from consent.models import Purpose
    from crm.models import Team
    from messaging.models import Campaign, CampaignTemplate, ChannelAccount

    team = Team.objects.create(name="Bench Gate", slug="bench-gate")
    purpose = Purpose.objects.create(
        team=team,
        key="newsletter",
        name="Newsletter",
        legal_basis="consent",
        is_marketing=True,
        allowed_channels=["whatsapp"],
        frequency_cap=1,
        frequency_period_hours=24,
    )
    account = ChannelAccount.objects.create(
        team=team,
        name="Bench WhatsApp",
        slug="bench-whatsapp",
        channel="whatsapp",
        provider="console",
        address="+4930123456",
        quiet_hours_start=QUIET_START,
        quiet_hours_end=QUIET_END,
        messages_per_second=1000,
    )
    template = MessageTemplate.objects.create(
        team=team,
        name="newsletter",
        channel="whatsapp",
        category="marketing",
        purpose=purpose,
        language="de",
    )
    version = TemplateVersion.objects.create(
        template=template,
        number=1,
        body="Hallo {{ first_name }}, das Programm ist da.",
        variables=["first_name"],
        state="approved",
        approved_at=now,
        provider_status="approved",
    )
    campaign = Campaign.objects.create(
        team=team, name="Bench", purpose=purpose, state="running", launched_at=now
    )
    CampaignTemplate.objects.create(
        campaign=campaign, account=account, channel="whatsapp", template_version=version
    )
    day_zone, night_zone = _zone_at_local_hour(12, now), _zone_at_local_hour(1, now)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT %(team)s, '', 'Vorname' || g, 'Nachname' || g, 'de', %(day)s, '', '',
                   'whatsapp', '{}'::jsonb, 'GATE' || g, false, NULL, now(), now()
            FROM generate_series(1, %(size)s) AS g
            """,
            {"team": team.pk, "day": day_zone, "size": size},
        )
        cursor.execute(
            """
            UPDATE crm_contact SET
                is_restricted = (id %% 20 = 6),
                erased_at = CASE WHEN id %% 20 = 7 THEN now() END,
                time_zone = CASE WHEN id %% 20 = 9 THEN %(night)s ELSE time_zone END
            WHERE team_id = %(team)s AND id %% 20 IN (6, 7, 9)
            """,
            {"team": team.pk, "night": night_zone},
        )
        cursor.execute(
            """
            INSERT INTO crm_contactpoint (contact_id, team_id, channel, address, address_hash,
                                          is_primary, created_at, updated_at)
            SELECT id, team_id, 'whatsapp', '+49151' || lpad(id::text, 9, '0'),
                   encode(sha256(convert_to('+49151' || lpad(id::text, 9, '0'), 'UTF8')), 'hex'),
                   true, now(), now()
            FROM crm_contact WHERE team_id = %s AND id %% 20 <> 5
            """,
            [team.pk],
        )
        cursor.execute(
            """
            INSERT INTO consent_suppression (address_hash, channel, reason, note, team_id,
                                             created_at, updated_at)
            SELECT address_hash, 'whatsapp', 'manual', '', NULL, now(), now()
            FROM crm_contactpoint WHERE team_id = %s AND contact_id %% 20 = 4
            """,
            [team.pk],
        )
        # One event per consent (the gate reads only the projection and its event id).
        cursor.execute(
            """
            WITH asked AS (
                SELECT id AS contact_id, team_id,
                       CASE WHEN id %% 20 = 2 THEN 'withdrawn' ELSE 'granted' END AS action
                FROM crm_contact WHERE team_id = %(team)s AND id %% 20 <> 1
            ), evidence AS (
                INSERT INTO consent_consentevidence (consent_text_id, ip_address, user_agent,
                    source_url, message_text, inbound_message_ref, note, collected_at, actor_id,
                    actor_label, digest, erased_at)
                SELECT NULL, '192.0.2.1', 'bench', '', '', '', contact_id::text, NULL, NULL, '',
                       md5(contact_id::text) || md5('e' || contact_id), NULL
                FROM asked
                RETURNING id, note
            )
            INSERT INTO consent_consentevent (contact_id, team_id, purpose_id, channel, action,
                source, evidence_id, evidence_digest, occurred_at, recorded_at, sequence,
                previous_hash, hash)
            SELECT a.contact_id, a.team_id, %(purpose)s, 'whatsapp', a.action, 'web_form', e.id,
                   md5(e.note) || md5(e.note), now() - interval '30 days', now(), 1,
                   repeat('0', 64), md5('h' || e.id) || md5(e.id || 'h')
            FROM asked a JOIN evidence e ON e.note = a.contact_id::text
            """,
            {"purpose": purpose.pk, "team": team.pk},
        )
        cursor.execute(
            """
            INSERT INTO consent_consent (contact_id, purpose_id, channel, status, since,
                                         valid_until, last_event_id, updated_at)
            SELECT contact_id, purpose_id, 'whatsapp', action, occurred_at,
                   CASE WHEN contact_id %% 20 = 3 THEN now() - interval '1 day'
                        ELSE now() + interval '700 days' END,
                   id, now()
            FROM consent_consentevent WHERE team_id = %s
            """,
            [team.pk],
        )
        cursor.execute(
            """
            INSERT INTO messaging_conversation (team_id, contact_id, account_id, channel, status,
                handler, last_sequence, head_hash, created_at, updated_at)
            SELECT team_id, id, %(account)s, 'whatsapp', 'open', 'bot', 0, '', now(), now()
            FROM crm_contact WHERE team_id = %(team)s AND id %% 20 = 8
            """,
            {"account": account.pk, "team": team.pk},
        )
        cursor.execute(
            """
            INSERT INTO messaging_message (conversation_id, team_id, contact_id, account_id,
                channel, direction, kind, template_version_id, purpose_id, variables, subject,
                body, body_hash, sender_kind, origin, gate_decision, idempotency_key,
                provider_message_id, status, created_at, sent_at, error_code, error_detail)
            SELECT id, team_id, contact_id, account_id, 'whatsapp', 'outbound', 'template',
                   %(version)s, %(purpose)s, '{}'::jsonb, '', 'Hallo', '', 'campaign', '',
                   '{}'::jsonb, gen_random_uuid(), 'bench-' || id, 'sent',
                   now() - interval '1 hour', now() - interval '1 hour', '', ''
            FROM messaging_conversation WHERE team_id = %(team)s
            """,
            {"version": version.pk, "purpose": purpose.pk, "team": team.pk},
        )
        cursor.execute(
            """
            INSERT INTO messaging_campaignrecipient (campaign_id, contact_id, account_id, channel,
                                                     status, reason)
            SELECT %(campaign)s, id, %(account)s, 'whatsapp', 'pending', ''
            FROM crm_contact WHERE team_id = %(team)s ORDER BY id
            """,
            {"campaign": campaign.pk, "account": account.pk, "team": team.pk},
        )
        cursor.execute("ANALYZE")
    return {"team": team.pk, "campaign": campaign.pk, "account": account.pk}


def _planted(team_id: int) -> Counter[str | None]:
    """Expected outcomes, counted in SQL from the generator's plan."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id %% 20, count(*) FROM crm_contact WHERE team_id = %s GROUP BY 1", [team_id]
        )
        expected: Counter[str | None] = Counter()
        for remainder, count in cursor.fetchall():
            expected[PLANTED.get(remainder)] += count
    return expected


def _recipient_batches(campaign_id: int) -> Iterator[list]:
    """The campaign's recipients, claimed as campaign_send_batch claims them (contact loaded)."""
    from messaging.models import CampaignRecipient

    last = 0
    while True:
        batch = list(
            CampaignRecipient.objects.filter(campaign_id=campaign_id, id__gt=last)
            .select_related("contact")
            .order_by("id")[:CAMPAIGN_BATCH]
        )
        if not batch:
            return
        last = batch[-1].pk
        yield batch


def _batch_run(campaign_id: int) -> tuple[float, float, Counter[str | None], int]:
    """(seconds deciding, seconds claiming, outcomes, decisions) over the whole campaign."""
    from messaging.models import Campaign
    from messaging.services.campaigns import campaign_batch_decisions, campaign_templates

    templates = campaign_templates(Campaign.objects.get(pk=campaign_id))
    deciding = claiming = 0.0
    outcomes: Counter[str | None] = Counter()
    decisions = 0
    batches = _recipient_batches(campaign_id)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        claimed = time.perf_counter()
        claiming += claimed - started
        if batch is None:
            return deciding, claiming, outcomes, decisions
        made = campaign_batch_decisions(batch, templates, timezone.now())
        deciding += time.perf_counter() - claimed
        outcomes.update(decision.reason for decision in made)
        decisions += len(made)


def _single_requests(team_id: int, account_id: int, count: int) -> Iterator[list]:
    """Requests for `count` different consented contacts, as message_send builds them."""
    from approvals.models import TemplateVersion
    from crm.models import Contact
    from messaging.models import ChannelAccount
    from messaging.services.gate import SendRequest

    account = ChannelAccount.objects.get(pk=account_id)
    version = TemplateVersion.objects.select_related("template", "template__purpose").get(
        template__team_id=team_id
    )
    allowed = (
        Contact.objects.filter(team_id=team_id).alias(plan=Mod("id", 20)).exclude(plan__in=PLANTED)
    )
    last = 0
    while count > 0:
        contacts = list(allowed.filter(id__gt=last).order_by("id")[: min(count, 1000)])
        if not contacts:
            return
        last, count = contacts[-1].pk, count - len(contacts)
        yield [
            SendRequest(contact=contact, account=account, template_version=version)
            for contact in contacts
        ]


def _single_run(team_id: int, account_id: int, count: int) -> tuple[float, int, int]:
    """(seconds in send_gate_evaluate, decisions, allowed) one request at a time."""
    from messaging.services.gate import send_gate_evaluate

    seconds, decisions, allowed = 0.0, 0, 0
    for requests in _single_requests(team_id, account_id, count):
        started = time.perf_counter()
        made = [send_gate_evaluate(request) for request in requests]
        seconds += time.perf_counter() - started
        decisions += len(made)
        allowed += sum(decision.allowed and decision.reason is None for decision in made)
    return seconds, decisions, allowed


def _single_equals_batch(campaign_id: int, sample: int) -> bool:
    """Each one-at-a-time decision of a mixed sample equals its batch decision."""
    from messaging.models import Campaign
    from messaging.services.campaigns import campaign_batch_decisions, campaign_templates
    from messaging.services.gate import send_gate_evaluate

    templates = campaign_templates(Campaign.objects.get(pk=campaign_id))
    batch = next(_recipient_batches(campaign_id))[:sample]
    at = timezone.now()
    made = campaign_batch_decisions(batch, templates, at)
    return all(send_gate_evaluate(decision.request, at=at) == decision for decision in made) and {
        d.reason for d in made
    } >= set(PLANTED.values())


def _send_run(team_id: int, account_id: int, count: int) -> tuple[float, int]:
    """(seconds, messages accepted) for message_send one at a time, delivery on commit."""
    from messaging.models import SenderKind
    from messaging.services.send import message_send

    seconds, sent = 0.0, 0
    # Skip the contacts the gate-only run used: each message goes to a fresh contact.
    requests = [r for batch in _single_requests(team_id, account_id, 2 * count) for r in batch]
    for request in requests[-count:]:
        started = time.perf_counter()
        with transaction.atomic():
            message_send(
                contact=request.contact,
                account=request.account,
                actor=None,
                sender_kind=SenderKind.CAMPAIGN,
                template_version=request.template_version,
            )
        seconds += time.perf_counter() - started
        sent += 1
    return seconds, sent


def run(size: int, runs: int) -> list[Figure]:
    from messaging.models import Message

    now = timezone.now()
    ids = _populate(size, now)
    expected = _planted(ids["team"])
    equal = _single_equals_batch(ids["campaign"], 200)

    batch_rates, claim_rates, outcomes, decided = [], [], Counter(), 0
    for _ in range(runs + 1):  # The first pass warms caches and is not counted.
        deciding, claiming, outcomes, decided = _batch_run(ids["campaign"])
        batch_rates.append(decided / deciding)
        claim_rates.append(decided / claiming)
    batch_rates, claim_rates = batch_rates[1:], claim_rates[1:]

    single_size = min(SINGLE_SAMPLE, size // 2)
    available = sum(count for outcome, count in expected.items() if outcome is None)
    single_rates, single_allowed = [], 0
    _single_run(ids["team"], ids["account"], min(200, single_size))
    for _ in range(runs):
        seconds, decisions, single_allowed = _single_run(ids["team"], ids["account"], single_size)
        single_rates.append(decisions / seconds)

    send_size = min(SEND_SAMPLE, max(1, size // 20))
    before = Message.objects.count()
    send_seconds, sent = _send_run(ids["team"], ids["account"], send_size)
    written = Message.objects.count() - before

    batch_correct = outcomes == expected and decided == size
    return [
        Figure(
            name="send-gate decisions, one at a time",
            size=min(single_size, available),
            unit="/s",
            median=median(single_rates),
            target=TARGET_SINGLE_PER_SECOND,
            higher_is_better=True,
            runs=single_rates,
            notes={
                "correct": single_allowed == min(single_size, available) and equal,
                "allowed": single_allowed,
                "single_equals_batch": equal,
                "per_decision_ms": 1000 / median(single_rates),
            },
        ),
        Figure(
            name="send-gate decisions in campaign batches",
            size=size,
            unit="/s",
            median=median(batch_rates),
            target=TARGET_BATCH_PER_SECOND,
            higher_is_better=True,
            runs=batch_rates,
            notes={
                "correct": batch_correct,
                "batch_size": CAMPAIGN_BATCH,
                "outcomes": {str(k): v for k, v in sorted(outcomes.items(), key=str)},
                "planted": {str(k): v for k, v in sorted(expected.items(), key=str)},
                "per_decision_us": 1e6 / median(batch_rates),
                # Loading the claimed recipients with their contacts, not part of the figure.
                "claim_rows_per_second": median(claim_rates),
            },
        ),
        Figure(
            name="message_send one at a time (informational)",
            size=send_size,
            unit="/s",
            median=sent / send_seconds,
            target=TARGET_SINGLE_PER_SECOND,
            higher_is_better=True,
            runs=[sent / send_seconds],
            notes={
                "correct": written == sent == send_size,
                "messages_written": written,
                "note": "gate, message, outbox row and chain event, console delivery on commit",
            },
        ),
    ]
