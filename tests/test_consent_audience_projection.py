"""The audience count read from the Consent projection equals the one worked out from sources.

contacts_with_grant answers from the projection's denormalised `team` and `reachable`
columns; contacts_with_grant_recomputed joins contacts, addresses and the suppression list as
the selector used to. After every write path that changes an input (consent recording single
and in bulk, addresses added, changed, removed and imported, suppression, restriction,
erasure, team moves, retention) both must name the same contacts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import io
import random

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentSource,
    ConsentStatus,
    RetentionPolicy,
)
from consent.selectors import contacts_with_grant, contacts_with_grant_recomputed
from consent.services import (
    ConsentChange,
    Evidence,
    consent_reachability_refresh,
    consent_record,
    consent_record_many,
    contact_erase,
    contact_restrict,
    contact_restriction_lift,
    reachability,
    retention_apply,
    suppression_add,
)
from crm import services as crm_services
from crm.errors import DomainError
from crm.imports import import_file
from crm.models import Contact, ContactPoint
from tests.consent.helpers import grant_consent
from tests.factories import PurposeFactory

pytestmark = pytest.mark.django_db

CHANNELS = ("email", "sms")
EMAILS = [f"p{n}@example.de" for n in range(6)]
PHONES = [f"+49171234560{n}" for n in range(6)]
ADDRESSES = {"email": EMAILS, "sms": PHONES}


def audience_ids(team_id, purpose_id, channel, at=None):
    return set(
        contacts_with_grant(team_id=team_id, purpose=purpose_id, channel=channel, at=at)
        .order_by()
        .values_list("pk", flat=True)
    )


def recomputed_ids(team_id, purpose_id, channel, at=None):
    return set(
        contacts_with_grant_recomputed(team_id=team_id, purpose=purpose_id, channel=channel, at=at)
        .order_by()
        .values_list("pk", flat=True)
    )


def assert_projection_agrees(teams, purposes, at=None):
    """Each team, purpose (other teams' too) and channel: the same contacts, the same count."""
    for team in teams:
        for purpose in purposes:
            for channel in CHANNELS:
                expected = recomputed_ids(team.pk, purpose.pk, channel, at)
                found = audience_ids(team.pk, purpose.pk, channel, at)
                assert found == expected, (team.pk, purpose.key, channel)
                count = contacts_with_grant(
                    team_id=team.pk, purpose=purpose.pk, channel=channel, at=at
                ).count()
                assert count == len(expected), (team.pk, purpose.key, channel)


@pytest.fixture
def world(team, other_team):
    purposes = [
        PurposeFactory(team=team, key="newsletter", allowed_channels=list(CHANNELS)),
        PurposeFactory(team=other_team, key="newsletter", allowed_channels=list(CHANNELS)),
    ]
    contacts = [
        crm_services.contact_create(
            team=team if n < 3 else other_team,
            actor=None,
            last_name=f"Person {n}",
            points=[("email", f"own{n}@example.de")],
        )
        for n in range(5)
    ]
    # Everyone starts in their own team's e-mail audience; the writes then move them around.
    for contact in contacts:
        grant_consent(contact, purposes[0] if contact.team_id == team.pk else purposes[1])
    return [team, other_team], purposes, contacts


def _agent_change(contact, purpose, channel, action):
    return ConsentChange(
        contact_id=contact.pk,
        purpose=purpose,
        channel=channel,
        action=action,
        source=ConsentSource.AGENT,
        evidence=Evidence(note="am Telefon"),
    )


def _apply_random_operation(rng, teams, purposes, contacts):
    """One random write through a real service; refusals (DomainError) change nothing."""
    contact = Contact.objects.get(pk=rng.choice(contacts).pk)
    channel = rng.choice(CHANNELS)
    purpose = rng.choice(purposes)
    operation = rng.choice(
        [
            "grant",
            "grant",
            "withdraw",
            "request",
            "record_many",
            "point_add",
            "point_add",
            "point_change",
            "point_remove",
            "suppress",
            "restrict",
            "lift",
            "move",
            "erase",
        ]
    )
    if operation in ("grant", "withdraw", "request"):
        action = {
            "grant": ConsentAction.GRANTED,
            "withdraw": ConsentAction.WITHDRAWN,
            "request": ConsentAction.REQUESTED,
        }[operation]
        change = _agent_change(contact, purpose, channel, action)
        consent_record(
            contact=contact,
            purpose=purpose,
            channel=channel,
            action=action,
            source=change.source,
            evidence=change.evidence,
        )
    elif operation == "record_many":
        changes = [
            _agent_change(
                other, rng.choice(purposes), rng.choice(CHANNELS), rng.choice(list(ConsentAction))
            )
            for other in rng.sample(contacts, 3)
        ]
        consent_record_many(changes, skip_invalid=True)
    elif operation == "point_add":
        crm_services.contact_point_add(
            contact=contact, channel=channel, address=rng.choice(ADDRESSES[channel]), actor=None
        )
    elif operation in ("point_change", "point_remove"):
        point = ContactPoint.objects.filter(contact=contact).order_by("?").first()
        if point is None:
            return operation
        if operation == "point_remove":
            crm_services.contact_point_remove(point=point, actor=None)
        else:
            address = rng.choice(ADDRESSES[point.channel])
            crm_services.contact_point_update(point=point, address=address, actor=None)
    elif operation == "suppress":
        suppression_add(address=rng.choice(ADDRESSES[channel]), channel=channel)
    elif operation == "restrict":
        contact_restrict(contact=contact, actor=None)
    elif operation == "lift":
        contact_restriction_lift(contact=contact, actor=None)
    elif operation == "move":
        target = next(team for team in teams if team.pk != contact.team_id)
        crm_services.contacts_assign_team(
            contacts=Contact.objects.filter(pk=contact.pk), team=target, actor=None
        )
    elif operation == "erase" and rng.random() < 0.3:
        contact_erase(contact=contact, actor=None)
    return operation


@pytest.mark.parametrize("seed", range(6))
def test_random_write_sequences_keep_the_projection_count_exact(world, seed):
    teams, purposes, contacts = world
    rng = random.Random(seed)
    reachable_grants = 0
    for _step in range(30):
        # A refused write changes nothing; the comparison still runs.
        with contextlib.suppress(DomainError):
            _apply_random_operation(rng, teams, purposes, contacts)
        assert_projection_agrees(teams, purposes)
        reachable_grants += Consent.objects.filter(
            reachable=True, status=ConsentStatus.GRANTED
        ).count()
    # The sequences do put contacts into audiences (the comparison is not vacuous).
    assert reachable_grants > 0


@pytest.fixture
def granted(team):
    purpose = PurposeFactory(team=team, key="news", allowed_channels=list(CHANNELS))
    contact = crm_services.contact_create(
        team=team, actor=None, last_name="Weber", points=[("email", "weber@example.de")]
    )
    grant_consent(contact, purpose, "email")
    grant_consent(contact, purpose, "sms")
    return purpose, contact


def test_each_write_path_moves_the_contact_in_and_out_of_the_audience(team, other_team, granted):
    purpose, contact = granted
    teams = [team, other_team]

    def members(channel="email"):
        assert_projection_agrees(teams, [purpose])
        return contact.pk in audience_ids(team.pk, purpose.pk, channel)

    assert members("email")
    assert not members("sms")  # no phone number yet

    point = crm_services.contact_point_add(
        contact=contact, channel="sms", address="+4917155500001", actor=None
    )
    assert members("sms")
    suppression_add(address="+4917155500001", channel="sms")
    assert not members("sms")
    crm_services.contact_point_update(point=point, address="+4917155500002", actor=None)
    assert members("sms")
    crm_services.contact_point_remove(point=point, actor=None)
    assert not members("sms")

    contact_restrict(contact=contact, actor=None)
    assert not members()
    contact_restriction_lift(contact=contact, actor=None)
    assert members()

    crm_services.contacts_assign_team(
        contacts=Contact.objects.filter(pk=contact.pk), team=other_team, actor=None
    )
    assert not members()
    assert contact.pk in audience_ids(other_team.pk, purpose.pk, "email")
    crm_services.contacts_assign_team(
        contacts=Contact.objects.filter(pk=contact.pk), team=team, actor=None
    )
    assert members()

    contact_erase(contact=Contact.objects.get(pk=contact.pk), actor=None)
    assert not members()


def test_a_suppressed_address_counts_in_every_team_holding_it(team, other_team):
    purposes = [
        PurposeFactory(team=t, key="news", allowed_channels=["email"]) for t in (team, other_team)
    ]
    holders = [
        crm_services.contact_create(
            team=t, actor=None, last_name="Gleich", points=[("email", "same@example.de")]
        )
        for t in (team, other_team)
    ]
    for holder, purpose in zip(holders, purposes, strict=True):
        grant_consent(holder, purpose)
    assert_projection_agrees([team, other_team], purposes)
    assert Consent.objects.filter(reachable=True).count() == 2

    suppression_add(address="same@example.de", channel="email")

    assert_projection_agrees([team, other_team], purposes)
    assert not Consent.objects.filter(reachable=True).exists()


def test_the_bulk_path_fills_the_columns_of_new_projection_rows(team, other_team):
    purpose = PurposeFactory(team=team, key="news", allowed_channels=list(CHANNELS))
    contacts = [
        crm_services.contact_create(
            team=team, actor=None, last_name=f"B{n}", points=[("email", f"b{n}@example.de")]
        )
        for n in range(4)
    ]
    contact_restrict(contact=contacts[0], actor=None)  # refused: restricted contacts get none
    outcome = consent_record_many(
        [_agent_change(c, purpose, ch, ConsentAction.GRANTED) for c in contacts for ch in CHANNELS],
        skip_invalid=True,
    )
    assert outcome.recorded >= 6
    assert_projection_agrees([team, other_team], [purpose])
    assert audience_ids(team.pk, purpose.pk, "email") == {c.pk for c in contacts[1:]}
    assert Consent.objects.filter(team_id=team.pk).count() == Consent.objects.count()


def test_an_import_that_adds_an_address_makes_the_contact_reachable(tmp_path, team, marketing):
    purpose = PurposeFactory(team=team, key="news", allowed_channels=list(CHANNELS))
    contact = crm_services.contact_create(
        team=team,
        actor=None,
        external_id="E1",
        last_name="Import",
        points=[("email", "import@example.de")],
    )
    grant_consent(contact, purpose, "sms")
    assert not audience_ids(team.pk, purpose.pk, "sms")

    path = tmp_path / "contacts.csv"
    path.write_text("external_id,last_name,phone\nE1,Import,0171 5550003\n", encoding="utf-8")
    result = import_file(path=path, team=team, actor=marketing)

    assert result.updated_count == 1
    assert audience_ids(team.pk, purpose.pk, "sms") == {contact.pk}
    assert_projection_agrees([team], [purpose])


def test_retention_pseudonymising_a_contact_takes_it_out(team):
    purpose = PurposeFactory(team=team, key="news", allowed_channels=["email"], validity_months=12)
    contact = crm_services.contact_create(
        team=team, actor=None, last_name="Alt", points=[("email", "alt@example.de")]
    )
    grant_consent(contact, purpose)
    assert audience_ids(team.pk, purpose.pk, "email") == {contact.pk}
    RetentionPolicy.objects.create(
        data_class=RetentionPolicy.DataClass.INACTIVE_CONTACTS,
        keep_days=365,
        action=RetentionPolicy.Action.PSEUDONYMISE,
    )

    retention_apply(now=timezone.now() + dt.timedelta(days=400))

    contact.refresh_from_db()
    assert contact.erased_at is not None
    assert_projection_agrees([team], [purpose])
    assert not audience_ids(team.pk, purpose.pk, "email")


def test_derived_querysets_count_by_their_own_sql(team, granted):
    purpose, contact = granted
    audience = contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email")
    assert audience.count() == 1
    assert audience.filter(preferred_channel="whatsapp").count() == 0
    assert (audience & Contact.objects.exclude(pk=contact.pk)).count() == 0
    assert audience.all().count() == 1


def test_refresh_repairs_rows_written_behind_the_services_back(team, granted):
    purpose, contact = granted
    Consent.objects.update(team=None, reachable=False)
    assert not audience_ids(team.pk, purpose.pk, "email")

    written = consent_reachability_refresh(contact_ids=[contact.pk])

    assert written == 2
    assert audience_ids(team.pk, purpose.pk, "email") == {contact.pk}


def test_the_repair_command_refreshes_the_whole_projection_in_chunks(
    team, other_team, granted, monkeypatch
):
    purpose, contact = granted
    other_purpose = PurposeFactory(team=other_team, key="news", allowed_channels=list(CHANNELS))
    no_address = crm_services.contact_create(team=other_team, actor=None, last_name="Ohne")
    grant_consent(no_address, other_purpose, "email")
    Consent.objects.update(team=None, reachable=True)
    monkeypatch.setattr(reachability, "REFRESH_CHUNK_SIZE", 1)
    out = io.StringIO()

    call_command("refresh_consent_audience", stdout=out)

    assert audience_ids(team.pk, purpose.pk, "email") == {contact.pk}
    assert set(Consent.objects.values_list("team_id", flat=True)) == {team.pk, other_team.pk}
    assert not Consent.objects.filter(contact=no_address, reachable=True).exists()
    assert "2 of 2 contacts" in out.getvalue()
    assert f"Refreshed: {Consent.objects.count()} current consents." in out.getvalue()


def test_refresh_of_no_contacts_writes_nothing(granted):
    assert consent_reachability_refresh(contact_ids=[]) == 0


def test_the_migration_fills_existing_rows(team, other_team, granted):
    purpose, _contact = granted
    restricted = crm_services.contact_create(
        team=team, actor=None, last_name="R", points=[("email", "r@example.de")]
    )
    grant_consent(restricted, purpose)
    contact_restrict(contact=restricted, actor=None)
    expected = set(Consent.objects.values_list("pk", "team_id", "reachable"))
    Consent.objects.update(team=None, reachable=False)
    migration = importlib.import_module("consent.migrations.0003_consent_audience_columns")

    migration.fill_audience_columns(django_apps, connection.schema_editor())

    assert set(Consent.objects.values_list("pk", "team_id", "reachable")) == expected
    assert_projection_agrees([team, other_team], [purpose])


def test_the_count_is_one_query_on_the_projection(team, granted):
    purpose, _contact = granted
    audience = contacts_with_grant(team_id=team.pk, purpose=purpose, channel="email")
    with CaptureQueriesContext(connection) as captured:
        assert audience.count() == 1
    [query] = captured.captured_queries
    assert "consent_consent" in query["sql"]
    assert "crm_contact" not in query["sql"]
