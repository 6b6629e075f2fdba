from __future__ import annotations

import pytest

from consent.models import Consent, ConsentEvent, ConsentStatus, DataSubjectRequest, Purpose
from consent.selectors import consent_ledger_verify
from crm.demo import demo_seed

pytestmark = pytest.mark.django_db


def test_demo_consent_history_is_real_and_not_duplicated():
    demo_seed(contacts=90, password="demo-password")
    events = ConsentEvent.objects.count()
    assert Purpose.objects.count() == 5
    assert Consent.objects.filter(status=ConsentStatus.GRANTED).exists()
    assert Consent.objects.filter(status=ConsentStatus.WITHDRAWN).exists() or events > 0
    assert DataSubjectRequest.objects.count() == 2
    assert consent_ledger_verify().broken is None

    demo_seed(contacts=90, password="demo-password")
    assert ConsentEvent.objects.count() == events
    assert Purpose.objects.count() == 5
    assert DataSubjectRequest.objects.count() == 2
