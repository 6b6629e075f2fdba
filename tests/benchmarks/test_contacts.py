"""Smoke-size run of the contact list benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_contacts_benchmark_checks_its_pages_against_sql(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "contacts")
    assert "API contact list p50" in stdout
    figures = figures_by_name(tmp_path, "contacts")

    api = figures["API contact list p50 (filters, cursor)"]
    assert api["size"] == 600
    assert api["notes"]["rows_checked_against_sql"] > 0
    assert len(set(api["notes"]["queries_per_request"].values())) == 1
    assert figures["API contact list p99 (filters, cursor)"]["median"] >= api["median"]

    naive = figures["naive API contact list, offset paging"]
    assert naive["notes"]["offset"] > 0

    admin = figures["admin contact changelist p50"]
    assert max(admin["notes"]["queries_per_request"].values()) <= 15
    counts = admin["notes"]["result_counts"]
    assert all(
        row["shown"] == row["exact"] for label, row in counts.items() if label != "unfiltered"
    )
