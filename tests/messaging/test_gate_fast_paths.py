"""The send gate's cheaper paths decide exactly as before.

Requests and decisions built without the dataclass __init__ (frozen_instance) equal and stay
as frozen as constructed ones; the facts query reuses one psycopg cursor per connection and a
new one after a reconnect; the recorded address hash is the primary point's stored one; the
constants written into the facts query are plain choice values.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from approvals.models import TemplateVersion
from crm.hashing import address_hash
from crm.models import ContactPoint
from messaging.services import SendRequest, send_gate_evaluate
from messaging.services.gate import (
    GateDecision,
    _facts_cursors,
    _literal,
    frozen_instance,
    send_gate_evaluate_many,
)
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, sendable_version

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the prepared facts cursor is PostgreSQL's"
)


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=3)


@pytest.fixture
def version(team, purpose):
    return TemplateVersion.objects.select_related("template__purpose").get(
        pk=sendable_version(team, purpose=purpose).pk
    )


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


def consented(team, purpose):
    contact = reachable_contact(team)
    grant_consent(contact, purpose, "whatsapp")
    return contact


@pytest.mark.django_db
def test_frozen_instance_equals_the_constructed_request_and_decision(
    team, purpose, version, account
):
    contact = consented(team, purpose)
    built = SendRequest(contact=contact, account=account, template_version=version)
    fast = frozen_instance(SendRequest, contact=contact, account=account, template_version=version)
    at = timezone.now()
    values = {
        "allowed": False,
        "reason": "no_consent",
        "decided_at": at,
        "checks": ["account"],
        "inputs": {"contact": contact.pk},
        "request": fast,
    }

    assert fast == built
    assert fast.question == built.question
    assert fast.purpose == purpose
    assert frozen_instance(GateDecision, **values) == GateDecision(**values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.address = "+4915100000000"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen_instance(GateDecision, **values).allowed = True  # type: ignore[misc]


@pytest.mark.django_db
def test_the_recorded_address_hash_is_the_primary_points(team, purpose, version, account):
    contact = consented(team, purpose)
    point = ContactPoint.objects.get(contact=contact, channel="whatsapp")
    request = SendRequest(contact=contact, account=account, template_version=version)

    single = send_gate_evaluate(request)
    [batch] = send_gate_evaluate_many([request])
    given = send_gate_evaluate(
        SendRequest(
            contact=contact, account=account, template_version=version, address=" +4930555 "
        )
    )

    assert single.inputs["address_hash"] == address_hash(point.address) == point.address_hash
    assert batch.inputs["address_hash"] == single.inputs["address_hash"]
    assert given.inputs["address_hash"] == address_hash("+4930555")


@postgresql_only
@pytest.mark.django_db
def test_single_decisions_are_one_query_on_one_reused_cursor(
    team, purpose, version, account, django_assert_num_queries
):
    first, second = consented(team, purpose), consented(team, purpose)
    db = connections[DEFAULT_DB_ALIAS]

    send_gate_evaluate(SendRequest(contact=first, account=account, template_version=version))
    cursor = _facts_cursors[db]
    with django_assert_num_queries(1):
        decision = send_gate_evaluate(
            SendRequest(contact=second, account=account, template_version=version)
        )

    assert decision.allowed is True
    assert _facts_cursors[db] is cursor
    assert not cursor.closed


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_after_a_reconnect_the_gate_reads_on_a_new_cursor(team, purpose, version, account):
    contact = consented(team, purpose)
    request = SendRequest(contact=contact, account=account, template_version=version)
    db = connections[DEFAULT_DB_ALIAS]
    before = send_gate_evaluate(request)
    stale = _facts_cursors[db]

    db.close()
    after = send_gate_evaluate(request)

    assert before.allowed is after.allowed is True
    assert _facts_cursors[db] is not stale
    assert _facts_cursors[db].connection is db.connection


@pytest.mark.parametrize("value", ["granted", "sent", "not_required"])
def test_choice_values_become_sql_literals(value):
    assert _literal(value) == f"'{value}'"


@pytest.mark.parametrize("value", ["it's", "a b", "x;--", ""])
def test_anything_else_is_refused_as_a_literal(value):
    with pytest.raises(ValueError, match="not a choice value"):
        _literal(value)
