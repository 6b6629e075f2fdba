"""Dialog metrics: every figure of a hand-made fixture with known answers, scoping and
permissions in API and admin, CSV, constant query counts and the benchmark's smoke run."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from messaging import metrics
from messaging.metrics import MetricsQuery
from messaging.models import Direction, Message, MessageKind, MessageStatus, SenderKind
from messaging.services import conversation_for, message_record
from messaging.services.conversations import conversation_agent_replied, conversation_hand_off
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ChannelAccountFactory, ContactFactory, PurposeFactory
from tests.messaging.helpers import sendable_version

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _outbound(account, contact, at, *, status, version=None, origin="", **times):
    """An outbound message at a controlled time: recorded through the ledger service, then
    given the provider's times (a receipt would set them, but at the wall-clock time)."""
    with transaction.atomic():
        message = message_record(
            conversation=conversation_for(contact=contact, account=account),
            direction=Direction.OUTBOUND,
            kind=MessageKind.TEMPLATE if version else MessageKind.TEXT,
            template_version=version,
            purpose=version.template.purpose if version else None,
            body="Hallo",
            sender_kind=SenderKind.CAMPAIGN if origin else SenderKind.AGENT,
            origin=origin,
            status=MessageStatus.QUEUED,
        )
    Message.objects.filter(pk=message.pk).update(created_at=at, status=status, **times)
    return message


def _inbound(account, contact, at):
    with transaction.atomic():
        message = message_record(
            conversation=conversation_for(contact=contact, account=account),
            direction=Direction.INBOUND,
            kind=MessageKind.TEXT,
            body="Antwort",
            sender_kind=SenderKind.CONTACT,
            status=MessageStatus.RECEIVED,
        )
    Message.objects.filter(pk=message.pk).update(created_at=at)
    return message


@dataclass
class World:
    now: dt.datetime
    day: dt.datetime
    template_id: int
    purpose_id: int
    query: MetricsQuery


@pytest.fixture
def world(team, other_team, agent):
    """Team A: campaign 1 to five contacts (read+2 replies, delivered+reply+hand-off+STOP,
    failed, delivered unanswered) and campaign 2 (sent, one reply); one agent message.
    Team B has a campaign message too, which team A's figures must never include."""
    now = timezone.now()
    day = (now - 10 * DAY).replace(hour=8, minute=0, second=0, microsecond=0)
    purpose = PurposeFactory(team=team)
    version = sendable_version(team, purpose=purpose)
    account = ChannelAccountFactory(team=team)
    c1, c2, c3, c4, c5 = (ContactFactory(team=team) for _ in range(5))
    grant_consent(c1, purpose, "whatsapp", occurred_at=now - 20 * DAY)
    grant_consent(c2, purpose, "whatsapp", occurred_at=now - 20 * DAY)

    # m1: read, answered after 1 h and 2 h, then the agent answers; a late reply after 8 days.
    _outbound(account, c1, day, status="read", version=version, origin="campaign:1",
              sent_at=day, delivered_at=day, read_at=day)  # fmt: skip
    _inbound(account, c1, day + HOUR)
    _inbound(account, c1, day + 2 * HOUR)
    _outbound(account, c1, day + 3 * HOUR, status="sent", sent_at=day + 3 * HOUR)
    _inbound(account, c1, day + 8 * DAY)
    # m2: delivered, answered after 30 min, handed off (now) and answered by a human in
    # 10 minutes, and the contact withdrew consent half a day after the message.
    m2_at = now - DAY
    m2 = _outbound(account, c2, m2_at, status="delivered", version=version,
                   origin="campaign:1", sent_at=m2_at, delivered_at=m2_at)  # fmt: skip
    _inbound(account, c2, m2_at + HOUR / 2)
    conversation = conversation_hand_off(conversation=m2.conversation, reason="test")
    conversation_agent_replied(
        conversation=conversation,
        actor=agent,
        at=conversation.handed_off_at + 10 * MINUTE,
    )
    withdraw_consent(c2, purpose, "whatsapp", occurred_at=now - DAY / 2)
    # m3 failed before it was sent; m5 was delivered and never answered.
    _outbound(account, c3, day, status="failed", version=version, origin="campaign:1",
              failed_at=day)  # fmt: skip
    _outbound(account, c5, day, status="delivered", version=version, origin="campaign:1",
              sent_at=day, delivered_at=day)  # fmt: skip
    # m4: campaign 2, sent, answered after two hours.
    m4_at = now - 5 * DAY
    _outbound(account, c4, m4_at, status="sent", version=version, origin="campaign:2",
              sent_at=m4_at)  # fmt: skip
    _inbound(account, c4, m4_at + 2 * HOUR)
    # Before the period: counted nowhere.
    _outbound(account, c5, now - 40 * DAY, status="read", version=version, origin="campaign:1",
              sent_at=now - 40 * DAY)  # fmt: skip

    # Team B: a campaign message with a reply and a grant of its own.
    b_purpose = PurposeFactory(team=other_team)
    b_account = ChannelAccountFactory(team=other_team)
    b_contact = ContactFactory(team=other_team)
    grant_consent(b_contact, b_purpose, "whatsapp", occurred_at=now - DAY)
    _outbound(b_account, b_contact, m2_at, status="read", origin="campaign:1", sent_at=m2_at)
    _inbound(b_account, b_contact, m2_at + HOUR)

    query = MetricsQuery(team_ids=(team.pk,), since=now - 30 * DAY, until=now + DAY)
    return World(now, day, version.template_id, purpose.pk, query)


def _by_key(rows):
    return {row["key"]: row for row in rows}


def test_campaign_figures_are_exact(world):
    rows = _by_key(metrics.message_metrics(world.query, group_by="campaign"))

    assert set(rows) == {"campaign:1", "campaign:2"}
    assert rows["campaign:1"] == {
        "key": "campaign:1",
        "label": "campaign:1",
        "messages": 4,
        "sent": 3,
        "delivered": 3,
        "read": 1,
        "failed": 1,
        "replied": 2,
        "reply_rate": 0.6667,
        "median_reply_seconds": 2700.0,
        "dialog_depth": 1.0,
        "handoffs": 1,
        "median_human_response_seconds": 600.0,
        "opt_outs": 1,
    }
    assert rows["campaign:2"] == {
        "key": "campaign:2",
        "label": "campaign:2",
        "messages": 1,
        "sent": 1,
        "delivered": 0,
        "read": 0,
        "failed": 0,
        "replied": 1,
        "reply_rate": 1.0,
        "median_reply_seconds": 7200.0,
        "dialog_depth": 1.0,
        "handoffs": 0,
        "median_human_response_seconds": None,
        "opt_outs": 0,
    }


def test_team_figures_include_agent_messages(world, team):
    [row] = metrics.message_metrics(world.query, group_by="team")

    assert row["key"] == team.pk
    assert row["label"] == team.name
    assert (row["messages"], row["sent"], row["delivered"], row["read"], row["failed"]) == (
        6,
        5,
        3,
        1,
        1,
    )
    assert (row["replied"], row["reply_rate"], row["median_reply_seconds"]) == (3, 0.6, 3600.0)
    # Depth: m1 3 (two replies and the agent's answer), m2 1, m4 1, the rest 0: 5 / 6.
    assert row["dialog_depth"] == 0.83
    assert (row["handoffs"], row["median_human_response_seconds"], row["opt_outs"]) == (
        1,
        600.0,
        1,
    )


def test_template_and_purpose_figures_leave_out_free_text(world):
    [template] = metrics.message_metrics(world.query, group_by="template")
    [purpose] = metrics.message_metrics(world.query, group_by="purpose")

    assert template["key"] == world.template_id
    assert purpose["key"] == world.purpose_id
    for row in (template, purpose):
        assert (row["messages"], row["sent"], row["replied"], row["reply_rate"]) == (5, 4, 3, 0.75)
        assert (row["dialog_depth"], row["handoffs"], row["opt_outs"]) == (1.0, 1, 1)


def test_daily_series_puts_each_message_on_its_day(world):
    days = _by_key(metrics.daily_series(world.query))

    first = days[str(world.day.date())]
    assert (first["messages"], first["sent"], first["delivered"], first["replied"]) == (4, 3, 2, 1)
    assert days[str(world.now.date())]["handoffs_total"] == 1
    assert sum(day["messages"] for day in days.values()) == 6
    assert sum(day["consent_growth"] for day in days.values()) == 1


def test_handoffs_and_first_human_response_per_team(world, team):
    assert metrics.conversation_metrics(world.query, group_by="team") == [
        {
            "key": team.pk,
            "label": team.name,
            "handoffs": 1,
            "median_human_response_seconds": 600.0,
        }
    ]


def test_consent_growth_is_grants_minus_withdrawals_per_purpose(world):
    assert metrics.consent_growth(world.query) == [
        {
            "key": world.purpose_id,
            "label": metrics.consent_growth(world.query)[0]["label"],
            "grants": 2,
            "withdrawals": 1,
            "growth": 1,
        }
    ]


def test_reply_window_bounds_replies_and_depth(world):
    short = MetricsQuery(
        team_ids=world.query.team_ids,
        since=world.query.since,
        until=world.query.until,
        window_days=1,
        campaign="campaign:1",
    )
    [row] = metrics.message_metrics(short, group_by="campaign")
    # Within a day m1 still has its replies; the hand-off (now) is past m2's one-day window
    # only if it happened a day later, so it still counts.
    assert (row["replied"], row["dialog_depth"], row["opt_outs"]) == (2, 1.0, 1)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two(world):
    [row] = metrics.message_metrics(world.query, group_by="team")
    assert row["median_reply_seconds"] == 3600.0
    [campaign] = metrics.message_metrics(
        MetricsQuery(
            team_ids=world.query.team_ids,
            since=world.query.since,
            until=world.query.until,
            campaign="campaign:1",
        ),
        group_by="campaign",
    )
    assert campaign["median_reply_seconds"] == 2700.0


def test_a_reply_counts_only_after_the_message_went_out(team):
    """The window opens when the message was sent: a contact's message between creating
    and sending it is neither a reply nor depth; an automation's message is no campaign."""
    now = timezone.now()
    account = ChannelAccountFactory(team=team)
    contact = ContactFactory(team=team)
    created = now - 2 * DAY
    _outbound(account, contact, created, status="delivered", origin="automation:1",
              sent_at=created + 2 * HOUR, delivered_at=created + 2 * HOUR)  # fmt: skip
    _inbound(account, contact, created + HOUR)
    _inbound(account, contact, created + 3 * HOUR)
    query = MetricsQuery(team_ids=(team.pk,), since=now - 7 * DAY, until=now)

    [row] = metrics.message_metrics(query, group_by="team")

    assert (row["messages"], row["replied"], row["median_reply_seconds"]) == (1, 1, 3600.0)
    assert row["dialog_depth"] == 1.0
    assert metrics.message_metrics(query, group_by="campaign") == []


# PostgreSQL sets a transaction-local work_mem before the message figures (one query more).
WORK_MEM_QUERIES = 1 if connection.vendor == "postgresql" else 0


def test_dashboard_gives_the_same_figures_in_eight_queries(world, django_assert_num_queries):
    with django_assert_num_queries(8 + WORK_MEM_QUERIES):
        board = metrics.dashboard(world.query, group_by="campaign")

    assert board.groups == metrics.message_metrics(world.query, group_by="campaign")
    assert board.days == metrics.daily_series(world.query)
    assert board.handoffs == metrics.conversation_metrics(world.query, group_by="team")
    assert board.consent == metrics.consent_growth(world.query)


def test_message_figures_under_two_groupings_in_one_query(world, django_assert_num_queries):
    with django_assert_num_queries(1 + WORK_MEM_QUERIES):
        figures = metrics.message_figures(world.query, ("team", "purpose"))

    assert figures["team"] == metrics.message_metrics(world.query, group_by="team")
    assert figures["purpose"] == metrics.message_metrics(world.query, group_by="purpose")


OVERVIEW = "/api/v1/metrics/overview/"


def _period(world):
    return {
        "since": (world.now - 30 * DAY).date().isoformat(),
        "until": world.now.date().isoformat(),
    }


def test_api_overview_gives_the_selector_figures(world, marketing, api_client_for, team):
    response = api_client_for(marketing).get(OVERVIEW, {**_period(world), "group_by": "campaign"})

    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == "campaign"
    assert body["window_days"] == 7
    rows = _by_key(body["results"])
    assert (rows["campaign:1"]["messages"], rows["campaign:1"]["replied"]) == (4, 2)
    assert rows["campaign:1"]["median_reply_seconds"] == 2700.0
    assert rows["campaign:2"]["replied"] == 1


@pytest.mark.parametrize("user", ["agent", "auditor"])
def test_agents_and_auditors_see_the_figures(world, user, request, api_client_for, team):
    response = api_client_for(request.getfixturevalue(user)).get(
        OVERVIEW, {**_period(world), "group_by": "team", "team": team.pk}
    )
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert (row["key"], row["messages"]) == (team.pk, 6)


def test_outsider_sees_nothing_of_the_team(world, outsider, api_client_for, team, other_team):
    client = api_client_for(outsider)
    rows = client.get(OVERVIEW, {**_period(world), "group_by": "team"}).json()["results"]
    campaigns = client.get(OVERVIEW, {**_period(world), "group_by": "campaign"}).json()["results"]
    consent = client.get("/api/v1/metrics/consent/", _period(world)).json()["results"]

    assert [row["key"] for row in rows] == [other_team.pk]
    # Team B's own campaign:1 message only, with its one reply.
    assert [(row["key"], row["messages"], row["replied"]) for row in campaigns] == [
        ("campaign:1", 1, 1)
    ]
    assert [row["grants"] for row in consent] == [1]


def test_another_teams_id_is_404(world, outsider, api_client_for, team):
    response = api_client_for(outsider).get(OVERVIEW, {"team": team.pk})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "path", ["overview", "timeseries", "handoffs", "consent"], ids=lambda path: path
)
def test_without_the_message_permission_is_403(world, editor, api_client_for, path):
    response = api_client_for(editor).get(f"/api/v1/metrics/{path}/")
    assert response.status_code == 403


def test_anonymous_is_refused(world, api_client_for):
    assert api_client_for(None).get(OVERVIEW).status_code in (401, 403)


@pytest.mark.parametrize(
    "params",
    [{"since": "2026-02-01", "until": "2026-01-01"}, {"group_by": "moon"}, {"window_days": 0}],
)
def test_bad_parameters_are_400(marketing, api_client_for, params):
    response = api_client_for(marketing).get(OVERVIEW, params)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_timeseries_handoffs_and_consent_endpoints(world, marketing, api_client_for, team):
    client = api_client_for(marketing)
    days = client.get("/api/v1/metrics/timeseries/", _period(world)).json()["results"]
    handoffs = client.get("/api/v1/metrics/handoffs/", _period(world)).json()["results"]
    consent = client.get("/api/v1/metrics/consent/", _period(world)).json()["results"]

    assert sum(day["messages"] for day in days) == 6
    assert _by_key(days)[str(world.day.date())]["sent"] == 3
    assert handoffs == [
        {"key": team.pk, "label": team.name, "handoffs": 1, "median_human_response_seconds": 600.0}
    ]
    assert [(row["grants"], row["withdrawals"], row["growth"]) for row in consent] == [(2, 1, 1)]


def test_csv_has_the_same_rows(world, marketing, api_client_for):
    response = api_client_for(marketing).get(
        OVERVIEW, {**_period(world), "group_by": "campaign", "format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="metrics-overview.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == metrics.MESSAGE_FIELDS
    first = dict(zip(rows[0], rows[1], strict=True))
    assert (first["key"], first["messages"], first["reply_rate"]) == ("campaign:1", "4", "0.6667")
    assert first["median_human_response_seconds"] == "600.0"
    assert len(rows) == 3


def test_csv_neutralises_formulas_in_labels(team, marketing, api_client_for):
    purpose = PurposeFactory(team=team, name="=HYPERLINK(1)")
    account = ChannelAccountFactory(team=team)
    message = _outbound(account, ContactFactory(team=team), timezone.now(), status="sent")
    Message.objects.filter(pk=message.pk).update(purpose=purpose)

    response = api_client_for(marketing).get(OVERVIEW, {"group_by": "purpose", "format": "csv"})

    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[1][:3] == [str(purpose.pk), "'=HYPERLINK(1)", "1"]


def _overview_queries(client, params) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(OVERVIEW, params).status_code == 200
    return len(captured)


def test_overview_query_count_does_not_grow_with_rows(
    world, marketing, api_client_for, team, django_assert_max_num_queries
):
    client = api_client_for(marketing)
    params = {**_period(world), "group_by": "campaign"}
    before = _overview_queries(client, params)
    account = ChannelAccountFactory(team=team)
    for number in range(6):
        contact = ContactFactory(team=team)
        at = world.now - (number + 1) * HOUR
        _outbound(account, contact, at, status="delivered", origin=f"campaign:{number + 3}",
                  sent_at=at)  # fmt: skip
        _inbound(account, contact, at + HOUR / 4)

    with django_assert_max_num_queries(before):
        response = client.get(OVERVIEW, params)
    assert len(response.json()["results"]) == 8
    assert before <= 6


def test_dashboard_renders_the_charts(world, client, marketing):
    client.force_login(marketing)
    response = client.get("/admin/messaging/message/metrics/", {"group_by": "campaign"})

    assert response.status_code == 200
    content = response.content.decode()
    assert 'class="metrics-chart metrics-funnel"' in content
    assert 'class="metrics-chart metrics-series"' in content
    assert "<polyline" in content
    assert "messaging/metrics.css" in content
    assert "campaign:1" in content
    assert "/api/v1/metrics/overview/?" in content


def test_dashboard_without_permission_is_403(world, client, editor):
    client.force_login(editor)
    assert client.get("/admin/messaging/message/metrics/").status_code == 403


def test_dashboard_of_an_outsider_shows_only_their_team(world, client, outsider, team):
    client.force_login(outsider)
    response = client.get("/admin/messaging/message/metrics/", {"group_by": "team"})

    assert response.status_code == 200
    assert response.context["groups"][0]["messages"] == 1
    assert [row["key"] for row in response.context["groups"]] != [team.pk]
    # Asking for team A falls back to the outsider's own figures.
    foreign = client.get("/admin/messaging/message/metrics/", {"team": team.pk})
    assert foreign.context["form"].errors
    assert all(row["key"] != team.pk for row in foreign.context["handoffs"])


def test_dashboard_stylesheet_is_served_locally():
    from django.contrib.staticfiles import finders

    assert finders.find("messaging/metrics.css")
