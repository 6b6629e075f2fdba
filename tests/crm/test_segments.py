from __future__ import annotations

import pytest

from crm.segments import SegmentRulesInvalid, validate_rules
from crm.selectors import segment_contacts, segment_preview
from crm.services import segment_create, segment_update
from tests.factories import ContactFactory, ContactPointFactory, SegmentFactory, TagFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(team, other_team):
    vip = TagFactory(team=team, name="vip")
    anna = ContactFactory(team=team, first_name="Anna", language="de", attributes={"city": "Kiel"})
    anna.tags.add(vip)
    ContactPointFactory(contact=anna, channel="email", address="anna@example.org")
    bob = ContactFactory(team=team, first_name="Bob", language="en", attributes={"city": "York"})
    ContactPointFactory(contact=bob, channel="sms", address="+4915123456789")
    cem = ContactFactory(team=team, first_name="Cem", language="de", external_id="E-1")
    ContactFactory(team=other_team, first_name="Anna", language="de")
    return {"anna": anna, "bob": bob, "cem": cem}


def names(segment):
    return sorted(segment_contacts(segment).values_list("first_name", flat=True))


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"match": "all", "conditions": []}, ["Anna", "Bob", "Cem"]),
        ({"conditions": [{"field": "language", "op": "eq", "value": "de"}]}, ["Anna", "Cem"]),
        ({"conditions": [{"field": "language", "op": "in", "value": ["en"]}]}, ["Bob"]),
        ({"conditions": [{"field": "tag", "op": "has", "value": "vip"}]}, ["Anna"]),
        ({"conditions": [{"field": "tag", "op": "lacks", "value": "vip"}]}, ["Bob", "Cem"]),
        ({"conditions": [{"field": "channel", "op": "has", "value": "sms"}]}, ["Bob"]),
        ({"conditions": [{"field": "channel", "op": "lacks", "value": "email"}]}, ["Bob", "Cem"]),
        (
            {"conditions": [{"field": "attribute", "key": "city", "op": "eq", "value": "Kiel"}]},
            ["Anna"],
        ),
        ({"conditions": [{"field": "attribute", "key": "city", "op": "exists"}]}, ["Anna", "Bob"]),
        ({"conditions": [{"field": "external_id", "op": "present"}]}, ["Cem"]),
        ({"conditions": [{"field": "first_name", "op": "contains", "value": "nn"}]}, ["Anna"]),
        (
            {
                "match": "any",
                "conditions": [
                    {"field": "tag", "op": "has", "value": "vip"},
                    {
                        "match": "all",
                        "conditions": [
                            {"field": "language", "op": "eq", "value": "de"},
                            {"field": "external_id", "op": "present"},
                        ],
                    },
                ],
            },
            ["Anna", "Cem"],
        ),
    ],
)
def test_rules_resolve_to_the_right_contacts(people, team, rules, expected):
    assert names(SegmentFactory(team=team, rules=rules)) == expected


def test_segment_resolves_in_one_query(people, team, django_assert_num_queries):
    segment = SegmentFactory(
        team=team,
        rules={
            "match": "all",
            "conditions": [
                {"field": "tag", "op": "has", "value": "vip"},
                {"field": "channel", "op": "has", "value": "email"},
            ],
        },
    )
    with django_assert_num_queries(1):
        assert segment_contacts(segment).count() == 1


def test_preview_counts_and_samples(people, team):
    preview = segment_preview(SegmentFactory(team=team), sample_size=2)
    assert preview["count"] == 3
    assert len(preview["sample"]) == 2


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "object"),
        ({"match": "some"}, "match"),
        ({"conditions": "x"}, "list"),
        ({"conditions": [{"field": "shoe"}]}, "Unknown field"),
        ({"conditions": [{"field": "language", "op": "gt", "value": "de"}]}, "operators"),
        ({"conditions": [{"field": "language", "op": "eq", "value": "xx"}]}, "not one of"),
        ({"conditions": [{"field": "tag", "op": "has", "value": ""}]}, "text"),
        ({"conditions": [{"field": "attribute", "key": "a__b", "op": "exists"}]}, "Attribute"),
        ({"conditions": [{"field": "created", "op": "before", "value": "soon"}]}, "ISO"),
        ({"conditions": [{"field": "tag", "op": "has", "value": "x"}] * 51}, "at most"),
    ],
)
def test_invalid_rules_are_refused_with_a_clear_message(rules, message):
    with pytest.raises(SegmentRulesInvalid, match=message):
        validate_rules(rules)


def test_segment_create_refuses_bad_rules_and_writes_nothing(marketing, team):
    with pytest.raises(SegmentRulesInvalid):
        segment_create(team=team, name="x", rules={"match": "?"}, actor=marketing)
    assert team.segments.count() == 0


def test_segment_update_keeps_history(marketing, team):
    segment = segment_create(team=team, name="All", rules={"conditions": []}, actor=marketing)
    segment_update(segment=segment, actor=marketing, name="Everyone")
    assert [h.name for h in segment.history.all()] == ["Everyone", "All"]
    assert segment.history.first().history_user == marketing
