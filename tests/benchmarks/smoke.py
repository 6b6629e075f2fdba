"""One smoke run of every benchmark (`python -m benchmarks.run --smoke`) shared by the tests in
this folder: the benchmark code keeps working and checks its own answers. Figures are not judged
here; `make bench` judges them at full size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SCALE = 600  # benchmarks.run.DEFAULT_SMOKE_SIZE; a module may set its own SMOKE_SIZE


@dataclass
class SmokeRun:
    stdout: str
    results: Path

    def figures(self, benchmark: str) -> dict[str, dict[str, Any]]:
        payload = json.loads((self.results / f"{benchmark}.json").read_text())
        return {figure["name"]: figure for figure in payload["figures"]}


def run_smoke(results: Path) -> SmokeRun:
    database = f"dialog_crm_bench_smoke_{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RESULTS_DIR": str(results)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--database", database],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return SmokeRun(result.stdout, results)
