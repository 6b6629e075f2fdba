"""Conversations (contact x channel account) and their hash-chained event ledger."""

from __future__ import annotations

from typing import Any, Final

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.ledger import LedgerEntry
from crm.models import Channel, Contact, Team, TimeStampedModel
from messaging.models.channels import ChannelAccount


class ConversationStatus(models.TextChoices):
    OPEN = "open", _("Open")
    WAITING = "waiting", _("Waiting for the contact")
    RESOLVED = "resolved", _("Resolved")


class Handler(models.TextChoices):
    BOT = "bot", _("Bot")
    HUMAN = "human", _("Human")


class Conversation(TimeStampedModel):
    """One dialog between a contact and a channel account; reopened by new inbound messages.

    Status, handler and assignment are written only by messaging.services.conversations, which
    appends a ConversationEvent for every change in the same transaction.
    """

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="conversations", verbose_name=_("team")
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, related_name="conversations", verbose_name=_("contact")
    )
    account = models.ForeignKey(
        ChannelAccount,
        on_delete=models.PROTECT,
        related_name="conversations",
        verbose_name=_("channel account"),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel, editable=False)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=ConversationStatus,
        default=ConversationStatus.OPEN,
        editable=False,
    )
    handler = models.CharField(
        _("handled by"), max_length=8, choices=Handler, default=Handler.BOT, editable=False
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_conversations",
        verbose_name=_("assigned agent"),
        editable=False,
    )
    service_window_ends_at = models.DateTimeField(
        _("service window ends"), null=True, blank=True, editable=False
    )
    first_response_due_at = models.DateTimeField(
        _("first response due"), null=True, blank=True, editable=False
    )
    first_response_at = models.DateTimeField(
        _("first human response"), null=True, blank=True, editable=False
    )
    handed_off_at = models.DateTimeField(_("handed off at"), null=True, blank=True, editable=False)
    last_message_at = models.DateTimeField(
        _("last message at"), null=True, blank=True, editable=False
    )
    last_inbound_at = models.DateTimeField(
        _("last inbound at"), null=True, blank=True, editable=False
    )
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True, editable=False)
    # Chain head: the hash of the last event and its sequence (updated under the row lock).
    last_sequence = models.PositiveIntegerField(default=0, editable=False)
    head_hash = models.CharField(max_length=64, blank=True, editable=False)

    history = HistoricalRecords(
        excluded_fields=[
            "updated_at",
            "last_sequence",
            "head_hash",
            "last_message_at",
            "last_inbound_at",
            "service_window_ends_at",
        ]
    )

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-last_message_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "account"], name="%(app_label)s_%(class)s_unique_contact"
            )
        ]
        indexes = [
            models.Index(fields=["team", "status", "-last_message_at"], name="msg_conv_inbox"),
            models.Index(
                fields=["first_response_due_at"],
                condition=Q(first_response_at__isnull=True, handler="human"),
                name="msg_conv_response_due",
            ),
            models.Index(fields=["assigned_to", "status"], name="msg_conv_agent_load"),
            # Metrics: the few handed-off conversations (human response times, hand-offs per
            # period) without reading every conversation of a team, or of all teams.
            models.Index(
                fields=["team", "handed_off_at"],
                condition=Q(handed_off_at__isnull=False),
                name="msg_conv_handed_off",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact} · {self.account}"


class EventKind(models.TextChoices):
    MESSAGE_IN = "message_in", _("Message received")
    MESSAGE_OUT = "message_out", _("Message accepted for sending")
    NOTE = "note", _("Internal note")
    STATUS = "status", _("Delivery status")
    ASSIGNED = "assigned", _("Assigned")
    HANDED_OFF = "handed_off", _("Handed off to a human")
    HANDED_BACK = "handed_back", _("Handed back to the bot")
    RESOLVED = "resolved", _("Resolved")
    REOPENED = "reopened", _("Reopened")
    WAITING = "waiting", _("Waiting for the contact")


# Events that carry a message (their data holds the message's content hash).
MESSAGE_EVENTS: Final = frozenset({EventKind.MESSAGE_IN, EventKind.MESSAGE_OUT, EventKind.NOTE})


class ConversationEvent(LedgerEntry):
    """Append-only, hash-chained record of everything that happened in a conversation.

    `data` never holds message text or other personal data, only ids, states and SHA-256
    content hashes: erasure pseudonymises the message bodies and the chain stays verifiable.
    """

    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.PROTECT,
        related_name="events",
        verbose_name=_("conversation"),
    )
    sequence = models.PositiveIntegerField(_("sequence"))
    kind = models.CharField(_("kind"), max_length=16, choices=EventKind)
    message = models.ForeignKey(
        "messaging.Message",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="events",
        verbose_name=_("message"),
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    actor_label = models.CharField(_("actor"), max_length=150, blank=True)
    data = models.JSONField(_("data"), default=dict)
    occurred_at = models.DateTimeField(_("occurred at"))
    recorded_at = models.DateTimeField(_("recorded at"))

    class Meta:
        verbose_name = _("conversation event")
        verbose_name_plural = _("conversation events")
        ordering = ["conversation", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "sequence"], name="%(app_label)s_%(class)s_unique_seq"
            )
        ]
        indexes = [
            # Metrics: hand-offs per conversation in a message's window, and per period.
            models.Index(
                fields=["conversation", "occurred_at"],
                condition=Q(kind="handed_off"),
                name="msg_event_handoff",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.sequence} {self.kind}"

    def chain_payload(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation_id,
            "sequence": self.sequence,
            "kind": self.kind,
            "message": self.message_id,
            "actor": self.actor_label,
            "data": self.data,
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
        }
