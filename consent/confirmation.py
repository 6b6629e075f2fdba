"""The default double opt-in sender: e-mail through Django's mail backend.

SMS and WhatsApp confirmations go through messaging's send path once that app replaces this
sender (setting CONSENT_CONFIRMATION_SENDER); until then they are logged.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from consent.models import OptInRequest
from crm.models import Channel

logger = logging.getLogger(__name__)


def confirmation_url(token: str) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("consent:confirm", args=[token])


def send_confirmation(*, request: OptInRequest, token: str) -> None:
    contact = request.contact
    address = contact.points.filter(channel=request.channel).order_by("-is_primary", "id").first()
    if address is None:
        logger.warning(
            "opt-in %s: contact %s has no %s address", request.pk, contact.pk, request.channel
        )
        return
    with translation.override(contact.language or "de"):
        if request.channel == Channel.EMAIL:
            send_mail(
                subject=_("Please confirm your subscription"),
                message=_(
                    "Hello,\n\nplease confirm that you want to receive “%(purpose)s” by "
                    "opening this link:\n\n%(url)s\n\nIf you did not ask for this, ignore this "
                    "e-mail and nothing will happen."
                )
                % {"purpose": request.purpose.name, "url": confirmation_url(token)},
                from_email=None,
                recipient_list=[address.address],
            )
            return
        logger.info(
            "opt-in %s: confirmation for %s on %s (reply YES/JA)",
            request.pk,
            contact.pk,
            request.channel,
        )
