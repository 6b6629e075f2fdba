"""Segment rules on consent state: {"field": "consent", "op": ..., "purpose": key}."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from consent.services import Evidence, opt_in_request
from crm.models import Segment
from crm.segments import SegmentRulesInvalid, validate_rules
from crm.selectors import segment_contacts
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ContactFactory, PurposeFactory, SegmentFactory, TagFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, key="newsletter", validity_months=1)


@pytest.fixture
def people(team, other_team, purpose):
    people = {
        name: ContactFactory(team=team, last_name=name)
        for name in ("granted", "sms_only", "withdrawn", "pending", "expired", "nothing")
    }
    grant_consent(people["granted"], purpose)
    grant_consent(people["sms_only"], purpose, "sms")
    grant_consent(people["withdrawn"], purpose, occurred_at=NOW - dt.timedelta(days=2))
    withdraw_consent(people["withdrawn"], purpose, occurred_at=NOW - dt.timedelta(days=1))
    opt_in_request(
        contact=people["pending"],
        purpose=purpose,
        channel="email",
        evidence=Evidence(),
        send_confirmation=False,
    )
    grant_consent(people["expired"], purpose, occurred_at=NOW - dt.timedelta(days=60))
    # Same key in another team: a different purpose.
    people["foreign"] = ContactFactory(team=other_team, last_name="foreign")
    grant_consent(people["foreign"], PurposeFactory(team=other_team, key="newsletter"))
    return people


def matching(team, *conditions, match: str = "all") -> set[str]:
    segment = SegmentFactory(team=team, rules={"match": match, "conditions": list(conditions)})
    return {contact.last_name for contact in segment_contacts(segment)}


def consent(op: str, channel: str | None = "email", purpose: str = "newsletter") -> dict:
    condition = {"field": "consent", "op": op, "purpose": purpose}
    if channel is not None:
        condition["channel"] = channel
    return condition


def test_granted_means_currently_granted_and_valid(team, people):
    assert matching(team, consent("granted")) == {"granted"}


def test_not_granted_is_everyone_else_in_the_team(team, people):
    assert matching(team, consent("not_granted")) == {
        "sms_only",
        "withdrawn",
        "pending",
        "expired",
        "nothing",
    }


def test_withdrawn_and_pending(team, people):
    assert matching(team, consent("withdrawn")) == {"withdrawn"}
    assert matching(team, consent("pending")) == {"pending"}


def test_without_channel_any_channel_counts(team, people):
    assert matching(team, consent("granted", channel=None)) == {"granted", "sms_only"}


def test_unknown_purpose_key_matches_nobody(team, people):
    assert matching(team, consent("granted", purpose="gibt-es-nicht")) == set()


def test_consent_combines_with_other_conditions(team, people):
    vip = TagFactory(team=team, name="vip")
    people["granted"].tags.add(vip)
    people["withdrawn"].tags.add(vip)
    tag = {"field": "tag", "op": "has", "value": "vip"}
    assert matching(team, tag, consent("granted")) == {"granted"}
    assert matching(team, consent("pending"), consent("withdrawn"), match="any") == {
        "pending",
        "withdrawn",
    }


def test_segment_stays_one_query(team, people, django_assert_num_queries):
    segment = SegmentFactory(team=team, rules={"match": "all", "conditions": [consent("granted")]})
    with django_assert_num_queries(1):
        list(segment_contacts(segment))


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "consent", "op": "granted"}, "purpose"),
        ({"field": "consent", "op": "granted", "purpose": " "}, "purpose"),
        ({"field": "consent", "op": "granted", "purpose": 3}, "purpose"),
        ({"field": "consent", "op": "granted", "purpose": "n", "channel": "fax"}, "fax"),
        ({"field": "consent", "op": "expired", "purpose": "n"}, "granted, not_granted"),
    ],
)
def test_bad_consent_conditions_have_readable_errors(condition, message):
    with pytest.raises(SegmentRulesInvalid) as error:
        validate_rules({"match": "all", "conditions": [condition]})
    assert message in error.value.message


def test_segment_api_refuses_bad_consent_rule_and_saves_nothing(api_client_for, marketing, team):
    response = api_client_for(marketing).post(
        reverse("segment-list"),
        {
            "team": team.pk,
            "name": "Newsletter",
            "rules": {"match": "all", "conditions": [{"field": "consent", "op": "granted"}]},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "purpose" in str(response.data["rules"])
    assert not Segment.objects.exists()


def test_segment_preview_api_with_consent_rule(api_client_for, marketing, team, people):
    response = api_client_for(marketing).post(
        reverse("segment-preview"),
        {"team": team.pk, "rules": {"match": "all", "conditions": [consent("granted")]}},
        format="json",
    )
    assert response.status_code == 200, response.data
    assert response.data["count"] == 1
    assert response.data["sample"][0]["id"] == people["granted"].pk
