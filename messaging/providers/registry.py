"""Provider kind -> adapter class (dotted path), loaded on first use with import_string.

A ChannelAccount names its kind; `provider_for(kind)` gives a ready adapter. Adding a provider
is one line here plus its module.
"""

from __future__ import annotations

from typing import Final

from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError
from messaging.providers.base import Provider

PROVIDERS: Final[dict[str, str]] = {
    "console": "messaging.providers.console.ConsoleProvider",
    "whatsapp_cloud": "messaging.providers.whatsapp.WhatsAppCloudProvider",
    "twilio_sms": "messaging.providers.twilio_sms.TwilioSmsProvider",
    "smtp_email": "messaging.providers.smtp.SmtpEmailProvider",
}


class ProviderUnknown(DomainError):
    code = "provider_unknown"


def provider_for(kind: str) -> Provider:
    """A new adapter for `kind`; an unknown kind raises ProviderUnknown naming the known ones."""
    try:
        dotted_path = PROVIDERS[kind]
    except (KeyError, TypeError):
        raise ProviderUnknown(
            _('Unknown message provider "%(kind)s"; known providers: %(known)s.')
            % {"kind": kind, "known": ", ".join(sorted(PROVIDERS))},
            field="provider",
        ) from None
    return import_string(dotted_path)()
