"""Webhook payloads that could not be processed, kept with their body for a retry."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from messaging.models.channels import ChannelAccount


class QuarantinedPayload(models.Model):
    """A correctly signed payload whose processing failed; the rest of the batch went on."""

    account = models.ForeignKey(
        ChannelAccount, on_delete=models.PROTECT, related_name="quarantine", editable=False
    )
    provider = models.CharField(_("provider"), max_length=24, editable=False)
    body = models.TextField(_("raw body"), editable=False)
    content_type = models.CharField(_("content type"), max_length=120, blank=True)
    error = models.TextField(_("error"), editable=False)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)

    class Meta:
        verbose_name = _("quarantined webhook payload")
        verbose_name_plural = _("quarantined webhook payloads")
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.provider} {self.received_at:%Y-%m-%d %H:%M}"


class InboxStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    PROCESSED = "processed", _("processed")
    FAILED = "failed", _("failed")


class InboundWebhook(models.Model):
    """A verified webhook request, stored before it is processed (the webhook inbox).

    The view answers the provider as soon as this row is committed; a Celery task applies the
    body later. The same body received twice for one account is stored once (`body_sha256`),
    so a provider's retry of an accepted request is not processed a second time.
    """

    account = models.ForeignKey(
        ChannelAccount, on_delete=models.PROTECT, related_name="inbound_webhooks", editable=False
    )
    body = models.TextField(_("raw body"), editable=False)
    body_sha256 = models.CharField(_("SHA-256 of the body"), max_length=64, editable=False)
    content_type = models.CharField(_("content type"), max_length=120, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=InboxStatus.choices, default=InboxStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    attempted_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("inbound webhook")
        verbose_name_plural = _("inbound webhooks")
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "body_sha256"], name="messaging_inbound_webhook_once"
            )
        ]
        indexes = [
            # The sweep reads only the (few) rows still waiting.
            models.Index(
                fields=["received_at"],
                name="messaging_inbox_pending_idx",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.received_at:%Y-%m-%d %H:%M} {self.status}"
