"""Outbound event webhooks: integrators' subscriptions and every delivery made to them."""

from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.models import Team, TimeStampedModel

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a secret)


class EventType(models.TextChoices):
    MESSAGE_RECEIVED = "message.received", _("Message received")
    MESSAGE_STATUS = "message.status", _("Message status changed")
    CONVERSATION_HANDED_OFF = "conversation.handed_off", _("Conversation handed off")
    CAMPAIGN_COMPLETED = "campaign.completed", _("Campaign completed")
    CONSENT_CHANGED = "consent.changed", _("Consent changed")


def webhook_secret_generate() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class WebhookSubscription(TimeStampedModel):
    """An integrator's URL and the event types it wants; disabled after repeated failure."""

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="webhook_subscriptions", verbose_name=_("team")
    )
    url = models.URLField(_("URL"), max_length=500)
    event_types = models.JSONField(
        _("event types"), default=list, help_text=_('For example ["message.received"].')
    )
    # Stored in clear: every delivery is signed with it. Shown once, when it is created.
    secret = models.CharField(
        _("signing secret"), max_length=80, default=webhook_secret_generate, editable=False
    )
    description = models.CharField(_("description"), max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("owner"),
        help_text=_("Told by e-mail when the subscription is disabled."),
    )
    # Written only by messaging.services.events.
    is_active = models.BooleanField(_("active"), default=True, editable=False)
    failure_count = models.PositiveIntegerField(
        _("consecutive failed deliveries"), default=0, editable=False
    )
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True, editable=False)
    disabled_reason = models.CharField(
        _("disabled because"), max_length=200, blank=True, editable=False
    )

    history = HistoricalRecords(excluded_fields=["updated_at", "secret"])

    class Meta:
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")
        ordering = ["team", "url", "id"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return event_type in self.event_types


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


class WebhookDelivery(models.Model):
    """One event sent (or being retried) to one subscription; the record integrators ask for."""

    subscription = models.ForeignKey(
        WebhookSubscription,
        on_delete=models.CASCADE,
        related_name="deliveries",
        verbose_name=_("subscription"),
        editable=False,
    )
    # The `webhook-id` header: the same on every retry, so receivers can deduplicate.
    event_id = models.CharField(_("event id"), max_length=60, unique=True, editable=False)
    event_type = models.CharField(_("event type"), max_length=60, editable=False)
    payload = models.JSONField(_("payload"), editable=False)
    status = models.CharField(
        _("status"),
        max_length=12,
        choices=DeliveryStatus,
        default=DeliveryStatus.PENDING,
        editable=False,
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0, editable=False)
    last_status_code = models.PositiveSmallIntegerField(
        _("last HTTP status"), null=True, blank=True, editable=False
    )
    last_error = models.TextField(_("last error"), blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    next_attempt_at = models.DateTimeField(
        _("next attempt at"), null=True, blank=True, editable=False
    )
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["subscription", "-created_at"], name="msg_whdelivery_sub_created")
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
