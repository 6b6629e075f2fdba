"""The two SQL forms of the message figures: PostgreSQL's (one LATERAL look-ahead per message
for depth and first reply, hand-offs and opt-outs as hashed semi-joins) must give exactly the
figures of the portable one (correlated subqueries, what SQLite runs), on the metrics fixture
and on edge cases, and its plan must read a message's later messages once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import metrics
from messaging.models import (
    Conversation,
    ConversationEvent,
    Direction,
    EventKind,
    Message,
    MessageKind,
    MessageStatus,
    SenderKind,
)
from messaging.services import conversation_for, message_record
from messaging.services.conversations import (
    conversation_agent_replied,
    conversation_hand_back,
    conversation_hand_off,
)
from tests.consent.helpers import withdraw_consent
from tests.db_plans import plan
from tests.factories import ChannelAccountFactory, ContactFactory, PurposeFactory
from tests.messaging import test_metrics as metrics_tests

pytestmark = pytest.mark.django_db

# The hand-made fixture of the metrics tests (campaigns, replies, a hand-off, an opt-out).
world = metrics_tests.world

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _both(query, groupings=metrics.GROUPINGS):
    portable = metrics._message_figures(
        query, groupings, outcomes_sql=metrics._outcomes_sql_portable
    )
    postgresql = metrics._message_figures(
        query, groupings, outcomes_sql=metrics._outcomes_sql_postgresql
    )
    return portable, postgresql


@pytest.mark.postgres
@pytest.mark.parametrize("window_days", [1, 7, 30])
def test_postgresql_form_gives_the_portable_figures(world, window_days):
    query = dataclasses.replace(world.query, window_days=window_days)

    portable, postgresql = _both(query)

    assert postgresql == portable
    assert portable["campaign"]
    assert portable["team"][0]["replied"] > 0


@pytest.mark.postgres
@pytest.mark.parametrize("narrowing", ["campaign", "template_id", "purpose_id"])
def test_postgresql_form_gives_the_portable_figures_narrowed(world, narrowing):
    value = {
        "campaign": "campaign:1",
        "template_id": world.template_id,
        "purpose_id": world.purpose_id,
    }[narrowing]
    query = dataclasses.replace(world.query, **{narrowing: value})

    portable, postgresql = _both(query, ("campaign", "team", "day"))

    assert postgresql == portable
    assert portable["team"][0]["messages"] > 0


def _record(account, contact, at, *, direction, **fields):
    with transaction.atomic():
        message = message_record(
            conversation=conversation_for(contact=contact, account=account),
            direction=direction,
            kind=MessageKind.TEXT,
            body="Text",
            **fields,
        )
    Message.objects.filter(pk=message.pk).update(created_at=at)
    return message


@pytest.fixture
def edges(team, agent):
    """Cases where a set-based rewrite could go wrong: a note (no depth, no reply), replies
    exactly on the window's edges, a message recorded later but dated before the outbound
    one, two outbound messages sharing a reply, a message sent before it was created, two
    withdrawals and two hand-offs in one window (each message counts once)."""
    now = timezone.now()
    t = (now - 5 * DAY).replace(microsecond=0)
    account = ChannelAccountFactory(team=team)
    purpose, other_purpose = PurposeFactory(team=team), PurposeFactory(team=team)
    c1, c2, c3 = (ContactFactory(team=team) for _ in range(3))

    # c1: an outbound message, a note, an inbound message exactly at its send time (not a
    # reply: the window opens after it) and one exactly at the window's end (a reply).
    metrics_tests._outbound(account, c1, t, status="sent", origin="campaign:7", sent_at=t)
    _record(account, c1, t + HOUR, direction=Direction.NOTE, sender_kind=SenderKind.AGENT,
            status=MessageStatus.RECEIVED)  # fmt: skip
    _record(account, c1, t, direction=Direction.INBOUND, sender_kind=SenderKind.CONTACT,
            status=MessageStatus.RECEIVED)  # fmt: skip
    _record(account, c1, t + 7 * DAY, direction=Direction.INBOUND,
            sender_kind=SenderKind.CONTACT, status=MessageStatus.RECEIVED)  # fmt: skip
    # c2: two outbound messages an hour apart, then one reply for both; an inbound message
    # recorded after them but dated before them counts for neither.
    metrics_tests._outbound(account, c2, t, status="delivered", origin="campaign:7",
                            sent_at=t, delivered_at=t)  # fmt: skip
    metrics_tests._outbound(account, c2, t + HOUR, status="read", sent_at=t + HOUR)
    _record(account, c2, t - HOUR, direction=Direction.INBOUND,
            sender_kind=SenderKind.CONTACT, status=MessageStatus.RECEIVED)  # fmt: skip
    _record(account, c2, t + 3 * HOUR, direction=Direction.INBOUND,
            sender_kind=SenderKind.CONTACT, status=MessageStatus.RECEIVED)  # fmt: skip
    # c3: sent an hour before it was created (clock skew), answered in between; the contact
    # withdraws twice and the conversation is handed off twice in the window.
    metrics_tests._outbound(account, c3, t, status="sent", origin="campaign:8",
                            sent_at=t - HOUR)  # fmt: skip
    _record(account, c3, t - HOUR / 2, direction=Direction.INBOUND,
            sender_kind=SenderKind.CONTACT, status=MessageStatus.RECEIVED)  # fmt: skip
    withdraw_consent(c3, purpose, "whatsapp", occurred_at=t + HOUR)
    withdraw_consent(c3, other_purpose, "whatsapp", occurred_at=t + 2 * HOUR)
    conversation = conversation_hand_off(
        conversation=conversation_for(contact=c3, account=account), reason="test"
    )
    conversation = conversation_hand_back(conversation=conversation, actor=agent)
    conversation = conversation_hand_off(conversation=conversation, reason="test")
    conversation_agent_replied(
        conversation=conversation, actor=agent, at=conversation.handed_off_at + HOUR
    )
    return metrics.MetricsQuery(team_ids=(team.pk,), since=now - 30 * DAY, until=now)


@pytest.mark.postgres
@pytest.mark.parametrize("window_days", [1, 7])
def test_postgresql_form_gives_the_portable_figures_on_edge_cases(edges, window_days):
    query = dataclasses.replace(edges, window_days=window_days)

    portable, postgresql = _both(query)

    assert postgresql == portable
    rows = {row["key"]: row for row in portable["campaign"]}
    assert set(rows) == {"campaign:7", "campaign:8"}


def test_edge_case_figures_are_exact(edges):
    """Whichever form the database runs (SQLite: portable, PostgreSQL: LATERAL)."""
    figures = metrics.message_figures(edges, ("campaign", "team"))
    rows = {row["key"]: row for row in figures["campaign"]}

    # c1: the reply at the window's end counts (7 days), the one at its start and the note
    # do not; c2's first message: its own reply after 3 h, and its second message as depth.
    assert (rows["campaign:7"]["messages"], rows["campaign:7"]["replied"]) == (2, 2)
    assert rows["campaign:7"]["median_reply_seconds"] == (7 * 86400 + 3 * 3600) / 2
    assert rows["campaign:7"]["dialog_depth"] == 1.5
    # c3: its reply came before it was created but after it was sent; one opt-out.
    assert (rows["campaign:8"]["replied"], rows["campaign:8"]["opt_outs"]) == (1, 1)
    assert rows["campaign:8"]["median_reply_seconds"] == 1800.0
    [team_row] = figures["team"]
    # Four outbound messages; c2's second one is answered after two hours.
    assert (team_row["messages"], team_row["replied"], team_row["opt_outs"]) == (4, 4, 1)


@pytest.fixture
def hand_offs(team, agent):
    """Three handed-off conversations, one message each before the hand-off: answered half an
    hour after it, never answered, and answered before it (a response the hand-off did not
    ask for). Only the first has a human response time; all three count as hand-offs."""
    now = timezone.now()
    t = now - 2 * DAY
    account = ChannelAccountFactory(team=team)
    conversations = []
    for contact in (ContactFactory(team=team) for _ in range(3)):
        metrics_tests._outbound(account, contact, t, status="sent", sent_at=t)
        conversations.append(
            conversation_hand_off(
                conversation=conversation_for(contact=contact, account=account), reason="test"
            )
        )
    answered, _unanswered, early = conversations
    conversation_agent_replied(
        conversation=answered, actor=agent, at=answered.handed_off_at + HOUR / 2
    )
    Conversation.objects.filter(pk=early.pk).update(first_response_at=early.handed_off_at - HOUR)
    return metrics.MetricsQuery(team_ids=(team.pk,), since=now - 30 * DAY, until=now)


@pytest.mark.postgres
def test_postgresql_form_gives_the_portable_human_responses(hand_offs):
    """The PostgreSQL form joins only answered hand-offs; the portable one every conversation."""
    portable, postgresql = _both(hand_offs, ("team", "day"))

    assert postgresql == portable
    [team_row] = portable["team"]
    assert (team_row["handoffs"], team_row["median_human_response_seconds"]) == (3, 1800.0)


@pytest.fixture
def window_ends(team):
    """Hand-offs and withdrawals on the edges of a message's window (t, t + 7 days]: at t
    (outside), at its end (inside) and a microsecond past it (outside), one conversation or
    contact each, plus a contact who withdrew twice before the message (outside). Hand-offs
    happen now (ledger entries keep their time), so those messages are dated back."""
    now = timezone.now()
    account = ChannelAccountFactory(team=team)
    purpose = PurposeFactory(team=team)
    edges = (0 * DAY, 7 * DAY, 7 * DAY + dt.timedelta(microseconds=1))
    for after in edges:
        contact = ContactFactory(team=team)
        message = metrics_tests._outbound(account, contact, now, status="sent")
        conversation = conversation_hand_off(
            conversation=conversation_for(contact=contact, account=account), reason="test"
        )
        handed_off = ConversationEvent.objects.get(
            conversation=conversation, kind=EventKind.HANDED_OFF
        )
        t = handed_off.occurred_at - after
        Message.objects.filter(pk=message.pk).update(created_at=t, sent_at=t)
    t = now - 10 * DAY
    for after in edges:
        contact = ContactFactory(team=team)
        metrics_tests._outbound(account, contact, t, status="sent", sent_at=t)
        withdraw_consent(contact, purpose, "whatsapp", occurred_at=t + after)
    twice = ContactFactory(team=team)
    metrics_tests._outbound(account, twice, t, status="sent", sent_at=t)
    withdraw_consent(twice, purpose, "whatsapp", occurred_at=t - 2 * HOUR)
    withdraw_consent(twice, purpose, "whatsapp", occurred_at=t - HOUR)
    return metrics.MetricsQuery(
        team_ids=(team.pk,), since=now - 30 * DAY, until=now + dt.timedelta(seconds=1)
    )


@pytest.mark.postgres
@pytest.mark.parametrize("window_days", [1, 7, 8])
def test_postgresql_form_gives_the_portable_handoffs_and_opt_outs_on_window_ends(
    window_ends, window_days
):
    """The PostgreSQL form tests each window against the instants of its conversation's
    hand-offs and its contact's withdrawals (a multirange); the portable one per message."""
    query = dataclasses.replace(window_ends, window_days=window_days)

    portable, postgresql = _both(query, ("team", "day"))

    assert postgresql == portable
    [team_row] = portable["team"]
    expected = {1: (0, 0), 7: (1, 1), 8: (2, 2)}[window_days]
    assert (team_row["handoffs"], team_row["opt_outs"]) == expected


def test_human_response_counts_only_responses_after_the_hand_off(hand_offs):
    [team_row] = metrics.message_metrics(hand_offs, group_by="team")

    assert (team_row["handoffs"], team_row["median_human_response_seconds"]) == (3, 1800.0)


def test_campaign_and_day_rows_carry_their_key_once(world):
    """A campaign's and a day's label is their key: the outcome rows hold it once."""
    columns = metrics._row_columns(("campaign", "day", "team"))

    assert set(columns) == {"key_campaign", "key_day", "key_team", "label_team"}
    figures = metrics.message_figures(world.query, ("campaign", "day"))
    assert all(row["label"] == row["key"] for rows in figures.values() for row in rows)


def test_unknown_grouping_is_refused(edges):
    with pytest.raises(ValueError, match="moon"):
        metrics.message_figures(edges, ("campaign", "moon"))


def _plan(sql, params):
    with transaction.atomic(), connection.cursor() as cursor:
        # The fixture's tables are tiny: without this the planner reads them whole, and the
        # plan would not show the per-message look-ahead that matters at scale.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
def test_postgresql_plan_reads_later_messages_once_per_message(world):
    groupings = ("campaign", "day")

    plan = _plan(*metrics._outcomes_sql_postgresql(world.query, groupings))
    portable = _plan(*metrics._outcomes_sql_portable(world.query, groupings))

    # One read of the later messages per message (alias r) for depth and first reply
    # together, no per-row subplans for hand-offs and opt-outs; the portable form reads
    # them twice (its subqueries' alias u0) and has four subplans.
    assert len(re.findall(r" on messaging_message r\b", plan)) == 1
    assert "SubPlan" not in plan
    # Only answered hand-offs are joined for the human response, not every conversation.
    assert re.search(r"CTE answered\n.* on messaging_conversation v\b", plan)
    assert "Filter: (first_response_at >= handed_off_at)" in plan
    assert len(re.findall(r" on messaging_message u0", portable)) == 2
    assert portable.count("SubPlan") == 4


@pytest.mark.postgres
def test_postgresql_plan_reads_the_period_once_in_conversation_order(world):
    """The period's outbound messages are read once (not kept in a CTE and read again for
    hand-offs and opt-outs), sorted by conversation and id for the look-ahead that follows
    each. (Which index they come from depends on the table's size: at scale the covering
    msg_message_outbound_period.)"""
    plan = _plan(*metrics._outcomes_sql_postgresql(world.query, ("campaign", "day")))

    assert len(re.findall(r" on messaging_message\b(?! r\b)", plan)) == 1
    assert "Sort Key: messaging_message.conversation_id, messaging_message.id" in plan
    # The only CTE: the answered hand-offs, read from their partial index.
    assert re.findall(r"^\s*CTE (\w+)$", plan, re.MULTILINE) == ["answered"]


@pytest.mark.postgres
def test_message_figures_run_the_postgresql_form_with_more_work_mem_no_jit_or_workers(
    world, django_assert_num_queries
):
    with django_assert_num_queries(2) as captured:
        metrics.message_figures(world.query, ("team", "day"))

    setting, statement = (query["sql"] for query in captured.captured_queries)
    assert "set_config('work_mem'" in setting
    assert metrics.FIGURES_WORK_MEM in setting
    assert "set_config('jit', 'off', true)" in setting
    assert "set_config('max_parallel_workers_per_gather', '0', true)" in setting
    assert "LATERAL" in statement


def _show(setting):
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {setting}")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_work_mem_is_raised_for_the_figures_statement_only(team):
    """Outside a transaction the figures run in one of their own: the raised work_mem ends
    with it, and a refused grouping changes nothing."""
    before, jit, workers = (
        _show("work_mem"),
        _show("jit"),
        _show("max_parallel_workers_per_gather"),
    )
    query = metrics.MetricsQuery(
        team_ids=(team.pk,), since=timezone.now() - 30 * DAY, until=timezone.now()
    )

    assert metrics.message_figures(query, ("team",)) == {"team": []}
    with pytest.raises(ValueError, match="moon"):
        metrics.message_figures(query, ("moon",))

    assert _show("work_mem") == before != metrics.FIGURES_WORK_MEM
    assert _show("jit") == jit
    assert _show("max_parallel_workers_per_gather") == workers != "0"


@pytest.mark.postgres
def test_figures_statement_runs_without_jit(world):
    """Inside the caller's transaction the figures statement's settings hold until it ends."""
    with transaction.atomic():
        metrics.message_figures(world.query, ("team",))
        assert _show("jit") == "off"


@pytest.mark.postgres
def test_human_responses_read_only_handed_off_conversations(hand_offs):
    """The figures statement and the hand-off figures find the handed-off conversations in
    their own partial index, without reading every conversation (of the team) for them."""
    with CaptureQueriesContext(connection) as captured:
        metrics.conversation_metrics(hand_offs, group_by="team")
    [medians] = [query["sql"] for query in captured if "percentile_cont" in query["sql"]]

    with transaction.atomic():
        responses = plan(medians, [])
    with transaction.atomic(), connection.cursor() as cursor:
        # At scale the conversations are hashed once, not looked up per message (a tiny table
        # is looked up): the hash is built from the partial index.
        cursor.execute("SET LOCAL enable_nestloop = off")
        figures = plan(*metrics._outcomes_sql_postgresql(hand_offs, ("team",)))

    # The conversations are read once, as v, for the hand-offs' response times: the teams'
    # handed-off ones, from their partial index (led by the team).
    assert re.search(
        # An index scan, or a bitmap one: which depends on the tiny table's statistics.
        r"(Scan using msg_conv_handed_off on messaging_conversation v|"
        r"Bitmap Index Scan on msg_conv_handed_off)\b.*\n\s+Index Cond: \(team_id = ANY",
        figures,
    )
    # Opt-outs come from the withdrawals' own index, not from the whole ledger.
    assert re.search(r"(Scan using|Bitmap Index Scan on) consent_event_withdrawn\b", figures)
    assert "msg_conv_handed_off" in responses
    assert "messaging_conversation_team_id" not in responses


def test_a_window_of_less_than_a_day_is_refused(world):
    with pytest.raises(ValueError, match="window_days"):
        dataclasses.replace(world.query, window_days=0)
