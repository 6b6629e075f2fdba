"""Smoke-size run of the campaign freezing benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import SMOKE_SCALE, figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_campaign_benchmark_freezes_exactly_the_audience(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "campaigns")
    assert "campaign recipient freezing" in stdout
    by_name = figures_by_name(tmp_path, "campaigns")
    frozen = by_name["campaign recipient freezing (launch)"]
    assert frozen["size"] == SMOKE_SCALE
    assert frozen["notes"]["recipients"] > 0
    assert frozen["notes"]["matches_audience"] is True
    assert frozen["notes"]["duplicates_after_relaunch"] == 0
    naive = by_name["campaign recipient freezing, naive (create per row)"]
    assert naive["target"] == frozen["target"]
    assert naive["notes"]["extrapolated_to"] == frozen["notes"]["recipients"]
