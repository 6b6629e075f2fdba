"""Conversations: inbound handling, hand-off to a human, assignment, hand-back, resolve.

The only writer of a conversation's status, handler, assignment and response times. Each
service locks the conversation row, saves the change with save() (simple-history records it)
and appends a ConversationEvent to the conversation's chain in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from consent import keywords as consent_keywords
from crm import roles
from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from messaging.errors import AgentPresenceInvalid, ConversationRefused
from messaging.models import (
    AgentPresence,
    Conversation,
    ConversationStatus,
    EventKind,
    Handler,
    Message,
    PresenceStatus,
)

# Module import: automation imports this module in turn (rules that hand off).
from messaging.services import automation
from messaging.services.events import conversation_handed_off_publish
from messaging.services.ledger import event_append

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

CHANGE_PERM: Final = "messaging.change_conversation"
PRESENCE_PERM: Final = "messaging.change_agentpresence"
SYSTEM_LABEL: Final = "system"
# Conversations that count against an agent's capacity.
ACTIVE_STATUSES: Final = (ConversationStatus.OPEN, ConversationStatus.WAITING)
CAPACITY_MIN: Final = 1
CAPACITY_MAX: Final = 100
# Consent already answered these (and STOP must never be followed by a bot message).
CONSENT_KEYWORD_KINDS: Final = frozenset({"withdraw", "grant"})


def handoff_requested(text: str) -> bool:
    """Whether the text asks for a person (setting MESSAGING_HANDOFF_WORDS, whole words)."""
    words = settings.MESSAGING_HANDOFF_WORDS
    folded = automation.text_fold(text)
    return any(automation.mentions(folded, word) for word in words)


def is_team_agent(user: AbstractBaseUser, team_id: int) -> bool:
    """Active, and a member of the team with the agent role, or a superuser."""
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    return (
        team_id in crm_selectors.member_team_ids(user)
        and user.groups.filter(name=roles.AGENT).exists()
    )


def _ensure_may_change(actor: AbstractBaseUser | None, conversation: Conversation) -> None:
    if actor is not None and not crm_selectors.user_may_write(
        actor, CHANGE_PERM, conversation.team_id
    ):
        raise PermissionRefused(_("You may not change conversations of this team."))


def _locked(conversation: Conversation) -> Conversation:
    """A fresh copy of the conversation, locked until the transaction ends."""
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("team", "account", "contact")
        .get(pk=conversation.pk)
    )


def _save(
    conversation: Conversation, actor: AbstractBaseUser | None, *fields: str, reason: str = ""
) -> None:
    if actor is not None:
        conversation._history_user = actor
    if reason:
        conversation._change_reason = reason
    conversation.save(update_fields=[*fields, "updated_at"])


def _event(
    conversation: Conversation, kind: str, actor: AbstractBaseUser | None, **data: Any
) -> None:
    event_append(conversation=conversation, kind=kind, actor=actor, label=SYSTEM_LABEL, data=data)


def _refuse_if_resolved(conversation: Conversation) -> None:
    if conversation.status == ConversationStatus.RESOLVED:
        raise ConversationRefused(
            _("The conversation is resolved; the contact's next message reopens it.")
        )


def _response_due(conversation: Conversation, now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(minutes=conversation.account.first_response_minutes)


def _to_human(
    conversation: Conversation, actor: AbstractBaseUser | None, now: dt.datetime, **data: Any
) -> None:
    """Hand the conversation to people: a new first response is owed by the target time."""
    conversation.handler = Handler.HUMAN
    conversation.handed_off_at = now
    conversation.first_response_due_at = _response_due(conversation, now)
    conversation.first_response_at = None
    _save(
        conversation,
        actor,
        "handler",
        "handed_off_at",
        "first_response_due_at",
        "first_response_at",
    )
    _event(conversation, EventKind.HANDED_OFF, actor, **data)
    conversation_handed_off_publish(conversation=conversation, reason=str(data.get("reason", "")))


def _assign(
    conversation: Conversation,
    agent: AbstractBaseUser,
    actor: AbstractBaseUser | None,
    now: dt.datetime,
    *,
    auto: bool,
) -> None:
    previous = conversation.assigned_to_id
    conversation.assigned_to = agent
    _save(conversation, actor, "assigned_to")
    # Round robin starts after whoever got a conversation last, however it was assigned.
    AgentPresence.objects.filter(user=agent).update(last_assigned_at=now)
    _event(conversation, EventKind.ASSIGNED, actor, agent=agent.pk, previous=previous, auto=auto)


def _next_agent(conversation: Conversation, now: dt.datetime) -> AbstractBaseUser | None:
    """The available team agent with the fewest open conversations below their capacity;
    ties go to whoever waited longest since their last assignment, then the lowest id."""
    presences = list(
        AgentPresence.objects.select_for_update(of=("self",))
        .filter(
            user__in=crm_selectors.team_members(conversation.team),
            user__is_active=True,
            user__groups__name=roles.AGENT,
            status=PresenceStatus.AVAILABLE,
        )
        .select_related("user")
        .order_by("user_id")
    )
    if not presences:
        return None
    loads = dict(
        Conversation.objects.filter(
            assigned_to_id__in=[presence.user_id for presence in presences],
            status__in=ACTIVE_STATUSES,
        )
        .order_by()
        .values("assigned_to_id")
        .annotate(open=Count("id"))
        .values_list("assigned_to_id", "open")
    )
    free = [
        presence for presence in presences if loads.get(presence.user_id, 0) < presence.capacity
    ]
    if not free:
        return None
    chosen = min(
        free,
        key=lambda presence: (
            loads.get(presence.user_id, 0),
            presence.last_assigned_at is not None,
            presence.last_assigned_at or now,
            presence.user_id,
        ),
    )
    return chosen.user


def _reopen(conversation: Conversation, message: Message) -> None:
    previous = conversation.status
    conversation.status = ConversationStatus.OPEN
    fields = ["status"]
    if previous == ConversationStatus.RESOLVED:
        conversation.resolved_at = None
        fields.append("resolved_at")
        if conversation.handler == Handler.HUMAN:
            # A new exchange after the resolution: the agents owe a new first response.
            conversation.first_response_at = None
            conversation.first_response_due_at = None
            fields += ["first_response_at", "first_response_due_at"]
    _save(conversation, None, *fields, reason="inbound message")
    _event(conversation, EventKind.REOPENED, None, previous=previous, message=message.pk)


@transaction.atomic
def conversation_inbound_received(*, conversation: Conversation, message: Message) -> None:
    """React to a recorded inbound message: reopen, hand off on request, let the bot answer,
    or start the human first-response clock. Refreshes the caller's `conversation`."""
    locked = _locked(conversation)
    if locked.status != ConversationStatus.OPEN:
        _reopen(locked, message)
    if locked.handler == Handler.BOT:
        if handoff_requested(message.body):
            conversation_hand_off(conversation=locked, reason="requested")
        elif consent_keywords.keyword_kind(message.body) not in CONSENT_KEYWORD_KINDS:
            automation.automation_run(conversation=locked, message=message)
    elif locked.first_response_at is None and locked.first_response_due_at is None:
        locked.first_response_due_at = _response_due(locked, timezone.now())
        _save(locked, None, "first_response_due_at")
    # Events were appended under other instances: the caller's chain head must be current.
    conversation.refresh_from_db()


@transaction.atomic
def conversation_hand_off(
    *, conversation: Conversation, actor: AbstractBaseUser | None = None, reason: str
) -> Conversation:
    """Give a bot-handled conversation to a human and assign an available agent of the team
    (round robin among the least loaded); with nobody available it waits in the queue."""
    _ensure_may_change(actor, conversation)
    locked = _locked(conversation)
    _refuse_if_resolved(locked)
    if locked.handler == Handler.HUMAN:
        raise ConversationRefused(_("The conversation is already handled by a person."))
    now = timezone.now()
    _to_human(locked, actor, now, reason=str(reason)[:60])
    if locked.assigned_to_id is None:
        agent = _next_agent(locked, now)
        if agent is not None:
            _assign(locked, agent, actor, now, auto=True)
    return locked


@transaction.atomic
def conversation_assign(
    *, conversation: Conversation, agent: AbstractBaseUser, actor: AbstractBaseUser | None
) -> Conversation:
    """Assign an agent of the team (presence and capacity are the assigner's call); a
    bot-handled conversation is handed to people at the same time."""
    _ensure_may_change(actor, conversation)
    locked = _locked(conversation)
    _refuse_if_resolved(locked)
    if not is_team_agent(agent, locked.team_id):
        raise ConversationRefused(
            _("%(user)s is not an agent of this team.") % {"user": agent.get_username()},
            field="agent",
        )
    now = timezone.now()
    if locked.handler == Handler.BOT:
        _to_human(locked, actor, now, reason="assigned")
    if locked.assigned_to_id != agent.pk:
        _assign(locked, agent, actor, now, auto=False)
    return locked


@transaction.atomic
def conversation_take_over(*, conversation: Conversation, actor: AbstractBaseUser) -> Conversation:
    """The acting agent takes the conversation from the bot or the queue and answers it."""
    if actor is None:
        raise ConversationRefused(_("Only a person can take over a conversation."))
    _ensure_may_change(actor, conversation)
    locked = _locked(conversation)
    _refuse_if_resolved(locked)
    now = timezone.now()
    if locked.handler == Handler.BOT:
        _to_human(locked, actor, now, by="agent")
    if locked.assigned_to_id != actor.pk:
        _assign(locked, actor, actor, now, auto=False)
    return locked


@transaction.atomic
def conversation_hand_back(
    *, conversation: Conversation, actor: AbstractBaseUser | None
) -> Conversation:
    """Give the conversation back to the bot: unassigned, no response owed."""
    _ensure_may_change(actor, conversation)
    locked = _locked(conversation)
    if locked.handler == Handler.BOT:
        raise ConversationRefused(_("The conversation is already handled by the bot."))
    previous = locked.assigned_to_id
    locked.handler = Handler.BOT
    locked.assigned_to = None
    locked.first_response_due_at = None
    _save(locked, actor, "handler", "assigned_to", "first_response_due_at")
    _event(locked, EventKind.HANDED_BACK, actor, previous_agent=previous)
    return locked


@transaction.atomic
def conversation_resolve(
    *, conversation: Conversation, actor: AbstractBaseUser | None
) -> Conversation:
    """Close the conversation; the contact's next message reopens it."""
    _ensure_may_change(actor, conversation)
    locked = _locked(conversation)
    if locked.status == ConversationStatus.RESOLVED:
        raise ConversationRefused(_("The conversation is already resolved."))
    previous = locked.status
    locked.status = ConversationStatus.RESOLVED
    locked.resolved_at = timezone.now()
    # A resolved conversation owes no response; reopening starts a new clock.
    locked.first_response_due_at = None
    _save(locked, actor, "status", "resolved_at", "first_response_due_at")
    _event(locked, EventKind.RESOLVED, actor, previous=previous)
    return locked


@transaction.atomic
def conversation_agent_replied(
    *, conversation: Conversation, actor: AbstractBaseUser, at: dt.datetime
) -> None:
    """Record the first human response after a hand-off (called by message_send).

    No permission check of its own: the send it records was already allowed. No event
    either: the message's own chain event is the record.
    """
    if conversation.handler != Handler.HUMAN or conversation.first_response_at is not None:
        return
    locked = _locked(conversation)
    if locked.handler != Handler.HUMAN or locked.first_response_at is not None:
        return
    locked.first_response_at = at
    locked.first_response_due_at = None
    _save(locked, actor, "first_response_at", "first_response_due_at")


def _check_presence(status: str, capacity: int | None) -> None:
    if status not in PresenceStatus.values:
        raise AgentPresenceInvalid(
            _("Unknown status “%(status)s”.") % {"status": status}, field="status"
        )
    if capacity is None:
        return
    if (
        isinstance(capacity, bool)
        or not isinstance(capacity, int)
        or not CAPACITY_MIN <= capacity <= CAPACITY_MAX
    ):
        raise AgentPresenceInvalid(
            _("The capacity must be a whole number from %(min)d to %(max)d.")
            % {"min": CAPACITY_MIN, "max": CAPACITY_MAX},
            field="capacity",
        )


def _ensure_may_set_presence(actor: AbstractBaseUser | None, user: AbstractBaseUser) -> None:
    """Everyone sets their own; others' needs the permission and a shared team."""
    if actor is None or actor.pk == user.pk:
        return
    shares_team = actor.is_superuser or bool(
        set(crm_selectors.member_team_ids(actor)) & set(crm_selectors.member_team_ids(user))
    )
    if not (actor.has_perm(PRESENCE_PERM) and shares_team):
        raise PermissionRefused(_("You may not change this agent's availability."))


@transaction.atomic
def agent_presence_set(
    *,
    user: AbstractBaseUser,
    status: str,
    capacity: int | None = None,
    actor: AbstractBaseUser | None,
) -> AgentPresence:
    """Set whether the agent takes new conversations now and (optionally) how many at once."""
    _ensure_may_set_presence(actor, user)
    _check_presence(status, capacity)
    presence, _created = AgentPresence.objects.select_for_update().get_or_create(user=user)
    presence.status = status
    if capacity is not None:
        presence.capacity = capacity
    presence.save()
    return presence
