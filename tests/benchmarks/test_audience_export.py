"""Smoke-size runs of the audience and export benchmarks (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import SMOKE_SCALE, figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_audience_benchmark_counts_the_real_audience(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "audience")
    assert "audience count" in stdout
    audience = next(iter(figures_by_name(tmp_path, "audience").values()))
    assert audience["size"] == SMOKE_SCALE
    assert audience["notes"]["audience"] > 0


def test_export_benchmark_exports_and_verifies(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "export")
    assert "export conversations" in stdout
    by_name = figures_by_name(tmp_path, "export")
    exported = by_name["export conversations (jsonl+csv+manifest)"]
    assert exported["size"] == SMOKE_SCALE
    assert exported["notes"]["events"] > exported["notes"]["messages"] == SMOKE_SCALE
    assert by_name["verify export (chains, hashes, files)"]["notes"]["ok"] is True
