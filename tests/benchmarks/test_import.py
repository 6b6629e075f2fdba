"""Smoke-size run of the contact import benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import SMOKE_SCALE, figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_import_benchmark_imports_reimports_and_checks_the_outcome(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "import")
    assert "CSV import" in stdout
    by_name = figures_by_name(tmp_path, "import")
    first = by_name["CSV import (validate, dedup, report)"]
    assert first["size"] == SMOKE_SCALE
    assert first["notes"]["ok"] is True
    assert first["notes"]["created"] > first["notes"]["rejected"] > 0
    assert first["notes"]["updated"] > 0
    assert first["notes"]["report_lines"] == first["notes"]["rejected"]
    again = by_name["CSV re-import (all deduplicated, no change)"]
    assert again["notes"]["database_unchanged"] is True
    assert again["notes"]["unchanged"] == SMOKE_SCALE - first["notes"]["rejected"]
    naive = by_name["naive CSV import (save() per row)"]
    assert naive["size"] == SMOKE_SCALE
    assert naive["target"] == first["target"]
