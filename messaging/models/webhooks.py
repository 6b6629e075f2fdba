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
