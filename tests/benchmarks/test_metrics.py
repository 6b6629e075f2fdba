"""Smoke-size run of the metrics benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_metrics_benchmark_reads_real_figures(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "metrics", scale=2000)
    assert "metrics overview" in stdout
    figure = next(iter(figures_by_name(tmp_path, "metrics").values()))
    assert figure["size"] == 2000
    assert figure["notes"]["messages"] > 0
    assert figure["notes"]["replied"] > 0
