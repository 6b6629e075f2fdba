"""`make bench`: build a fresh PostgreSQL database per benchmark, run it, print the figures.

python -m benchmarks.run [--scale 1000000] [--runs 5] [--only audience] [--keep] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from benchmarks.harness import drop_database, recreate_database, report

DEFAULT_SMOKE_SIZE = 600
# Every benchmarks/bench_<name>.py with a `run(size, runs) -> list[Figure]` is one benchmark.
BENCHMARKS = {
    path.stem.removeprefix("bench_"): f"benchmarks.{path.stem}"
    for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py"))
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=int(os.environ.get("BENCH_SCALE", 1_000_000)))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    parser.add_argument("--database", default="dialog_crm_bench")
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Each benchmark once at its SMOKE_SIZE (default 600): the test suite's check that "
        "the benchmark code still works. Figures are not judged.",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = 1

    # Migrate once into a template; every benchmark then starts on its own fresh copy of it.
    template = f"{args.database}_migrated"
    os.environ["DATABASE_URL"] = recreate_database(template)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    call_command("migrate", verbosity=0)
    connections.close_all()
    scale = "smoke size" if args.smoke else f"scale {args.scale:,}"
    print(f"Benchmarks at {scale} ({args.runs} runs each, median shown)")
    try:
        for name in args.only or sorted(BENCHMARKS):
            os.environ["DATABASE_URL"] = recreate_database(args.database, template=template)
            connections["default"].settings_dict["NAME"] = args.database
            module = importlib.import_module(BENCHMARKS[name])
            size = getattr(module, "SMOKE_SIZE", DEFAULT_SMOKE_SIZE) if args.smoke else args.scale
            report(name, module.run(size, args.runs))
            connections.close_all()
    finally:
        connections.close_all()
        drop_database(template)
        if not args.keep:
            drop_database(args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
