"""Messages in the data-subject machinery of the consent app (access, erasure, retention).

consent cannot import messaging, so it offers registries (consent.services.subjects and
.retention); MessagingConfig.ready() calls `register()` to plug the functions below in.
Pseudonymising replaces a message's text but keeps its `body_hash`: the conversation chains
hold only that hash, so they still verify after erasure, and so does an auditor export.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from django.db import transaction
from django.db.models import Case, Q, QuerySet, Value, When
from django.utils import timezone

from consent.models import RetentionPolicy
from consent.services import (
    ACCESS_EXPORT_SECTIONS,
    CONTACT_ACTIVITY_SOURCES,
    ERASURE_HOOKS,
    RETENTION_HANDLERS,
)
from crm.models import Contact
from messaging.models import Direction, Message, MessageStatus, StatusReceipt
from messaging.services.exports import ERASED_TEXT

BATCH_SIZE: Final = 500
# Not settled yet: delivery may still read the text (retention leaves these for a later run).
UNSETTLED_STATUSES: Final = (
    MessageStatus.SCHEDULED,
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.UNKNOWN,
)


def messages_pseudonymise(messages: QuerySet[Message], *, now: dt.datetime) -> int:
    """Replace the text, subject and variables of `messages` not yet erased; returns how many.

    Also blanks what else about them can name the person: an explicit address in the gate
    decision's request and the raw provider payloads of their receipts. `body_hash` stays.
    """
    due = messages.filter(erased_at__isnull=True)
    StatusReceipt.objects.filter(message__in=due).update(raw={})
    explicit = due.filter(gate_decision__request__has_key="address").exclude(
        gate_decision__request__address=None
    )
    for message in explicit.only("pk", "gate_decision"):
        decision = message.gate_decision
        decision["request"] = {**decision["request"], "address": None}
        Message.objects.filter(pk=message.pk).update(gate_decision=decision)
    return due.update(
        body=ERASED_TEXT,
        subject=Case(When(subject="", then=Value("")), default=Value(ERASED_TEXT)),
        variables={},
        erased_at=now,
    )


def contact_messages_erase(contact: Contact) -> None:
    """ERASURE_HOOKS: pseudonymise every message of an erased contact (also internal notes)."""
    messages_pseudonymise(
        Message.objects.filter(contact=contact), now=contact.erased_at or timezone.now()
    )


def contact_messages_section(contact: Contact) -> tuple[str, Any]:
    """ACCESS_EXPORT_SECTIONS: the contact's messages in either direction, oldest first."""
    rows = Message.objects.filter(contact=contact).order_by("created_at", "id")
    return "messages", [
        {
            "id": message.pk,
            "conversation": message.conversation_id,
            "direction": message.direction,
            "channel": message.channel,
            "created_at": message.created_at,
            "subject": message.subject,
            "body": message.body,
            "status": message.status,
            "sent_at": message.sent_at,
            "delivered_at": message.delivered_at,
            "read_at": message.read_at,
            "erased_at": message.erased_at,
        }
        for message in rows.iterator()
    ]


def _policy_scope(policy: RetentionPolicy) -> Q:
    """The policy's own team, or (global policy) every team without its own active policy."""
    if policy.team_id is not None:
        return Q(team_id=policy.team_id)
    own = RetentionPolicy.objects.filter(
        data_class=policy.data_class, is_active=True, team__isnull=False
    ).values("team_id")
    return ~Q(team_id__in=own)


def messages_retention_apply(
    policy: RetentionPolicy, cutoff: dt.datetime, *, dry_run: bool
) -> tuple[int, dict[str, Any]]:
    """RETENTION_HANDLERS["messages"]: pseudonymise messages created before `cutoff`.

    Messages cannot be deleted (their chain events point at them), so "delete" pseudonymises
    too. Unsettled outbound messages wait for a later run. One transaction per batch.
    """
    due = Message.objects.filter(
        _policy_scope(policy), created_at__lt=cutoff, erased_at__isnull=True
    ).exclude(status__in=UNSETTLED_STATUSES)
    if dry_run:
        return due.count(), {}
    now = timezone.now()
    done = 0
    while True:
        ids = list(due.order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE])
        if not ids:
            return done, {"pseudonymised": done}
        with transaction.atomic():
            done += messages_pseudonymise(Message.objects.filter(pk__in=ids), now=now)


def contacts_with_messages_since(cutoff: dt.datetime) -> QuerySet:
    """CONTACT_ACTIVITY_SOURCES: contacts who wrote or were written to since `cutoff`."""
    return (
        Message.objects.filter(created_at__gte=cutoff)
        .exclude(direction=Direction.NOTE)
        .values_list("contact_id", flat=True)
    )


def register() -> None:
    """Plug messages into the consent registries (idempotent: ready() may run twice)."""
    if contact_messages_section not in ACCESS_EXPORT_SECTIONS:
        ACCESS_EXPORT_SECTIONS.append(contact_messages_section)
    if contact_messages_erase not in ERASURE_HOOKS:
        ERASURE_HOOKS.append(contact_messages_erase)
    if contacts_with_messages_since not in CONTACT_ACTIVITY_SOURCES:
        CONTACT_ACTIVITY_SOURCES.append(contacts_with_messages_since)
    RETENTION_HANDLERS[RetentionPolicy.DataClass.MESSAGES] = messages_retention_apply
