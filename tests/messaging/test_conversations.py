"""Hand-off, assignment, take over, hand back, resolve/reopen, response times, presence."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from crm import roles
from crm.errors import PermissionRefused
from crm.ledger import verify_chain
from messaging.errors import AgentPresenceInvalid, ConversationRefused
from messaging.models import (
    AgentPresence,
    Conversation,
    ConversationEvent,
    ConversationStatus,
    EventKind,
    Handler,
    PresenceStatus,
)
from messaging.selectors import conversations_overdue, inbox
from messaging.services import (
    agent_presence_set,
    conversation_assign,
    conversation_hand_back,
    conversation_hand_off,
    conversation_inbound_received,
    conversation_resolve,
    conversation_take_over,
    message_send,
)
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import reachable_contact, receive_text

pytestmark = pytest.mark.django_db

STATE_FIELDS = (
    "status",
    "handler",
    "assigned_to_id",
    "first_response_due_at",
    "first_response_at",
    "handed_off_at",
    "resolved_at",
)


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team, first_response_minutes=30)


@pytest.fixture
def available_agent(make_user, team):
    """An agent of `team` who takes conversations now (capacity 5 unless given)."""

    def make(username: str, *, capacity: int = 5, status: str = PresenceStatus.AVAILABLE):
        user = make_user(username, roles.AGENT, team)
        agent_presence_set(user=user, status=status, capacity=capacity, actor=user)
        return user

    return make


def inbound(account, contact, text: str = "Hallo") -> Conversation:
    """An inbound message recorded as the webhook does, then handed to the conversation."""
    message = receive_text(account, contact, text)
    conversation = message.conversation
    conversation_inbound_received(conversation=conversation, message=message)
    return Conversation.objects.get(pk=conversation.pk)


def new_conversation(account) -> Conversation:
    return inbound(account, reachable_contact(account.team), "Hallo")


def kinds(conversation: Conversation) -> list[str]:
    return list(conversation.events.order_by("sequence").values_list("kind", flat=True))


def state(conversation: Conversation) -> tuple:
    conversation.refresh_from_db()
    return tuple(getattr(conversation, name) for name in STATE_FIELDS)


def chain_intact(conversation: Conversation) -> bool:
    return verify_chain(conversation.pk, conversation.events.order_by("sequence")) is None


@pytest.mark.parametrize(
    "text",
    [
        "agent",
        "AGENT please",
        "Kann ich mit einem Mensch sprechen?",
        "Bitte einen Berater!",
        "I want a human.",
        "Mitarbeiter, bitte",
        "  BERATER  ",
    ],
)
def test_a_request_word_hands_the_conversation_to_a_human(account, text):
    contact = reachable_contact(account.team)
    conversation = inbound(account, contact, text)

    assert conversation.handler == Handler.HUMAN
    assert conversation.handed_off_at is not None
    event = conversation.events.get(kind=EventKind.HANDED_OFF)
    assert event.data == {"reason": "requested"}
    assert event.actor_label == "system"


@pytest.mark.parametrize(
    "text",
    [
        "Reagenten bestellt",
        "humanity",
        "Menschenskinder, ist das spät",
        "Beratung",
        "Agentur",
        "Hallo",
    ],
)
def test_words_that_only_contain_a_request_word_do_not_hand_off(account, text):
    conversation = inbound(account, reachable_contact(account.team), text)

    assert conversation.handler == Handler.BOT
    assert not conversation.events.filter(kind=EventKind.HANDED_OFF).exists()


def test_request_words_come_from_the_setting_and_ignore_case_and_umlauts(account, settings):
    settings.MESSAGING_HANDOFF_WORDS = ["persönlich"]

    first = inbound(account, reachable_contact(account.team), "Bitte PERSOENLICH!")
    second = inbound(account, reachable_contact(account.team), "Persönlich bitte")
    third = inbound(account, reachable_contact(account.team), "Ich will einen Menschen")

    assert first.handler == Handler.HUMAN
    assert second.handler == Handler.HUMAN
    assert third.handler == Handler.BOT


def test_hand_off_sets_the_first_response_target_and_assigns_an_available_agent(
    account, available_agent
):
    anna = available_agent("anna")
    before = timezone.now()

    conversation = inbound(account, reachable_contact(account.team), "Mensch bitte")

    assert conversation.assigned_to == anna
    assert (
        before + dt.timedelta(minutes=30)
        <= conversation.first_response_due_at
        <= timezone.now() + dt.timedelta(minutes=30)
    )
    assert conversation.first_response_at is None
    assert kinds(conversation) == [EventKind.MESSAGE_IN, EventKind.HANDED_OFF, EventKind.ASSIGNED]
    assigned = conversation.events.get(kind=EventKind.ASSIGNED)
    assert assigned.data == {"agent": anna.pk, "previous": None, "auto": True}
    assert AgentPresence.objects.get(user=anna).last_assigned_at is not None
    assert chain_intact(conversation)


def test_assignment_goes_round_robin_among_the_least_loaded(account, available_agent, agent):
    anna, ben, cleo = available_agent("anna"), available_agent("ben"), available_agent("cleo")
    busy = new_conversation(account)
    conversation_assign(conversation=busy, agent=anna, actor=agent)

    assigned = [
        inbound(account, reachable_contact(account.team), "agent").assigned_to for _ in range(4)
    ]

    # anna starts with one open conversation; then everyone has one and anna waited longest.
    assert assigned == [ben, cleo, anna, ben]


def test_assignment_respects_presence_capacity_role_team_and_activity(
    account, available_agent, make_user, other_team, agent
):
    away = available_agent("away", status=PresenceStatus.AWAY)
    full = available_agent("full", capacity=1)
    conversation_assign(conversation=new_conversation(account), agent=full, actor=agent)
    marketer = make_user("marketer", roles.MARKETING, account.team)
    agent_presence_set(user=marketer, status=PresenceStatus.AVAILABLE, actor=marketer)
    foreign = make_user("foreign", roles.AGENT, other_team)
    agent_presence_set(user=foreign, status=PresenceStatus.AVAILABLE, actor=foreign)
    retired = available_agent("retired")
    retired.is_active = False
    retired.save()

    conversation = inbound(account, reachable_contact(account.team), "agent")

    assert conversation.handler == Handler.HUMAN
    assert conversation.assigned_to is None
    assert AgentPresence.objects.get(user=away).last_assigned_at is None


def test_resolved_conversations_do_not_count_against_capacity(account, available_agent):
    solo = available_agent("solo", capacity=1)
    first = inbound(account, reachable_contact(account.team), "agent")
    assert first.assigned_to == solo
    conversation_resolve(conversation=first, actor=solo)

    second = inbound(account, reachable_contact(account.team), "agent")

    assert second.assigned_to == solo


def test_nobody_available_leaves_the_conversation_in_the_queue(account, agent):
    conversation = inbound(account, reachable_contact(account.team), "Berater")

    assert conversation.handler == Handler.HUMAN
    assert conversation.assigned_to is None
    assert kinds(conversation) == [EventKind.MESSAGE_IN, EventKind.HANDED_OFF]
    assert list(inbox(agent, view="unassigned")) == [conversation]


def test_an_agent_takes_over_a_bot_conversation(account, agent):
    conversation = new_conversation(account)

    taken = conversation_take_over(conversation=conversation, actor=agent)

    assert taken.handler == Handler.HUMAN
    assert taken.assigned_to == agent
    assert taken.first_response_due_at is not None
    handed_off, assigned = taken.events.order_by("sequence")[1:]
    assert (handed_off.kind, handed_off.data) == (EventKind.HANDED_OFF, {"by": "agent"})
    assert (assigned.kind, assigned.actor) == (EventKind.ASSIGNED, agent)
    assert taken.history.first().history_user == agent
    assert chain_intact(taken)


def test_taking_over_from_the_queue_only_assigns(account, agent):
    queued = inbound(account, reachable_contact(account.team), "agent")
    due = queued.first_response_due_at

    taken = conversation_take_over(conversation=queued, actor=agent)

    assert taken.assigned_to == agent
    assert taken.first_response_due_at == due
    assert kinds(taken)[-2:] == [EventKind.HANDED_OFF, EventKind.ASSIGNED]
    assert taken.events.filter(kind=EventKind.HANDED_OFF).count() == 1


def test_hand_back_returns_the_conversation_to_the_bot(account, agent):
    conversation = conversation_take_over(conversation=new_conversation(account), actor=agent)

    back = conversation_hand_back(conversation=conversation, actor=agent)

    assert (back.handler, back.assigned_to, back.first_response_due_at) == (
        Handler.BOT,
        None,
        None,
    )
    event = back.events.order_by("sequence").last()
    assert (event.kind, event.data) == (EventKind.HANDED_BACK, {"previous_agent": agent.pk})
    assert chain_intact(back)


def test_handing_back_a_bot_conversation_is_refused_and_changes_nothing(account, agent):
    conversation = new_conversation(account)
    before, events = state(conversation), conversation.events.count()

    with pytest.raises(ConversationRefused):
        conversation_hand_back(conversation=conversation, actor=agent)

    assert state(conversation) == before
    assert conversation.events.count() == events


def test_handing_off_a_human_conversation_is_refused(account, agent):
    conversation = conversation_take_over(conversation=new_conversation(account), actor=agent)
    before, events = state(conversation), conversation.events.count()

    with pytest.raises(ConversationRefused) as refused:
        conversation_hand_off(conversation=conversation, actor=agent, reason="again")

    assert refused.value.status_code == 409
    assert state(conversation) == before
    assert conversation.events.count() == events


def test_resolve_then_a_new_inbound_message_reopens(account, agent):
    contact = reachable_contact(account.team)
    conversation = conversation_take_over(
        conversation=inbound(account, contact, "Hallo"), actor=agent
    )
    message_send(contact=contact, account=account, actor=agent, text="Wie kann ich helfen?")

    resolved = conversation_resolve(conversation=conversation, actor=agent)
    assert (resolved.status, resolved.first_response_due_at) == (ConversationStatus.RESOLVED, None)
    assert resolved.resolved_at is not None

    reopened = inbound(account, contact, "Noch eine Frage")

    assert reopened.status == ConversationStatus.OPEN
    assert reopened.resolved_at is None
    assert reopened.assigned_to == agent
    # A new exchange: the agent owes a new first response.
    assert reopened.first_response_at is None
    assert reopened.first_response_due_at is not None
    event = reopened.events.get(kind=EventKind.REOPENED)
    assert event.data["previous"] == ConversationStatus.RESOLVED
    assert kinds(reopened) == [
        EventKind.MESSAGE_IN,
        EventKind.HANDED_OFF,
        EventKind.ASSIGNED,
        EventKind.MESSAGE_OUT,
        EventKind.RESOLVED,
        EventKind.MESSAGE_IN,
        EventKind.REOPENED,
    ]
    assert chain_intact(reopened)


def test_resolving_a_resolved_conversation_is_refused(account, agent):
    conversation = conversation_resolve(conversation=new_conversation(account), actor=agent)
    before, events = state(conversation), conversation.events.count()

    with pytest.raises(ConversationRefused):
        conversation_resolve(conversation=conversation, actor=agent)

    assert state(conversation) == before
    assert conversation.events.count() == events


def test_a_resolved_conversation_cannot_be_assigned_or_taken_over(account, agent):
    conversation = conversation_resolve(conversation=new_conversation(account), actor=agent)
    before = state(conversation)

    with pytest.raises(ConversationRefused):
        conversation_take_over(conversation=conversation, actor=agent)
    with pytest.raises(ConversationRefused):
        conversation_assign(conversation=conversation, agent=agent, actor=agent)

    assert state(conversation) == before


def test_a_waiting_conversation_opens_on_inbound(account):
    contact = reachable_contact(account.team)
    conversation = inbound(account, contact)
    Conversation.objects.filter(pk=conversation.pk).update(status=ConversationStatus.WAITING)

    reopened = inbound(account, contact, "Da bin ich wieder")

    assert reopened.status == ConversationStatus.OPEN
    assert reopened.events.get(kind=EventKind.REOPENED).data["previous"] == "waiting"


def test_first_response_is_recorded_by_the_agents_reply_and_clears_the_due_time(account, agent):
    contact = reachable_contact(account.team)
    conversation = conversation_take_over(conversation=inbound(account, contact), actor=agent)
    assert conversation.first_response_due_at is not None

    message_send(contact=contact, account=account, actor=agent, text="Ich bin da.")
    conversation.refresh_from_db()
    first = conversation.first_response_at
    message_send(contact=contact, account=account, actor=agent, text="Noch etwas?")
    conversation.refresh_from_db()

    assert first is not None
    assert conversation.first_response_at == first
    assert conversation.first_response_due_at is None
    assert chain_intact(conversation)


def test_inbound_on_a_human_conversation_starts_the_clock_once(account, agent):
    contact = reachable_contact(account.team)
    conversation = conversation_take_over(conversation=inbound(account, contact), actor=agent)
    due = conversation.first_response_due_at

    again = inbound(account, contact, "Hallo??")

    assert again.first_response_due_at == due


def test_a_bot_reply_is_not_a_human_response(account, agent):
    contact = reachable_contact(account.team)
    conversation = conversation_take_over(conversation=inbound(account, contact), actor=agent)

    message_send(contact=contact, account=account, actor=None, sender_kind="bot", text="Moment")
    conversation.refresh_from_db()

    assert conversation.first_response_at is None


def test_overdue_lists_human_conversations_without_a_response_past_their_target(account, agent):
    late = inbound(account, reachable_contact(account.team), "agent")
    answered_contact = reachable_contact(account.team)
    answered = inbound(account, answered_contact, "agent")
    message_send(contact=answered_contact, account=account, actor=agent, text="Hallo!")
    new_conversation(account)  # the bot handles it
    later = timezone.now() + dt.timedelta(minutes=31)

    assert list(conversations_overdue(later)) == [late]
    assert list(conversations_overdue(timezone.now())) == []
    assert list(inbox(agent, view="overdue", now=later)) == [late]
    assert answered.pk != late.pk


def test_every_state_change_is_on_the_verified_chain(account, agent, make_user):
    colleague = make_user("colleague", roles.AGENT, account.team)
    contact = reachable_contact(account.team)
    conversation = inbound(account, contact, "Berater bitte")
    conversation = conversation_assign(conversation=conversation, agent=colleague, actor=agent)
    conversation = conversation_take_over(conversation=conversation, actor=agent)
    conversation = conversation_hand_back(conversation=conversation, actor=agent)
    conversation = conversation_resolve(conversation=conversation, actor=agent)
    inbound(account, contact, "Hallo")

    assert kinds(conversation) == [
        EventKind.MESSAGE_IN,
        EventKind.HANDED_OFF,
        EventKind.ASSIGNED,
        EventKind.ASSIGNED,
        EventKind.HANDED_BACK,
        EventKind.RESOLVED,
        EventKind.MESSAGE_IN,
        EventKind.REOPENED,
    ]
    assert chain_intact(conversation)
    # simple-history kept every change of the tracked fields too
    assert conversation.history.count() >= 6


def test_assigning_a_bot_conversation_hands_it_to_people(account, agent):
    conversation = conversation_assign(
        conversation=new_conversation(account), agent=agent, actor=agent
    )

    assert (conversation.handler, conversation.assigned_to) == (Handler.HUMAN, agent)
    assert kinds(conversation)[-2:] == [EventKind.HANDED_OFF, EventKind.ASSIGNED]
    assert conversation.events.get(kind=EventKind.HANDED_OFF).data == {"reason": "assigned"}


def test_assigning_the_current_agent_again_changes_nothing(account, agent):
    conversation = conversation_take_over(conversation=new_conversation(account), actor=agent)
    events = conversation.events.count()

    conversation_assign(conversation=conversation, agent=agent, actor=agent)

    assert conversation.events.count() == events


@pytest.mark.parametrize("who", ["marketer", "foreign_agent", "inactive_agent"])
def test_only_active_agents_of_the_team_can_be_assigned(account, agent, make_user, other_team, who):
    candidates = {
        "marketer": lambda: make_user("m", roles.MARKETING, account.team),
        "foreign_agent": lambda: make_user("f", roles.AGENT, other_team),
        "inactive_agent": lambda: make_user("i", roles.AGENT, account.team, is_active=False),
    }
    candidate = candidates[who]()
    conversation = new_conversation(account)
    before, events = state(conversation), conversation.events.count()

    with pytest.raises(ConversationRefused) as refused:
        conversation_assign(conversation=conversation, agent=candidate, actor=agent)

    assert refused.value.field == "agent"
    assert state(conversation) == before
    assert conversation.events.count() == events


def test_a_superuser_can_be_assigned(account, agent, superuser):
    conversation = conversation_assign(
        conversation=new_conversation(account), agent=superuser, actor=agent
    )

    assert conversation.assigned_to == superuser


@pytest.mark.parametrize(
    "action",
    ["hand_off", "assign", "take_over", "hand_back", "resolve"],
)
@pytest.mark.parametrize("who", ["foreign_agent", "marketing"])
def test_users_without_the_right_for_the_team_change_nothing(
    account, agent, make_user, other_team, marketing, action, who
):
    actor = make_user("foreign", roles.AGENT, other_team) if who == "foreign_agent" else marketing
    conversation = new_conversation(account)
    if action == "hand_back":
        conversation = conversation_take_over(conversation=conversation, actor=agent)
    before, events = state(conversation), conversation.events.count()
    calls = {
        "hand_off": lambda: conversation_hand_off(
            conversation=conversation, actor=actor, reason="x"
        ),
        "assign": lambda: conversation_assign(conversation=conversation, agent=agent, actor=actor),
        "take_over": lambda: conversation_take_over(conversation=conversation, actor=actor),
        "hand_back": lambda: conversation_hand_back(conversation=conversation, actor=actor),
        "resolve": lambda: conversation_resolve(conversation=conversation, actor=actor),
    }

    with pytest.raises(PermissionRefused):
        calls[action]()

    assert state(conversation) == before
    assert conversation.events.count() == events


def test_the_system_hands_off_without_an_actor(account):
    conversation = conversation_hand_off(
        conversation=new_conversation(account), reason="escalation"
    )

    assert conversation.handler == Handler.HUMAN
    assert conversation.events.get(kind=EventKind.HANDED_OFF).data == {"reason": "escalation"}


def test_agents_set_their_own_presence(agent):
    presence = agent_presence_set(user=agent, status="available", capacity=3, actor=agent)

    assert (presence.status, presence.capacity) == (PresenceStatus.AVAILABLE, 3)
    again = agent_presence_set(user=agent, status="away", actor=agent)
    assert (again.pk, again.status, again.capacity) == (presence.pk, "away", 3)


def test_a_colleague_with_the_permission_sets_anothers_presence(agent, make_user, team):
    colleague = make_user("colleague", roles.AGENT, team)

    presence = agent_presence_set(user=colleague, status="available", actor=agent)

    assert presence.user == colleague


@pytest.mark.parametrize("who", ["marketing", "foreign_agent"])
def test_others_presence_needs_the_permission_and_a_shared_team(
    agent, marketing, make_user, other_team, who
):
    actor = make_user("foreign", roles.AGENT, other_team) if who == "foreign_agent" else marketing

    with pytest.raises(PermissionRefused):
        agent_presence_set(user=agent, status="available", actor=actor)

    assert not AgentPresence.objects.filter(user=agent).exists()


@pytest.mark.parametrize(
    ("status", "capacity", "field"),
    [
        ("busy", None, "status"),
        ("available", 0, "capacity"),
        ("available", 101, "capacity"),
        ("available", True, "capacity"),
        ("available", "5", "capacity"),
    ],
)
def test_presence_input_is_validated(agent, status, capacity, field):
    with pytest.raises(AgentPresenceInvalid) as refused:
        agent_presence_set(user=agent, status=status, capacity=capacity, actor=agent)

    assert refused.value.field == field
    assert not AgentPresence.objects.filter(user=agent).exists()


def test_inbound_received_refreshes_the_callers_chain_head(account):
    contact = reachable_contact(account.team)
    message = receive_text(account, contact, "agent")
    conversation = message.conversation

    conversation_inbound_received(conversation=conversation, message=message)

    assert (
        conversation.last_sequence
        == ConversationEvent.objects.filter(conversation=conversation).count()
    )
    assert conversation.handler == Handler.HUMAN


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_hand_offs_never_exceed_an_agents_capacity(account, available_agent):
    solo = available_agent("solo", capacity=1)
    conversations = [new_conversation(account) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def hand_off(conversation: Conversation) -> None:
        try:
            barrier.wait(timeout=5)
            conversation_hand_off(conversation=conversation, reason="requested")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hand_off, args=(c,)) for c in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert Conversation.objects.filter(handler=Handler.HUMAN).count() == 2
    assert Conversation.objects.filter(assigned_to=solo).count() == 1
