"""Senders (channel accounts) and the agents who answer in 1:1 dialogs."""

from __future__ import annotations

import re
from typing import Final

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.models import Channel, Team, TimeStampedModel

# The channel each provider speaks; a WhatsApp account with an SMTP adapter is a config error.
PROVIDER_CHANNELS: Final[dict[str, frozenset[str]]] = {
    "console": frozenset(Channel.values),
    "whatsapp_cloud": frozenset({Channel.WHATSAPP}),
    "twilio_sms": frozenset({Channel.SMS}),
    "smtp_email": frozenset({Channel.EMAIL}),
}
# Credential names per provider, read from `<credentials_env>_<NAME>` environment variables.
PROVIDER_CREDENTIALS: Final[dict[str, tuple[str, ...]]] = {
    "console": (),
    "whatsapp_cloud": ("access_token", "app_secret", "verify_token"),
    "twilio_sms": (
        "account_sid",
        "auth_token",
        "from_number",
        "messaging_service_sid",
        "api_key_sid",
        "api_key_secret",
    ),
    "smtp_email": ("from_email", "reply_to"),
}
ENV_PREFIX_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")


class ProviderKind(models.TextChoices):
    CONSOLE = "console", _("Console (logs only)")
    WHATSAPP_CLOUD = "whatsapp_cloud", _("WhatsApp Cloud API")
    TWILIO_SMS = "twilio_sms", _("Twilio SMS")
    SMTP_EMAIL = "smtp_email", _("E-mail (SMTP)")


class ChannelAccount(TimeStampedModel):
    """A configured sender: a WhatsApp number, an SMS account or an e-mail sender.

    Secrets are never stored: `credentials_env` names the environment prefix they are read from
    (WhatsApp `<PREFIX>_ACCESS_TOKEN`, `<PREFIX>_APP_SECRET`, `<PREFIX>_VERIFY_TOKEN`; Twilio
    `<PREFIX>_ACCOUNT_SID`, `<PREFIX>_AUTH_TOKEN`, ...).
    """

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="channel_accounts", verbose_name=_("team")
    )
    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(
        _("webhook key"),
        max_length=60,
        unique=True,
        help_text=_("Part of the webhook address: /webhooks/<provider>/<key>/."),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    provider = models.CharField(
        _("provider"), max_length=24, choices=ProviderKind, default=ProviderKind.CONSOLE
    )
    address = models.CharField(
        _("sender address"),
        max_length=254,
        blank=True,
        help_text=_("The sender's phone number (E.164) or e-mail address."),
    )
    external_id = models.CharField(
        _("provider account id"),
        max_length=64,
        blank=True,
        help_text=_("WhatsApp phone number id or Twilio account SID; webhooks are matched on it."),
    )
    credentials_env = models.CharField(
        _("credentials environment prefix"),
        max_length=60,
        blank=True,
        help_text=_("Secrets are read from environment variables starting with this prefix."),
    )
    quiet_hours_start = models.TimeField(
        _("quiet hours start"),
        null=True,
        blank=True,
        help_text=_("Consent-based messages due in quiet hours wait until they end."),
    )
    quiet_hours_end = models.TimeField(_("quiet hours end"), null=True, blank=True)
    first_response_minutes = models.PositiveIntegerField(
        _("first response target (minutes)"), default=60
    )
    messages_per_second = models.PositiveIntegerField(
        _("messages per second"),
        default=20,
        help_text=_("Throughput limit for campaigns (the provider's documented rate)."),
    )
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("channel account")
        verbose_name_plural = _("channel accounts")
        ordering = ["team", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_display()})"


class PresenceStatus(models.TextChoices):
    AVAILABLE = "available", _("Available")
    AWAY = "away", _("Away")
    OFFLINE = "offline", _("Offline")


class AgentPresence(models.Model):
    """Whether an agent takes new conversations now, and how many at once."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="agent_presence",
        verbose_name=_("agent"),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=PresenceStatus, default=PresenceStatus.OFFLINE
    )
    capacity = models.PositiveSmallIntegerField(
        _("capacity"), default=5, help_text=_("Open conversations the agent handles at once.")
    )
    last_assigned_at = models.DateTimeField(_("last assigned at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("agent presence")
        verbose_name_plural = _("agent presence")

    def __str__(self) -> str:
        return f"{self.user} ({self.get_status_display()})"
