"""The audience count reads the grants from the covering `consent_audience` index (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import Consent, ConsentStatus
from consent.selectors import contacts_with_grant
from crm.hashing import address_hash
from crm.models import Contact, ContactPoint
from tests.consent.helpers import grant_consent
from tests.factories import ContactFactory, PurposeFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

CONTACTS = 4000


def _projection_with_statistics(team, purpose) -> None:
    """Many contacts over several purposes, channels and states, then ANALYZE."""
    seed = grant_consent(ContactFactory(team=team), purpose)
    others = [PurposeFactory(team=team, key=f"other{n}") for n in range(4)]
    contacts = Contact.objects.bulk_create(
        [Contact(team=team, last_name=f"c{n}") for n in range(CONTACTS)]
    )
    ContactPoint.objects.bulk_create(
        ContactPoint(
            contact=contact,
            team=team,
            channel="email",
            address=f"c{n}@example.de",
            address_hash=address_hash(f"c{n}@example.de"),
        )
        for n, contact in enumerate(contacts)
    )
    # Projection rows only: they give the planner the statistics of a real projection.
    statuses = list(ConsentStatus)
    Consent.objects.bulk_create(
        Consent(
            contact=contact,
            purpose=purpose if n % 5 == 0 else others[n % 4],
            channel="email" if n % 3 else "sms",
            status=statuses[n % len(statuses)],
            since=timezone.now(),
            last_event=seed,
        )
        for n, contact in enumerate(contacts)
    )
    with connection.cursor() as cursor:
        for table in ("crm_contact", "crm_contactpoint", "consent_consent", "consent_suppression"):
            cursor.execute(f"ANALYZE {table}")


def test_audience_count_uses_the_consent_audience_index(team):
    purpose = PurposeFactory(team=team, key="newsletter")
    _projection_with_statistics(team, purpose)
    queryset = contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email")
    with CaptureQueriesContext(connection) as captured:
        count = queryset.count()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + captured.captured_queries[0]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "consent_audience" in plan, plan
    # Every bulk contact has one clean e-mail address; the seed contact has none.
    granted = Consent.objects.granted().filter(purpose=purpose, channel="email")
    assert count == granted.filter(contact__points__channel="email").count() > 0
