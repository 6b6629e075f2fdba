"""`manage.py verify_export DIR [--manifest-sha256 HEX]`: recompute an auditor export offline."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from messaging.services.exports import export_verify


class Command(BaseCommand):
    help = (
        "Verify a conversation export: each file's SHA-256, every hash chain from genesis, the "
        "chain heads and every message's content hash. Prints OK or the first mismatch (exit 1)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="The export directory (holds manifest.json).")
        parser.add_argument(
            "--manifest-sha256",
            help="The manifest's SHA-256 as recorded with the export; also pins the manifest.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = export_verify(options["directory"], manifest_sha256=options["manifest_sha256"])
        if not result.ok:
            raise CommandError(_("MISMATCH: %(detail)s") % {"detail": result.first_mismatch})
        self.stdout.write(
            self.style.SUCCESS(
                _(
                    "OK: %(messages)d messages, %(events)d events in %(conversations)d "
                    "conversations; manifest.json SHA-256 %(sha)s"
                )
                % {**result.counts, "sha": result.manifest_sha256}
            )
        )
