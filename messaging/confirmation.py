"""The double opt-in sender (setting CONSENT_CONFIRMATION_SENDER): SMS and WhatsApp
confirmations go through the send gate like every other message; e-mail stays with consent.

The gate lets a confirmation through without consent (it asks for it), but still refuses a
restricted or suppressed contact, and on WhatsApp free text outside the service window.
"""

from __future__ import annotations

import logging
from typing import Final

from django.utils import translation
from django.utils.translation import gettext as _

from consent import confirmation as consent_confirmation
from consent.models import OptInRequest
from crm.models import Channel
from messaging.errors import SendRefused
from messaging.models import ChannelAccount, SenderKind
from messaging.services.send import message_send

logger = logging.getLogger(__name__)

ORIGIN_DOUBLE_OPT_IN: Final = "double_opt_in"


def send_confirmation(*, request: OptInRequest, token: str) -> None:
    """Send the confirmation for `request` from the team's first active account on its channel.

    A refusal or a missing account is logged, never raised: the request stays open and the
    contact can still confirm by replying YES or through a new request.
    """
    if request.channel == Channel.EMAIL:
        consent_confirmation.send_confirmation(request=request, token=token)
        return
    contact = request.contact
    account = (
        ChannelAccount.objects.filter(
            team_id=contact.team_id, channel=request.channel, is_active=True
        )
        .order_by("pk")
        .first()
    )
    if account is None:
        logger.warning(
            "opt-in %s: team %s has no active %s account",
            request.pk,
            contact.team_id,
            request.channel,
        )
        return
    with translation.override(contact.language or "de"):
        text = _(
            "Please confirm that you want to receive “%(purpose)s”: reply YES, or open "
            "%(url)s. If you did not ask for this, ignore this message."
        ) % {"purpose": request.purpose.name, "url": consent_confirmation.confirmation_url(token)}
    try:
        message_send(
            contact=contact,
            account=account,
            actor=None,
            sender_kind=SenderKind.SYSTEM,
            text=text,
            opt_in_confirmation=True,
            origin=ORIGIN_DOUBLE_OPT_IN,
        )
    except SendRefused as exc:
        logger.warning(
            "opt-in %s: confirmation refused by the send gate (%s)", request.pk, exc.code
        )
