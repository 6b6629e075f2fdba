"""Smoke-size run of the metrics benchmark (PostgreSQL): the dashboard's figures are read and
checked against hand-written SQL."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres

DASHBOARD = "metrics dashboard (team, 90 days, all queries)"


def test_metrics_benchmark_reads_real_figures(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "metrics", scale=2000)
    assert "metrics dashboard" in stdout
    figures = figures_by_name(tmp_path, "metrics")
    assert "  API overview (team, all figures)" in figures
    figure = figures[DASHBOARD]
    assert figure["size"] == 2000
    assert figure["notes"]["verified_against_sql"] is True
    assert figure["notes"]["messages"] > 0
    assert figure["notes"]["replied"] > 0
