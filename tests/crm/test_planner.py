"""crm.planner: an import keeps PostgreSQL's statistics of the tables it grows current, and
prices its index probes as reads from memory."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from crm import planner, roles
from crm.imports import import_file
from crm.models import Contact, ContactPoint
from tests.db_plans import postgres_only

pytestmark = pytest.mark.django_db


def _analyzed(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("ANALYZE")]


@postgres_only
def test_a_table_is_analyzed_once_its_new_rows_outnumber_its_statistics(monkeypatch):
    monkeypatch.setattr(planner, "MIN_NEW_ROWS", 100)
    growth = planner.GrowthAnalyzer(Contact, ContactPoint)
    assert set(growth.analyzed_rows) == {"crm_contact", "crm_contactpoint"}
    growth.analyzed_rows = {"crm_contact": 0.0, "crm_contactpoint": 0.0}  # never analyzed

    growth.added({Contact: 100, ContactPoint: 40})
    assert growth.analyze_grown() == []  # not more than the minimum yet

    growth.added({Contact: 1})
    with CaptureQueriesContext(connection) as queries:
        assert growth.analyze_grown() == ["crm_contact"]
    assert _analyzed(queries) == ['ANALYZE "crm_contact"']
    # What it now describes: the rows in the table (none here), and nothing new since.
    assert growth.new_rows == {"crm_contact": 0, "crm_contactpoint": 40}
    assert growth.analyze_grown() == []


@postgres_only
def test_the_threshold_grows_with_the_table(monkeypatch):
    monkeypatch.setattr(planner, "MIN_NEW_ROWS", 10)
    growth = planner.GrowthAnalyzer(Contact)
    growth.analyzed_rows["crm_contact"] = 5_000.0  # as if analyzed at 5,000 rows

    growth.added({Contact: 5_000})
    assert growth.analyze_grown() == []
    growth.added({Contact: 1})
    assert growth.analyze_grown() == ["crm_contact"]


def test_elsewhere_nothing_is_analyzed(monkeypatch):
    monkeypatch.setattr(connection, "vendor", "sqlite")  # as on the embedded default
    growth = planner.GrowthAnalyzer(Contact)
    growth.added({Contact: 10**9})
    with CaptureQueriesContext(connection) as queries:
        assert growth.analyze_grown() == []
    assert queries.captured_queries == []


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_probes_are_priced_as_reads_from_memory_for_the_transaction_only():
    settings = ("random_page_cost", "max_parallel_workers_per_gather")

    def current():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting(%s), current_setting(%s)", settings)
            return cursor.fetchone()

    default = current()
    assert default[1] != "0"
    with transaction.atomic():
        planner.prefer_index_probes()
        assert current() == ("1.1", "0")
    assert current() == default


@postgres_only
def test_an_import_analyzes_the_tables_it_grew(monkeypatch, team, make_user, tmp_path):
    monkeypatch.setattr(planner, "MIN_NEW_ROWS", 20)
    user = make_user("importer", roles.MARKETING, team)
    path = tmp_path / "kontakte.csv"
    lines = [f"person{i}@example.org;{'vip' if i % 2 else ''}" for i in range(60)]
    path.write_text("E-Mail;Tags\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with connection.cursor() as cursor:  # statistics of the empty tables, whatever ran before
        cursor.execute("ANALYZE crm_contact, crm_contactpoint, crm_contact_tags")

    with CaptureQueriesContext(connection) as queries:
        contact_import = import_file(path=path, team=team, actor=user, batch_size=30)

    assert contact_import.created_count == 60
    # After the first batch: 30 new contacts and points (more than 20 and than the empty
    # tables' statistics), 15 tag links (too few). After the second: 30 more contacts and
    # points (not more than the 30 their statistics now describe), 30 tag links in all.
    assert _analyzed(queries) == [
        'ANALYZE "crm_contact"',
        'ANALYZE "crm_contactpoint"',
        'ANALYZE "crm_contact_tags"',
    ]
