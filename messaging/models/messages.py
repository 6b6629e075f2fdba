"""Messages, their delivery lifecycle, provider receipts and the transactional outbox."""

from __future__ import annotations

import uuid
from typing import Final

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from approvals.models import TemplateVersion
from consent.models import Purpose
from crm.models import Channel, Contact, Team
from messaging.models.channels import ChannelAccount
from messaging.models.conversations import Conversation


class Direction(models.TextChoices):
    INBOUND = "inbound", _("Inbound")
    OUTBOUND = "outbound", _("Outbound")
    NOTE = "note", _("Internal note")


class SenderKind(models.TextChoices):
    CONTACT = "contact", _("Contact")
    AGENT = "agent", _("Agent")
    BOT = "bot", _("Automation")
    CAMPAIGN = "campaign", _("Campaign")
    SYSTEM = "system", _("System")
    API = "api", _("API")


class MessageStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    UNKNOWN = "unknown", _("Outcome unknown")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    READ = "read", _("Read")
    FAILED = "failed", _("Failed")
    REFUSED = "refused", _("Refused by the send gate")
    RECEIVED = "received", _("Received")


# Provider receipts only move a message forward; failed and refused are final.
STATUS_RANK: Final[dict[str, int]] = {
    MessageStatus.SCHEDULED: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.UNKNOWN: 3,
    MessageStatus.SENT: 4,
    MessageStatus.DELIVERED: 5,
    MessageStatus.READ: 6,
}
FINAL_STATUSES: Final = frozenset(
    {MessageStatus.FAILED, MessageStatus.REFUSED, MessageStatus.RECEIVED}
)
# Outbound messages that count against frequency caps (accepted and not failed).
COUNTED_STATUSES: Final = frozenset(STATUS_RANK) - {MessageStatus.SCHEDULED}


class MessageKind(models.TextChoices):
    TEXT = "text", _("Free text")
    TEMPLATE = "template", _("Template")
    MEDIA = "media", _("Media or other")


class Message(models.Model):
    """One message in a conversation, in either direction, or an internal note.

    Content fields are written once; the conversation's event chain holds their SHA-256
    (`body_hash`), so any later change is detected. Delivery fields (status and its times,
    provider id, error) are written only by messaging.services.delivery and
    messaging.services.receipts, forward only (STATUS_RANK).
    """

    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.PROTECT,
        related_name="messages",
        verbose_name=_("conversation"),
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+", editable=False)
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, related_name="messages", editable=False
    )
    account = models.ForeignKey(
        ChannelAccount, on_delete=models.PROTECT, related_name="messages", editable=False
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel, editable=False)
    direction = models.CharField(_("direction"), max_length=10, choices=Direction)
    kind = models.CharField(_("kind"), max_length=10, choices=MessageKind, default="text")
    template_version = models.ForeignKey(
        TemplateVersion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("template version"),
    )
    purpose = models.ForeignKey(
        Purpose,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("purpose"),
    )
    variables = models.JSONField(_("variables"), default=dict, blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    body = models.TextField(_("text"), blank=True)
    body_hash = models.CharField(_("content hash"), max_length=64, editable=False)
    sender_kind = models.CharField(_("sent by"), max_length=10, choices=SenderKind)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("sender"),
    )
    # Campaign or automation that produced it (a free reference; no FK across subsystems).
    origin = models.CharField(_("origin"), max_length=60, blank=True)
    # The send gate's decision and the inputs it saw (consents, window, template, cap).
    gate_decision = models.JSONField(_("send-gate decision"), default=dict, blank=True)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    provider_message_id = models.CharField(
        _("provider message id"), max_length=128, null=True, blank=True, editable=False
    )
    status = models.CharField(
        _("status"), max_length=10, choices=MessageStatus, editable=False, db_index=True
    )
    due_at = models.DateTimeField(_("due at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), editable=False, db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True, editable=False)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True, editable=False)
    read_at = models.DateTimeField(_("read at"), null=True, blank=True, editable=False)
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True, editable=False)
    error_code = models.CharField(_("error code"), max_length=64, blank=True, editable=False)
    error_detail = models.TextField(_("error detail"), blank=True, editable=False)
    # Pseudonymised on erasure (GDPR Art. 17): the body is replaced, its hash stays on the chain.
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["conversation", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider_message_id"],
                condition=Q(provider_message_id__isnull=False),
                name="%(app_label)s_%(class)s_unique_provider_id",
            )
        ]
        indexes = [
            # Covering: the metrics' look-ahead at a conversation's later messages (their
            # time and direction) reads the index only.
            models.Index(
                fields=["conversation", "id"],
                include=["created_at", "direction"],
                name="msg_message_conv_covering",
            ),
            # Frequency caps: outbound messages per contact and purpose in a period.
            models.Index(
                fields=["contact", "purpose", "created_at"],
                condition=Q(direction="outbound"),
                name="msg_message_frequency",
            ),
            models.Index(fields=["team", "created_at"], name="msg_message_team_created"),
            # Covering: the metrics' period of a team's outbound messages (what the figures
            # read of them) from the index only, not from a quarter of the table's pages.
            models.Index(
                fields=["team", "created_at"],
                include=[
                    "id",
                    "conversation",
                    "contact",
                    "sent_at",
                    "status",
                    "origin",
                    "purpose",
                    "template_version",
                ],
                condition=Q(direction="outbound"),
                name="msg_message_outbound_period",
            ),
        ]
        permissions = [("export_conversations", _("Can export conversations for audits"))]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.pk} ({self.status})"


class StatusReceipt(models.Model):
    """Every delivery receipt a provider sent, kept as received (also for unknown messages).

    A receipt whose message we do not know (yet) stays unmatched for reconciliation: the
    provider may report before our own transaction committed, or about a message sent
    elsewhere.
    """

    account = models.ForeignKey(
        ChannelAccount, on_delete=models.PROTECT, related_name="receipts", editable=False
    )
    message = models.ForeignKey(
        Message,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="receipts",
        editable=False,
    )
    provider_message_id = models.CharField(_("provider message id"), max_length=128)
    provider_status = models.CharField(_("provider status"), max_length=32)
    status = models.CharField(_("status"), max_length=10, choices=MessageStatus, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_detail = models.TextField(_("error detail"), blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    applied = models.BooleanField(_("applied"), default=False)
    raw = models.JSONField(_("payload"), default=dict)

    class Meta:
        verbose_name = _("status receipt")
        verbose_name_plural = _("status receipts")
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider_message_id", "provider_status", "error_code"],
                name="%(app_label)s_%(class)s_unique_receipt",
            )
        ]
        indexes = [
            models.Index(
                fields=["account", "provider_message_id"],
                condition=Q(message__isnull=True),
                name="msg_receipt_unmatched",
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider_message_id}: {self.provider_status}"


class OutboxState(models.TextChoices):
    PENDING = "pending", _("Pending")
    DONE = "done", _("Done")


class OutboxEntry(models.Model):
    """Written with its message in one transaction; the delivery worker works these off.

    `due_at` is when the message may go (scheduled sends, quiet hours, retry backoff); due
    rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED, so no two workers take one.
    """

    message = models.OneToOneField(
        Message, on_delete=models.PROTECT, related_name="outbox", editable=False
    )
    state = models.CharField(
        _("state"), max_length=10, choices=OutboxState, default=OutboxState.PENDING
    )
    due_at = models.DateTimeField(_("due at"))
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    dispatched_at = models.DateTimeField(_("last dispatched at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("outbox entry")
        verbose_name_plural = _("outbox")
        ordering = ["due_at", "id"]
        indexes = [
            models.Index(
                fields=["due_at"], condition=Q(state="pending"), name="msg_outbox_pending_due"
            )
        ]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.state})"
