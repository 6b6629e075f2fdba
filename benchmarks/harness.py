"""Shared plumbing for `make bench`: a throw-away PostgreSQL database, timing, reporting.

Each benchmark prints one line per figure: name, size, median, target, ratio to target and
peak memory, and writes the same as JSON to benchmarks/results/<name>.json (not committed)
so runs can be compared between commits.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", Path(__file__).resolve().parent / "results"))
ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Figure:
    name: str
    size: int
    unit: str
    median: float
    target: float
    higher_is_better: bool
    runs: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Above 1.0 means the target is met, whichever direction the figure goes."""
        if self.higher_is_better:
            return self.median / self.target if self.target else 0.0
        return self.target / self.median if self.median else float("inf")

    def line(self) -> str:
        verdict = "OK  " if self.ratio >= 1 else "MISS"
        comparison = ">=" if self.higher_is_better else "<="
        return (
            f"{verdict} {self.name:<48} size={self.size:>9,} "
            f"median={self.median:>10.2f} {self.unit:<7} target {comparison} {self.target:g} "
            f"ratio={self.ratio:5.2f}x  peak_rss={self.peak_rss_mb:.0f} MB"
        )


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_runs(function: Callable[[], Any], runs: int) -> list[float]:
    """Wall-clock seconds of each run (after one warm-up run)."""
    function()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return timings


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(benchmark: str, figures: list[Figure]) -> None:
    for figure in figures:
        figure.peak_rss_mb = figure.peak_rss_mb or peak_rss_mb()
        print(figure.line(), flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
    }
    (RESULTS_DIR / f"{benchmark}.json").write_text(json.dumps(payload, indent=2))


def recreate_database(name: str, *, template: str | None = None) -> str:
    """Drop and create `name` (as a copy of `template`, e.g. an already migrated database);
    return its DATABASE_URL. A benchmark never reuses another's data."""
    import psycopg

    copy_of = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"{copy_of}')
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
