"""Run benchmarks at smoke size in a subprocess: the benchmark code keeps working (figures are
not judged here; `make bench` judges them at full size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SCALE = 600


def run_benchmarks(tmp_path: Path, *names: str, scale: int = SMOKE_SCALE) -> str:
    """Run `python -m benchmarks.run --only <name>...` on a throw-away database; return stdout."""
    database = f"dialog_crm_bench_smoke_{os.getpid()}_{'_'.join(names)}"[:60]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RESULTS_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    only = [argument for name in names for argument in ("--only", name)]
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--scale",
            str(scale),
            "--runs",
            "1",
            "--database",
            database,
            *only,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def figures_by_name(tmp_path: Path, benchmark: str) -> dict[str, dict[str, Any]]:
    payload = json.loads((tmp_path / f"{benchmark}.json").read_text())
    return {figure["name"]: figure for figure in payload["figures"]}
