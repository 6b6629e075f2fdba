"""Tests make ledger rows only through the real services, so chains and projections stay true."""

from __future__ import annotations

import datetime as dt

from consent.models import ConsentAction, ConsentSource
from consent.services import Evidence, consent_record
from tests.factories import ConsentTextFactory


def grant_consent(contact, purpose, channel="email", *, occurred_at: dt.datetime | None = None):
    text = purpose.texts.first() or ConsentTextFactory(purpose=purpose)
    return consent_record(
        contact=contact,
        purpose=purpose,
        channel=channel,
        action=ConsentAction.GRANTED,
        source=ConsentSource.WEB_FORM,
        evidence=Evidence(consent_text=text, ip_address="203.0.113.7", user_agent="Firefox"),
        occurred_at=occurred_at,
    )


def withdraw_consent(contact, purpose, channel="email", *, occurred_at=None):
    return consent_record(
        contact=contact,
        purpose=purpose,
        channel=channel,
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.API,
        evidence=Evidence(note="withdrawn in test"),
        occurred_at=occurred_at,
    )
