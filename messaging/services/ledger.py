"""The conversation chain: every message and state change is appended here, nowhere else.

Appending locks the conversation row, so two events arriving at once get consecutive
sequence numbers and one unbroken chain. Event data holds content hashes, never text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from crm.ledger import GENESIS_HASH, canonical_json, sha256_hex
from crm.models import Contact
from messaging.models import (
    ChannelAccount,
    Conversation,
    ConversationEvent,
    Direction,
    EventKind,
    Message,
)

# WhatsApp's customer service window: free text is allowed this long after the contact wrote.
SERVICE_WINDOW = dt.timedelta(hours=24)


def actor_label(actor: AbstractBaseUser | None, fallback: str = "") -> str:
    return actor.get_username() if actor is not None else fallback


def content_hash(*, subject: str, body: str, variables: Mapping[str, Any]) -> str:
    """What the chain remembers of a message's content (the text itself may be erased)."""
    return sha256_hex(canonical_json({"subject": subject, "body": body, "variables": variables}))


def conversation_for(*, contact: Contact, account: ChannelAccount) -> Conversation:
    """The contact's conversation on this account, created on first contact, locked."""
    conversation = (
        Conversation.objects.select_for_update().filter(contact=contact, account=account).first()
    )
    if conversation is not None:
        return conversation
    try:
        with transaction.atomic():
            Conversation.objects.create(
                team_id=contact.team_id, contact=contact, account=account, channel=account.channel
            )
    except IntegrityError:
        pass  # created concurrently: lock the winner's row below
    return Conversation.objects.select_for_update().get(contact=contact, account=account)


def event_append(
    *,
    conversation: Conversation,
    kind: str,
    message: Message | None = None,
    actor: AbstractBaseUser | None = None,
    label: str = "",
    data: Mapping[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> ConversationEvent:
    """Append one event to a conversation locked by the caller (conversation_for/locked)."""
    now = timezone.now()
    event = ConversationEvent(
        conversation=conversation,
        sequence=conversation.last_sequence + 1,
        kind=kind,
        message=message,
        actor=actor,
        actor_label=actor_label(actor, label),
        data=dict(data or {}),
        occurred_at=(occurred_at or now).astimezone(dt.UTC),
        recorded_at=now.astimezone(dt.UTC),
    )
    event.seal(conversation.head_hash or GENESIS_HASH)
    event.save()
    conversation.last_sequence = event.sequence
    conversation.head_hash = event.hash
    Conversation.objects.filter(pk=conversation.pk).update(
        last_sequence=event.sequence, head_hash=event.hash
    )
    return event


def message_event_data(message: Message) -> dict[str, Any]:
    """The chained facts of a message: everything but its (erasable) text and its status."""
    return {
        "direction": message.direction,
        "kind": message.kind,
        "channel": message.channel,
        "body_hash": message.body_hash,
        "template_version": message.template_version_id,
        "purpose": message.purpose_id,
        "sender_kind": message.sender_kind,
        "provider_message_id": message.provider_message_id,
        "idempotency_key": str(message.idempotency_key),
        "status": message.status,
        "gate": {
            "allowed": message.gate_decision.get("allowed"),
            "reason": message.gate_decision.get("reason"),
        }
        if message.gate_decision
        else None,
        "created_at": message.created_at.astimezone(dt.UTC).isoformat(),
    }


_EVENT_FOR_DIRECTION = {
    Direction.INBOUND: EventKind.MESSAGE_IN,
    Direction.OUTBOUND: EventKind.MESSAGE_OUT,
    Direction.NOTE: EventKind.NOTE,
}


def message_record(
    *,
    conversation: Conversation,
    actor: AbstractBaseUser | None = None,
    label: str = "",
    occurred_at: dt.datetime | None = None,
    **fields: Any,
) -> Message:
    """Store a message in a locked conversation and chain it; updates the conversation's
    last-message times and, for inbound messages, opens the 24-hour service window."""
    now = timezone.now()
    message = Message(
        conversation=conversation,
        team_id=conversation.team_id,
        contact_id=conversation.contact_id,
        account_id=conversation.account_id,
        channel=conversation.channel,
        sender=actor if fields.get("direction") != Direction.INBOUND else None,
        created_at=now,
        **fields,
    )
    message.body_hash = content_hash(
        subject=message.subject, body=message.body, variables=message.variables
    )
    message.save()
    event_append(
        conversation=conversation,
        kind=_EVENT_FOR_DIRECTION[message.direction],
        message=message,
        actor=actor,
        label=label,
        data=message_event_data(message),
        occurred_at=occurred_at or now,
    )
    changes: dict[str, Any] = {}
    if message.direction != Direction.NOTE:
        changes["last_message_at"] = now
    if message.direction == Direction.INBOUND:
        at = occurred_at or now
        changes["last_inbound_at"] = at
        window_end = at + SERVICE_WINDOW
        if conversation.service_window_ends_at is None or window_end > (
            conversation.service_window_ends_at
        ):
            changes["service_window_ends_at"] = window_end
    for name, value in changes.items():
        setattr(conversation, name, value)
    if changes:
        Conversation.objects.filter(pk=conversation.pk).update(**changes)
    return message


def message_update(message: Message, **fields: Any) -> None:
    """Write delivery fields of a message locked by the caller (never its chained content)."""
    for name, value in fields.items():
        setattr(message, name, value)
    Message.objects.filter(pk=message.pk).update(**fields)


def status_event_append(
    message: Message, status: str, *, data: Mapping[str, Any] | None = None
) -> None:
    """Chain a delivery-status change of `message` into its conversation."""
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    event_append(
        conversation=conversation,
        kind=EventKind.STATUS,
        message=message,
        label="system",
        data={"status": status, **(data or {})},
    )
