"""Consent with a validity period: ask to reconfirm before it ends, expire it when it has.

Both run periodically (consent.tasks) and are safe to run again: each consent is handled in
its own transaction, so one failure neither blocks nor rolls back the others.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentSource,
    ConsentStatus,
    ConsentText,
    OptInRequest,
    Purpose,
)
from consent.services.double_opt_in import OptInRateLimited, opt_in_request
from consent.services.ledger import Evidence, consent_record
from crm.errors import DomainError
from crm.models import Contact

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


def _expire_one(consent_id: int, now: dt.datetime) -> bool:
    """Record `expired` for one consent if it is still granted and past its validity."""
    with transaction.atomic():
        consent = Consent.objects.select_related("contact", "purpose").get(pk=consent_id)
        # Lock as consent_record does, then look again: a grant or withdrawal may have
        # arrived since the batch was read.
        Contact.objects.select_for_update().filter(pk=consent.contact_id).first()
        consent.refresh_from_db(fields=["status", "valid_until"])
        if consent.status != ConsentStatus.GRANTED or consent.valid_until is None:
            return False
        if consent.valid_until > now:
            return False
        consent_record(
            contact=consent.contact,
            purpose=consent.purpose,
            channel=consent.channel,
            action=ConsentAction.EXPIRED,
            source=ConsentSource.SYSTEM,
            evidence=Evidence(note="validity period ended"),
            # It expired when its validity ended, not when this task noticed.
            occurred_at=consent.valid_until,
        )
    return True


def consents_expire_due(now: dt.datetime | None = None) -> int:
    """Append an `expired` event for every granted consent whose validity has ended.

    Returns how many consents expired. Works in batches, one transaction per consent.
    """
    now = now or timezone.now()
    due = Consent.objects.filter(status=ConsentStatus.GRANTED, valid_until__lte=now)
    expired = 0
    last_pk = 0
    while True:
        batch = list(
            due.filter(pk__gt=last_pk).order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE]
        )
        if not batch:
            return expired
        for consent_id in batch:
            try:
                expired += _expire_one(consent_id, now)
            except DomainError as exc:
                logger.warning("consent %s: not expired: %s", consent_id, exc.message)
        last_pk = batch[-1]


def _reconfirmation_text(consent: Consent) -> ConsentText | None:
    """The current wording in the contact's language (what they are asked to agree to now)."""
    texts = ConsentText.objects.filter(purpose=consent.purpose).order_by("-version")
    preferred = texts.filter(language=consent.contact.language).first()
    return preferred or texts.first() or consent.last_event.evidence.consent_text


def _due_for_reconfirmation(purpose: Purpose, now: dt.datetime) -> list[Consent]:
    """Granted consents of `purpose` expiring within its reconfirmation window that were
    not asked yet: no open request, and none since the deciding event (one ask per cycle)."""
    asked = OptInRequest.objects.filter(
        contact=OuterRef("contact"), purpose=OuterRef("purpose"), channel=OuterRef("channel")
    )
    open_request = asked.filter(confirmed_event__isnull=True, expires_at__gt=now)
    asked_since_grant = asked.filter(request_event__sequence__gt=OuterRef("last_event__sequence"))
    window_end = now + dt.timedelta(days=purpose.reconfirm_days_before)
    return list(
        Consent.objects.filter(
            purpose=purpose,
            status=ConsentStatus.GRANTED,
            valid_until__gt=now,
            valid_until__lte=window_end,
        )
        .filter(~Exists(open_request), ~Exists(asked_since_grant))
        .select_related("contact", "purpose", "last_event__evidence__consent_text")
        .order_by("pk")
    )


def consents_request_reconfirmation(now: dt.datetime | None = None) -> int:
    """Send a double opt-in request for consents about to expire; returns how many were sent.

    Rate-limited or refused contacts (restricted, erased) are skipped and logged.
    """
    now = now or timezone.now()
    requested = 0
    for purpose in Purpose.objects.filter(is_active=True):
        for consent in _due_for_reconfirmation(purpose, now):
            try:
                opt_in_request(
                    contact=consent.contact,
                    purpose=consent.purpose,
                    channel=consent.channel,
                    source=ConsentSource.SYSTEM,
                    evidence=Evidence(
                        consent_text=_reconfirmation_text(consent), note="reconfirmation"
                    ),
                )
            except OptInRateLimited:
                logger.info("consent %s: reconfirmation rate limited", consent.pk)
                continue
            except DomainError as exc:
                logger.warning("consent %s: no reconfirmation: %s", consent.pk, exc.message)
                continue
            requested += 1
    return requested
