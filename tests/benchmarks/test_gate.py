"""Smoke-size run of the send-gate benchmark (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres


def test_gate_benchmark_decides_as_planted(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "gate")
    assert "send-gate decisions in campaign batches" in stdout
    figures = figures_by_name(tmp_path, "gate")
    batch = figures["send-gate decisions in campaign batches"]
    assert batch["size"] == 600
    assert batch["notes"]["correct"] is True
    assert batch["notes"]["outcomes"] == batch["notes"]["planted"]
    single = figures["send-gate decisions, one at a time"]
    assert single["notes"]["correct"] is True
    assert single["notes"]["single_equals_batch"] is True
    assert figures["message_send one at a time (informational)"]["notes"]["correct"] is True
