"""crm.imports.lookups: arrays sent as one literal arrive exactly as the values were."""

from __future__ import annotations

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.imports.lookups import any_of, array_literal
from crm.models import Contact
from tests.db_plans import postgres_only
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

TRICKY = [
    "",
    "NULL",
    "null",
    'say "hi"',
    "back\\slash",
    "a,b",
    "{x}",
    " padded ",
    "Jörg Groß",
    '\\"',
]


def _round_trip(values, array_type):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{array_type}", [array_literal(values)])
        return cursor.fetchone()[0]


@postgres_only
def test_strings_arrive_as_they_were():
    assert _round_trip(TRICKY, "text[]") == TRICKY


@postgres_only
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00")), min_size=1, max_size=8
    )
)
def test_any_text_arrives_as_it_was(values):
    assert _round_trip(values, "text[]") == values


@postgres_only
def test_ids_arrive_as_they_were():
    assert _round_trip([1, 2**40, 7], "bigint[]") == [1, 2**40, 7]


def test_any_of_finds_exactly_the_rows_named(team):
    named = ContactFactory(team=team, external_id='K"1\\,')
    ContactFactory(team=team, external_id="K2")
    assert list(Contact.objects.filter(any_of("external_id", {'K"1\\,', "K9"}))) == [named]
    assert list(Contact.objects.filter(any_of("id", [named.pk]))) == [named]


def test_one_value_holding_nul_is_not_split_into_two():
    """The values are escaped as one text joined by NUL; a NUL of their own must stay in its
    value (PostgreSQL then refuses it, as it refuses any text holding NUL)."""
    assert array_literal(["a\x00b", 'c"']) == '{"a\x00b","c\\""}'
    assert array_literal(["a", "b"]) == '{"a","b"}'
    assert array_literal(["", ""]) == '{"",""}'
