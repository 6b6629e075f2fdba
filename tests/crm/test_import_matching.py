"""How a batch finds the contacts its rows mean: all key kinds in one lookup query, planned as
index probes without parallel workers, and the keys described in priority order."""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from crm.imports import engine
from crm.imports.columns import parse_row, resolve_columns
from crm.models import Channel, ImportRejection
from crm.planner import prefer_index_probes
from tests.crm.test_import import counts, existing_contact, run
from tests.db_plans import plan, postgres_only

pytestmark = pytest.mark.django_db

HEADER = ["external_id", "first_name", "email", "phone"]


def _plan_batch(team, rows):
    columns = resolve_columns(HEADER)
    parsed = [parse_row(line, cells, columns) for line, cells in enumerate(rows, start=2)]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        prefer_index_probes()
        result = engine.plan_batch(team, engine.TeamTags(team), parsed, lock=True)
    return result, queries.captured_queries


# A lookup by external id, wherever it appears: as its own query or as an arm of the union.
_BY_EXTERNAL_ID = re.compile(r'"external_id" (= ANY|IN \()')


def _owner_lookups(queries):
    return [q["sql"] for q in queries if _BY_EXTERNAL_ID.search(q["sql"])]


def test_external_ids_and_addresses_are_looked_up_in_one_query(team, marketing):
    ada = existing_contact(team, marketing, first_name="Ada", external_id="A1")
    bob = existing_contact(
        team, marketing, first_name="Bob", points=[(Channel.SMS, "+4915123456789")]
    )
    rows = [["A1", "Ada", "", ""], ["", "Bob", "", "0151 23456789"], ["", "Eve", "e@x.org", ""]]

    result, queries = _plan_batch(team, rows)

    assert [r.contact_id for _row, r, _target in result.results] == [ada.pk, bob.pk, None]
    (lookup,) = _owner_lookups(queries)
    assert lookup.count("UNION ALL") == 2


@postgres_only
def test_the_lookup_probes_the_key_indexes_without_parallel_workers(team, marketing):
    existing_contact(team, marketing, external_id="A1")
    rows = [["A1", "Ada", "ada@example.org", "0151 23456789"]]
    _result, queries = _plan_batch(team, rows)
    (lookup,) = _owner_lookups(queries)

    with transaction.atomic():
        prefer_index_probes()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL parallel_setup_cost = 0")
            cursor.execute("SET LOCAL parallel_tuple_cost = 0")
            cursor.execute("SET LOCAL min_parallel_index_scan_size = 0")
        explained = plan(lookup, [])

    assert "crm_contactpoint_unique_address" in explained
    assert "crm_contact_unique_external_id" in explained
    assert "Gather" not in explained


def test_a_conflict_names_the_email_before_the_phone_whatever_the_column_order(
    tmp_path, team, marketing
):
    by_phone = existing_contact(
        team, marketing, first_name="P", points=[(Channel.WHATSAPP, "+4915123456789")]
    )
    by_email = existing_contact(team, marketing, first_name="E")
    result = run(
        tmp_path,
        [["0151 23456789", "ada@example.org", "Neu"]],
        team,
        marketing,
        header=["phone", "email", "first_name"],
    )

    assert counts(result) == (0, 0, 0, 1)
    reason = ImportRejection.objects.get().reason
    assert reason.index(f"#{by_email.pk}") < reason.index(f"#{by_phone.pk}")
    assert reason.index("“ada@example.org”") < reason.index("“+4915123456789”")
