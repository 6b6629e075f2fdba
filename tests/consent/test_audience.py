"""The audience selector: contacts with a current grant for (purpose, channel), in one query."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import Consent, ConsentAction, ConsentSource, ConsentStatus
from consent.selectors import consent_state_for, contacts_with_grant
from consent.services import (
    Evidence,
    consent_reachability_refresh,
    consent_record,
    contact_restrict,
    opt_in_request,
    suppression_add,
)
from crm.hashing import address_hash
from crm.models import Contact, ContactPoint
from crm.privacy import contact_pseudonymise
from crm.services import contacts_assign_team
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, key="newsletter", validity_months=1)


def reachable(team, address: str, channel: str = "email") -> Contact:
    contact = ContactFactory(team=team, last_name=address)
    ContactPointFactory(contact=contact, channel=channel, address=address)
    return contact


@pytest.fixture
def audience(team, other_team, purpose):
    """One contact per state; only `granted` and `second_address` belong to the audience."""
    contacts = {}
    contacts["granted"] = reachable(team, "granted@example.de")
    grant_consent(contacts["granted"], purpose)

    contacts["withdrawn"] = reachable(team, "withdrawn@example.de")
    grant_consent(contacts["withdrawn"], purpose, occurred_at=NOW - dt.timedelta(days=2))
    withdraw_consent(contacts["withdrawn"], purpose, occurred_at=NOW - dt.timedelta(days=1))

    # Granted 60 days ago with one month of validity; the expiry task has not run yet.
    contacts["expired"] = reachable(team, "expired@example.de")
    grant_consent(contacts["expired"], purpose, occurred_at=NOW - dt.timedelta(days=60))

    contacts["pending"] = reachable(team, "pending@example.de")
    opt_in_request(
        contact=contacts["pending"],
        purpose=purpose,
        channel="email",
        evidence=Evidence(consent_text=purpose.texts.first()),
        send_confirmation=False,
    )

    contacts["suppressed"] = reachable(team, "suppressed@example.de")
    grant_consent(contacts["suppressed"], purpose)
    suppression_add(address="suppressed@example.de", channel="email")

    # One suppressed address, one clean one: still reachable.
    contacts["second_address"] = reachable(team, "blocked@example.de")
    ContactPointFactory(
        contact=contacts["second_address"], channel="email", address="open@example.de"
    )
    grant_consent(contacts["second_address"], purpose)
    suppression_add(address="blocked@example.de", channel="email")

    contacts["restricted"] = reachable(team, "restricted@example.de")
    grant_consent(contacts["restricted"], purpose)
    contact_restrict(contact=contacts["restricted"], actor=None)

    # Pseudonymised with its grant left in place (erasure proper would withdraw it too).
    contacts["erased"] = reachable(team, "erased@example.de")
    grant_consent(contacts["erased"], purpose)
    contact_pseudonymise(contact=contacts["erased"], erased_at=NOW)

    # Granted while in `team`, then moved: the audience of `team` no longer has it.
    contacts["moved"] = reachable(team, "moved@example.de")
    grant_consent(contacts["moved"], purpose)
    contacts_assign_team(
        contacts=Contact.objects.filter(pk=contacts["moved"].pk), team=other_team, actor=None
    )

    contacts["other_team"] = reachable(other_team, "other@example.de")
    grant_consent(contacts["other_team"], PurposeFactory(team=other_team, key="newsletter"))

    contacts["other_channel"] = reachable(team, "sms-only@example.de")
    ContactPointFactory(contact=contacts["other_channel"], channel="sms", address="+491711111111")
    grant_consent(contacts["other_channel"], purpose, "sms")

    # Granted on e-mail but has no e-mail address.
    contacts["no_address"] = ContactFactory(team=team)
    ContactPointFactory(contact=contacts["no_address"], channel="sms", address="+491712222222")
    grant_consent(contacts["no_address"], purpose)

    contacts["other_purpose"] = reachable(team, "other-purpose@example.de")
    grant_consent(contacts["other_purpose"], PurposeFactory(team=team, key="angebote"))
    return contacts


def test_audience_is_exactly_the_current_grants_in_one_query(
    team, purpose, audience, django_assert_num_queries
):
    with django_assert_num_queries(1):
        found = set(
            contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email").values_list(
                "pk", flat=True
            )
        )
    assert found == {audience["granted"].pk, audience["second_address"].pk}


def test_audience_accepts_a_purpose_id_and_other_channels(team, purpose, audience):
    sms = contacts_with_grant(team_id=team.pk, purpose=purpose.pk, channel="sms")
    assert list(sms) == [audience["other_channel"]]


def test_audience_of_another_teams_purpose_is_empty(other_team, purpose, audience):
    moved = contacts_with_grant(team_id=other_team.pk, purpose=purpose, channel="email")
    assert list(moved) == []


def test_audience_at_an_earlier_moment_includes_the_since_expired_grant(team, purpose, audience):
    earlier = NOW - dt.timedelta(days=45)
    found = set(contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email", at=earlier))
    assert audience["expired"] in found


def test_audience_counts_each_contact_once(team, purpose, audience):
    # `second_address` has two e-mail addresses; EXISTS keeps it a single row.
    queryset = contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email")
    assert queryset.count() == 2


def test_consent_state_for_lists_every_purpose_and_channel(team, purpose):
    contact = reachable(team, "state@example.de")
    grant_consent(contact, purpose)
    withdraw_consent(contact, purpose, "sms")
    states = consent_state_for(contact)
    assert [(state.channel, state.status) for state in states] == [
        ("email", ConsentStatus.GRANTED),
        ("sms", ConsentStatus.WITHDRAWN),
    ]
    assert states[0].last_event.evidence.user_agent == "Firefox"


@pytest.mark.postgres
def test_audience_query_uses_an_index_on_postgresql(team, purpose):
    """With realistic statistics the planner reaches consents through an index."""
    seed = grant_consent(reachable(team, "seed@example.de"), purpose)
    others = [PurposeFactory(team=team, key=f"p{n}") for n in range(9)]
    contacts = Contact.objects.bulk_create(
        [Contact(team=team, last_name=f"c{n}") for n in range(3000)]
    )
    ContactPoint.objects.bulk_create(
        [
            ContactPoint(
                contact=contact,
                team=team,
                channel="email",
                address=f"c{n}@example.de",
                address_hash=address_hash(f"c{n}@example.de"),
            )
            for n, contact in enumerate(contacts)
        ]
    )
    # Projection rows only (never ledger rows): they exist to give the planner real statistics.
    statuses = list(ConsentStatus)
    Consent.objects.bulk_create(
        [
            Consent(
                contact=contact,
                purpose=(purpose if n % 10 == 0 else others[n % 9]),
                channel=("email" if n % 2 == 0 else "sms"),
                status=statuses[n % len(statuses)],
                since=NOW,
                last_event=seed,
            )
            for n, contact in enumerate(contacts)
        ]
    )
    # Rows written behind the services' back: their audience columns are filled as the
    # services would fill them.
    consent_reachability_refresh(contact_ids=[contact.pk for contact in contacts])
    with connection.cursor() as cursor:
        for table in ("crm_contact", "crm_contactpoint", "consent_consent", "consent_suppression"):
            cursor.execute(f"ANALYZE {table}")
    queryset = contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email")
    with CaptureQueriesContext(connection) as captured:
        queryset.count()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + captured.captured_queries[0]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # The count reads the projection's partial audience index, no contact (the bitmap or
    # index-only choice depends on the statistics of this tiny table).
    assert "consent_audience_reachable" in plan, plan
    assert "crm_contact" not in plan, plan


def test_audience_ignores_a_late_old_grant_after_withdrawal(team, purpose):
    contact = reachable(team, "late@example.de")
    withdraw_consent(contact, purpose, occurred_at=NOW)
    consent_record(
        contact=contact,
        purpose=purpose,
        channel="email",
        action=ConsentAction.GRANTED,
        source=ConsentSource.AGENT,
        evidence=Evidence(note="Telefonat letzte Woche"),
        occurred_at=NOW - dt.timedelta(days=7),
    )
    assert not contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email").exists()
