"""Smoke-size run of the consent ledger benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_consent_benchmark_records_a_correct_ledger(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "consent")
    assert "consent ledger bulk record" in stdout
    figures = figures_by_name(tmp_path, "consent")
    bulk = figures["consent ledger bulk record (events/s)"]
    assert bulk["size"] == 600
    assert bulk["notes"]["correct"] is True
    assert bulk["notes"]["events"] == 600
    assert bulk["notes"]["projection_mismatches"] == 0
    assert bulk["notes"]["chain_gaps"] == 0
    naive = figures["consent ledger naive consent_record per event (events/s)"]
    assert naive["target"] == bulk["target"]
    assert naive["notes"]["chains_intact"] > 0
