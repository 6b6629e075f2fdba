"""The send gate's facts query as a prepared statement (PostgreSQL) and the batch's shared work.

On PostgreSQL the facts query runs through a server-side-binding cursor that prepares it, so
the server stops planning it per decision. It must still be Django's cursor on Django's
connection: counted in the query log, inside the caller's transaction, refused in a broken
one, and off where DISABLE_SERVER_SIDE_CURSORS marks a transaction-pooling PgBouncer.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from approvals.models import TemplateVersion
from crm.models import Team
from messaging.models import CampaignRecipient
from messaging.services import SendRequest, send_gate_evaluate
from messaging.services.campaigns import campaign_batch_decisions, campaign_templates
from messaging.services.gate import send_gate_evaluate_many
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, sendable_version

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["whatsapp", "sms"], frequency_cap=3)


@pytest.fixture
def version(team, purpose):
    return TemplateVersion.objects.select_related("template__purpose").get(
        pk=sendable_version(team, purpose=purpose).pk
    )


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


def consented(team, purpose, **fields):
    contact = reachable_contact(team, **fields)
    grant_consent(contact, purpose, "whatsapp")
    return contact


def facts_statements() -> dict[str, int]:
    """Prepared facts statements of this session -> how often each was executed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ["SELECT c.id, p0.address%"],
        )
        return {name: generic + custom for name, generic, custom in cursor.fetchall()}


@postgresql_only
def test_the_facts_query_is_prepared_once_and_then_planned_generically(
    team, purpose, version, account
):
    contacts = [consented(team, purpose) for _ in range(8)]
    threshold = connection.connection.prepare_threshold if connection.connection else None

    decisions = [
        send_gate_evaluate(SendRequest(contact=c, account=account, template_version=version))
        for c in contacts
    ]

    assert [d.allowed for d in decisions] == [True] * 8
    executions = facts_statements()
    assert sum(executions.values()) >= 8
    assert len(executions) == 1, "one statement for one shape, whatever the contact"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans FROM pg_prepared_statements WHERE name = %s", [*executions]
        )
        # After five custom plans PostgreSQL keeps the generic one: no planning per decision.
        assert cursor.fetchone()[0] >= 1
    # Prepared statements stay off for everything else on the connection (Django's default).
    assert connection.connection.prepare_threshold == threshold


@postgresql_only
def test_with_disable_server_side_cursors_nothing_is_prepared(
    team, purpose, version, account, monkeypatch
):
    contact = consented(team, purpose)
    request = SendRequest(contact=contact, account=account, template_version=version)
    send_gate_evaluate(request)
    before = facts_statements()
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)

    decision = send_gate_evaluate(request)

    assert decision.allowed is True
    assert facts_statements() == before


def test_the_prepared_read_runs_in_atomic_blocks_and_after_a_rolled_back_savepoint(
    team, purpose, version, account
):
    contact = consented(team, purpose)
    request = SendRequest(contact=contact, account=account, template_version=version)
    at = timezone.now()

    with transaction.atomic():
        first = send_gate_evaluate(request, at=at)
        with pytest.raises(IntegrityError), transaction.atomic():
            Team.objects.create(name="Twin", slug=team.slug)
        second = send_gate_evaluate(request, at=at)
    third = send_gate_evaluate(request, at=at)

    assert first.allowed is True
    assert first == second == third


def test_the_gate_refuses_to_read_in_a_broken_transaction(team, purpose, version, account):
    contact = consented(team, purpose)
    request = SendRequest(contact=contact, account=account, template_version=version)

    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic(savepoint=False):
            Team.objects.create(name="Twin", slug=team.slug)
        with pytest.raises(TransactionManagementError):
            send_gate_evaluate(request)


def test_quiet_hours_are_judged_per_time_zone_and_account_within_one_batch(team, purpose, version):
    at = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
    quiet = ChannelAccountFactory(
        team=team, quiet_hours_start=dt.time(22, 0), quiet_hours_end=dt.time(6, 0)
    )
    loud = ChannelAccountFactory(team=team)
    # 12:00 UTC is 21:00 in Tokyo (awake), 23:00 at UTC+11 (asleep), 13:00 in Berlin.
    tokyo = consented(team, purpose, time_zone="Asia/Tokyo")
    night = consented(team, purpose, time_zone="Etc/GMT-11")
    berlin = consented(team, purpose, time_zone="Europe/Berlin")
    cases = [
        (tokyo, quiet),
        (night, quiet),
        (berlin, quiet),
        (night, loud),
        (night, quiet),
        (tokyo, quiet),
    ]
    requests = [
        SendRequest(contact=contact, account=via, template_version=version)
        for contact, via in cases
    ]

    batch = send_gate_evaluate_many(requests, at=at)

    assert batch == [send_gate_evaluate(request, at=at) for request in requests]
    assert [d.deferred_until for d in batch] == [
        None,
        dt.datetime(2026, 1, 15, 19, 0, tzinfo=dt.UTC),
        None,
        None,
        dt.datetime(2026, 1, 15, 19, 0, tzinfo=dt.UTC),
        None,
    ]
    assert batch[1].inputs["quiet_hours"]["zone"] == "Etc/GMT-11"
    assert "quiet_hours" not in batch[3].checks


@pytest.mark.parametrize("size", [5, 40])
def test_campaign_batch_decisions_read_the_facts_in_one_query_whatever_the_size(
    team, purpose, size, django_assert_num_queries
):
    from messaging.models import Campaign, CampaignTemplate

    sms_version = sendable_version(team, purpose=purpose, channel="sms")
    whatsapp_version = sendable_version(team, purpose=purpose)
    whatsapp = ChannelAccountFactory(team=team)
    sms = ChannelAccountFactory(team=team, channel="sms", address="+4930999")
    campaign = Campaign.objects.create(team=team, name="Mixed", purpose=purpose, state="running")
    for position, (via, sent) in enumerate([(whatsapp, whatsapp_version), (sms, sms_version)]):
        CampaignTemplate.objects.create(
            campaign=campaign,
            account=via,
            channel=via.channel,
            template_version=sent,
            position=position,
        )
    recipients = []
    for i in range(size):
        channel = "sms" if i % 2 else "whatsapp"
        contact = reachable_contact(team, channel=channel)
        if i % 3:
            grant_consent(contact, purpose, channel)
        recipients.append(
            CampaignRecipient.objects.create(
                campaign=campaign,
                contact=contact,
                account=sms if i % 2 else whatsapp,
                channel=channel,
            )
        )
    claimed = list(CampaignRecipient.objects.filter(campaign=campaign).select_related("contact"))
    templates = campaign_templates(campaign)
    at = timezone.now()

    with django_assert_num_queries(1):
        decisions = campaign_batch_decisions(claimed, templates, at)

    assert [d.reason for d in decisions] == [None if i % 3 else "no_consent" for i in range(size)]
    assert decisions == [send_gate_evaluate(d.request, at=at) for d in decisions]
