"""Automation rules: what the bot answers to which keyword."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from approvals.models import MessageTemplate
from crm.models import Team, TimeStampedModel
from messaging.models.channels import ChannelAccount


class RuleAction(models.TextChoices):
    REPLY_TEMPLATE = "reply_template", _("Reply with an approved template")
    HAND_OFF = "hand_off", _("Hand off to a human")
    DEFAULT_REPLY = "default_reply", _("Default reply (when nothing else matched)")


class AutomationRule(TimeStampedModel):
    """Keyword -> on-demand content, escalation, or the default reply with options.

    Replies are template messages: their wording is approved like every other template and
    they pass the send gate like every other message.
    """

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="automation_rules", verbose_name=_("team")
    )
    account = models.ForeignKey(
        ChannelAccount,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="automation_rules",
        verbose_name=_("channel account"),
        help_text=_("Empty: every account of the team."),
    )
    name = models.CharField(_("name"), max_length=120)
    keywords = models.JSONField(
        _("keywords"), default=list, blank=True, help_text=_('For example ["FILM", "KINO"].')
    )
    action = models.CharField(_("action"), max_length=16, choices=RuleAction)
    template = models.ForeignKey(
        MessageTemplate,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="automation_rules",
        verbose_name=_("template"),
        help_text=_("Its latest sendable version is sent."),
    )
    priority = models.PositiveSmallIntegerField(_("priority"), default=100)
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("automation rule")
        verbose_name_plural = _("automation rules")
        ordering = ["team", "priority", "id"]

    def __str__(self) -> str:
        return self.name
