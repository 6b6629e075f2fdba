"""Each auditor export is itself recorded."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ConversationExport(models.Model):
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("exported by"),
    )
    actor_label = models.CharField(_("exported by"), max_length=150)
    filters = models.JSONField(_("filters"), default=dict)
    message_count = models.PositiveIntegerField(_("messages"), default=0)
    event_count = models.PositiveIntegerField(_("events"), default=0)
    conversation_count = models.PositiveIntegerField(_("conversations"), default=0)
    manifest_sha256 = models.CharField(_("manifest SHA-256"), max_length=64, blank=True)
    location = models.CharField(_("location"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("exported at"), auto_now_add=True)

    class Meta:
        verbose_name = _("conversation export")
        verbose_name_plural = _("conversation exports")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.created_at:%Y-%m-%d %H:%M}"
