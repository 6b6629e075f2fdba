"""Campaigns: one approved template version per channel, sent to a segment through the gate.

The audience is frozen as CampaignRecipient rows at launch (one per contact, enforced by a
constraint), then fanned out in batches; each recipient gets at most one message.
"""

from __future__ import annotations

from typing import Final

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from crm.models import Channel, Segment, Team, TimeStampedModel


class CampaignState(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    RUNNING = "running", _("Running")
    PAUSED = "paused", _("Paused")
    COMPLETED = "completed", _("Completed")
    CANCELLED = "cancelled", _("Cancelled")
    # A template version stopped being sendable (expired, retired) while the campaign ran.
    STOPPED = "stopped", _("Stopped")


# The whole lifecycle on one screen; any move not listed here is refused.
CAMPAIGN_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    CampaignState.DRAFT: frozenset(
        {CampaignState.SCHEDULED, CampaignState.RUNNING, CampaignState.CANCELLED}
    ),
    CampaignState.SCHEDULED: frozenset(
        {CampaignState.RUNNING, CampaignState.CANCELLED, CampaignState.STOPPED}
    ),
    CampaignState.RUNNING: frozenset(
        {
            CampaignState.PAUSED,
            CampaignState.COMPLETED,
            CampaignState.CANCELLED,
            CampaignState.STOPPED,
        }
    ),
    CampaignState.PAUSED: frozenset(
        {CampaignState.RUNNING, CampaignState.CANCELLED, CampaignState.STOPPED}
    ),
    CampaignState.COMPLETED: frozenset(),
    CampaignState.CANCELLED: frozenset(),
    CampaignState.STOPPED: frozenset(),
}


class ChannelMode(models.TextChoices):
    FIXED = "fixed", _("One fixed channel")
    PREFERRED = "preferred", _("Each contact's preferred channel, with a fallback order")


class Campaign(TimeStampedModel):
    """A template version per channel sent to a segment (or the whole team)."""

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="campaigns", verbose_name=_("team")
    )
    name = models.CharField(_("name"), max_length=200)
    segment = models.ForeignKey(
        Segment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        verbose_name=_("segment"),
        help_text=_("Empty: every contact of the team."),
    )
    # Derived from the templates by the service; every channel's template shares it.
    purpose = models.ForeignKey(
        "consent.Purpose",
        on_delete=models.PROTECT,
        related_name="campaigns",
        verbose_name=_("purpose"),
        editable=False,
    )
    channel_mode = models.CharField(
        _("channel choice"), max_length=16, choices=ChannelMode, default=ChannelMode.FIXED
    )
    scheduled_at = models.DateTimeField(
        _("scheduled at"), null=True, blank=True, help_text=_("Empty: start at launch.")
    )
    throttle_per_second = models.PositiveIntegerField(
        _("messages per second"),
        null=True,
        blank=True,
        help_text=_("Empty: the slowest channel account's documented rate."),
    )
    # Written only by services.campaign_transition().
    state = models.CharField(
        _("state"),
        max_length=16,
        choices=CampaignState,
        default=CampaignState.DRAFT,
        editable=False,
    )
    state_reason = models.CharField(_("state reason"), max_length=200, blank=True, editable=False)
    recipients_count = models.PositiveIntegerField(_("recipients"), default=0, editable=False)
    sent_count = models.PositiveIntegerField(_("sent"), default=0, editable=False)
    refused_count = models.PositiveIntegerField(_("refused"), default=0, editable=False)
    failed_count = models.PositiveIntegerField(_("failed"), default=0, editable=False)
    launched_at = models.DateTimeField(_("launched at"), null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True, editable=False)
    # Written only by services._enqueue_batch: when the next batch is due, and which queued
    # batch task is the campaign's own. The stalled-campaign sweep starts a new chain when a
    # batch is long overdue (its task lost in a broker outage); a task of an older chain that
    # turns up late finds its chain superseded and does nothing, so batches never run twice
    # as fast as the throttle allows.
    next_batch_due_at = models.DateTimeField(
        _("next batch due at"), null=True, blank=True, editable=False
    )
    batch_chain = models.UUIDField(_("batch chain"), null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
        editable=False,
    )

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def processed_count(self) -> int:
        return self.sent_count + self.refused_count + self.failed_count

    @property
    def progress(self) -> float:
        """Share of frozen recipients already processed, 0.0 to 1.0."""
        if not self.recipients_count:
            return 0.0
        return min(1.0, self.processed_count / self.recipients_count)


class CampaignTemplate(models.Model):
    """The version a campaign sends on one channel account; `position` is the fallback order."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="templates", verbose_name=_("campaign")
    )
    account = models.ForeignKey(
        "messaging.ChannelAccount",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("channel account"),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel, editable=False)
    template_version = models.ForeignKey(
        "approvals.TemplateVersion",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("template version"),
    )
    position = models.PositiveSmallIntegerField(_("fallback position"), default=0)

    class Meta:
        verbose_name = _("campaign template")
        verbose_name_plural = _("campaign templates")
        ordering = ["campaign", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "channel"], name="%(app_label)s_%(class)s_one_per_channel"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign} / {self.get_channel_display()}"


class RecipientStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENT = "sent", _("Sent")
    REFUSED = "refused", _("Refused")
    FAILED = "failed", _("Failed")


class CampaignRecipient(models.Model):
    """One frozen audience member: at most one message, also after a crash and relaunch."""

    # No index of its own: every index of the table starts with the campaign (freezing a
    # launch writes one entry per recipient into each index). Nor do the campaign and the
    # account have database foreign keys: the freeze writes them from the campaign it holds
    # locked and that campaign's templates' accounts (which their own keys protect), and the
    # database would check both again for each of a million recipients at commit, a third of
    # the freeze's time. CASCADE and PROTECT still apply: Django's deletion runs them.
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.CASCADE,
        related_name="recipients",
        verbose_name=_("campaign"),
        db_index=False,
        db_constraint=False,
    )
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.PROTECT, related_name="+", verbose_name=_("contact")
    )
    # No index either: no query looks recipients up by account; only deleting an account
    # (protected, rare) scans for them, while each freeze paid an entry per recipient.
    account = models.ForeignKey(
        "messaging.ChannelAccount",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("channel account"),
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=RecipientStatus,
        default=RecipientStatus.PENDING,
        editable=False,
    )
    reason = models.CharField(_("reason"), max_length=60, blank=True, editable=False)
    message = models.OneToOneField(
        "messaging.Message",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaign_recipient",
        verbose_name=_("message"),
        editable=False,
    )
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("campaign recipient")
        verbose_name_plural = _("campaign recipients")
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "contact"], name="%(app_label)s_%(class)s_once_per_contact"
            )
        ]
        indexes = [
            models.Index(fields=["campaign", "status"], name="messaging_recipient_status"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} → {self.contact_id} ({self.status})"


class CampaignStateChange(models.Model):
    """Append-only trail of the campaign's state, written with each transition."""

    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.CASCADE,
        related_name="state_changes",
        verbose_name=_("campaign"),
    )
    from_state = models.CharField(_("from"), max_length=16, choices=CampaignState)
    to_state = models.CharField(_("to"), max_length=16, choices=CampaignState)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    actor_label = models.CharField(_("actor"), max_length=150, blank=True)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), auto_now_add=True)

    class Meta:
        verbose_name = _("campaign state change")
        verbose_name_plural = _("campaign state changes")
        ordering = ["campaign", "occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.campaign}: {self.from_state} → {self.to_state}"
