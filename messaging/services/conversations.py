"""Conversations: inbound handling, hand-off, assignment, resolve/reopen (being written)."""

from __future__ import annotations

from messaging.models import Conversation, Message


def conversation_inbound_received(*, conversation: Conversation, message: Message) -> None:
    """Reopen, hand-off words, first-response due time, automation (to be implemented)."""
