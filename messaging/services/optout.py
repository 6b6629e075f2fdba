"""A provider told us the recipient opted out (Twilio 21610, WhatsApp 131050): withdraw."""

from __future__ import annotations

import logging

from django.db import transaction

from consent.models import Consent, ConsentAction, ConsentSource, ConsentStatus
from consent.services import Evidence, consent_record
from crm.models import Contact

logger = logging.getLogger(__name__)


@transaction.atomic
def provider_opt_out_record(*, contact: Contact, channel: str, code: str, message_ref: str) -> int:
    """Withdraw every granted or pending consent of `contact` on `channel` through the consent
    ledger (source `provider`); returns how many were withdrawn. Repeats change nothing."""
    withdrawn = 0
    current = Consent.objects.filter(
        contact=contact, channel=channel, status__in=(ConsentStatus.GRANTED, ConsentStatus.PENDING)
    ).select_related("purpose")
    for consent in current:
        consent_record(
            contact=contact,
            purpose=consent.purpose,
            channel=channel,
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.PROVIDER,
            evidence=Evidence(
                inbound_message_ref=message_ref[:200],
                note=f"provider error {code}: the recipient opted out at the carrier",
            ),
        )
        withdrawn += 1
    if withdrawn:
        logger.info(
            "contact %s: %s consents withdrawn on %s (%s)", contact.pk, withdrawn, channel, code
        )
    return withdrawn
