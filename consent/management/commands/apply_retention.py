"""`manage.py apply_retention [--dry-run]`: apply the retention policies now (as the daily task)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

from consent.services import retention_apply


class Command(BaseCommand):
    help = (
        "Apply every active retention policy: blank old consent evidence, pseudonymise or "
        "delete inactive contacts, hand message bodies to the messaging app. Records a run "
        "per policy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what each policy would affect; change and record nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        runs = retention_apply(dry_run=options["dry_run"])
        if not runs:
            self.stdout.write(_("No active retention policy."))
        for run in runs:
            details = json.dumps(run.details, sort_keys=True)
            self.stdout.write(f"{run.policy}: {run.affected} {details}")
