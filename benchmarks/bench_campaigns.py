"""Campaign recipient freezing: launching a campaign whose audience is a million consented
contacts, through the real campaign_launch (the freezing step as the product runs it).

Only the dispatch of the first send batch to Celery is held back, so the figure is the launch
itself (checks, state change, frozen audience) and not the sending that follows it. Beside
it, the naive path: one ORM create() per recipient, timed on a sample and extrapolated.
"""

from __future__ import annotations

import time
from unittest import mock

from django.db import connection

from benchmarks.bench_audience import expected_audience, populate
from benchmarks.harness import Figure, median
from consent.models import Purpose
from consent.selectors import contacts_with_grant
from crm.models import Channel, Team
from messaging.models import Campaign, CampaignRecipient, ChannelAccount
from messaging.services import TemplateChoice, campaign_create, campaign_launch
from messaging.services.campaigns import _freeze, campaign_templates
from messaging.tasks import send_campaign_batch
from tests.messaging.helpers import sendable_version

TARGET_SECONDS = 15.0
NAIVE_SAMPLE = 2000


def _sendable_choice(team_id: int, purpose_id: int) -> TemplateChoice:
    """An e-mail account and a template version approved through the real review services."""
    team = Team.objects.get(pk=team_id)
    account = ChannelAccount.objects.create(
        team=team,
        name="Bench mail",
        slug="bench-mail",
        channel=Channel.EMAIL,
        provider="console",
        address="news@example.org",
    )
    version = sendable_version(
        team,
        channel=Channel.EMAIL,
        purpose=Purpose.objects.get(pk=purpose_id),
        body="Hallo {{ first_name }}. Abmelden: {{ unsubscribe_url }}",
    )
    return TemplateChoice(account=account, template_version=version)


def _draft_campaign(choice: TemplateChoice, name: str) -> Campaign:
    return campaign_create(team=choice.account.team, actor=None, name=name, templates=[choice])


def _timed_launch(campaign: Campaign) -> tuple[float, Campaign, int]:
    """Seconds for campaign_launch, the launched campaign, and how many batches it enqueued."""

    with mock.patch.object(send_campaign_batch, "apply_async") as enqueue:
        started = time.perf_counter()
        launched = campaign_launch(campaign=campaign, actor=None)
        elapsed = time.perf_counter() - started
    return elapsed, launched, enqueue.call_count


def _duplicates(campaign_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) - count(DISTINCT contact_id) FROM messaging_campaignrecipient "
            "WHERE campaign_id = %s",
            [campaign_id],
        )
        return cursor.fetchone()[0]


def _naive_seconds(choice: TemplateChoice, purpose_id: int, audience: int) -> tuple[float, int]:
    """One create() per recipient on a sample; the rate scaled to the whole audience."""
    campaign = _draft_campaign(choice, "Bench naive")
    channel = choice.account.channel
    sample = list(
        contacts_with_grant(team_id=campaign.team_id, purpose=purpose_id, channel=channel)
        .order_by()
        .values_list("pk", flat=True)[:NAIVE_SAMPLE]
    )
    started = time.perf_counter()
    for contact_id in sample:
        CampaignRecipient.objects.create(
            campaign=campaign, contact_id=contact_id, account=choice.account, channel=channel
        )
    elapsed = time.perf_counter() - started
    return elapsed / len(sample) * audience, len(sample)


def run(size: int, runs: int) -> list[Figure]:

    team_id, purpose_id = populate(size)
    audience = contacts_with_grant(team_id=team_id, purpose=purpose_id, channel="email").count()
    expected = expected_audience(team_id, purpose_id)
    if audience != expected:
        raise SystemExit(f"audience {audience} != expected {expected}")

    choice = _sendable_choice(team_id, purpose_id)
    timings = []
    for number in range(runs):
        campaign = _draft_campaign(choice, f"Bench {number}")
        elapsed, launched, enqueued = _timed_launch(campaign)
        if launched.recipients_count != expected or launched.recipients.count() != expected:
            raise SystemExit(f"frozen {launched.recipients_count} != audience {expected}")
        if enqueued != 1:
            raise SystemExit(f"launch enqueued {enqueued} batches, expected 1")
        timings.append(elapsed)

    # A relaunch of the running campaign and a second freeze must add nobody.
    with mock.patch.object(send_campaign_batch, "apply_async"):
        campaign_launch(campaign=launched, actor=None)
        refrozen = _freeze(launched, campaign_templates(launched))
    duplicates = _duplicates(launched.pk)
    if refrozen != expected or duplicates:
        raise SystemExit(f"after relaunch: {refrozen} recipients, {duplicates} duplicates")

    naive, sample = _naive_seconds(choice, purpose_id, expected)
    return [
        Figure(
            name="campaign recipient freezing (launch)",
            size=size,
            unit="s",
            median=median(timings),
            target=TARGET_SECONDS,
            higher_is_better=False,
            runs=timings,
            notes={
                "recipients": expected,
                "matches_audience": True,
                "duplicates_after_relaunch": duplicates,
            },
        ),
        Figure(
            name="campaign recipient freezing, naive (create per row)",
            size=size,
            unit="s",
            median=naive,
            target=TARGET_SECONDS,
            higher_is_better=False,
            runs=[naive],
            notes={
                "sample": sample,
                "extrapolated_to": expected,
                "how": "ORM create() per recipient on the sample, rate scaled to the audience",
            },
        ),
    ]
