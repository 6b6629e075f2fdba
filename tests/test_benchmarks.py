"""The benchmark code keeps working: a smoke-size run on PostgreSQL (figures are not judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.postgres


def test_benchmarks_run_at_smoke_size(db, tmp_path):
    database = f"dialog_crm_bench_smoke_{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RESULTS_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--scale",
            "600",
            "--runs",
            "1",
            "--database",
            database,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "audience count" in result.stdout
    figures = json.loads((tmp_path / "audience.json").read_text())
    audience = figures["figures"][0]
    assert audience["size"] == 600
    assert audience["notes"]["audience"] > 0
    assert "export conversations" in result.stdout
    export = json.loads((tmp_path / "export.json").read_text())
    by_name = {figure["name"]: figure for figure in export["figures"]}
    exported = by_name["export conversations (jsonl+csv+manifest)"]
    assert exported["size"] == 600
    assert exported["notes"]["events"] > exported["notes"]["messages"] == 600
    assert by_name["verify export (chains, hashes, files)"]["notes"]["ok"] is True
