"""`manage.py import_contacts FILE --team T`: import a CSV/XLSX file with a progress bar."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from tqdm import tqdm

from crm.errors import DomainError
from crm.imports import BATCH_SIZE, import_file, write_report
from crm.models import ContactImport, ImportStatus, Team


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV or XLSX file into a team: deduplicates on external id, "
        "e-mail and phone, prints a summary and writes a report of the rejected rows."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The .csv or .xlsx file; the first row names columns.")
        parser.add_argument("--team", required=True, help="Slug or id of the receiving team.")
        parser.add_argument(
            "--report",
            help="Write the rejected-rows report (CSV) here as well as into the media storage.",
        )
        parser.add_argument(
            "--user",
            help="Username recorded as the importing user (in history); must be a team member "
            "allowed to import. Without it the import runs as the system.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help="Rows per transaction."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(_("No such file: %(path)s") % {"path": path})
        team = self._team(options["team"])
        actor = self._user(options["user"]) if options["user"] else None
        if options["batch_size"] < 1:
            raise CommandError(_("--batch-size must be at least 1."))

        bar = tqdm(
            unit=" rows", file=sys.stderr, disable=options["verbosity"] == 0, dynamic_ncols=True
        )

        def progress(contact_import: ContactImport) -> None:
            bar.total = contact_import.total_rows
            bar.n = contact_import.processed_rows
            bar.refresh()

        try:
            contact_import = import_file(
                path=path,
                team=team,
                actor=actor,
                progress=progress,
                batch_size=options["batch_size"],
            )
        except DomainError as err:
            raise CommandError(err.message) from err
        finally:
            bar.close()
        self._summary(contact_import, options["report"])
        if contact_import.status == ImportStatus.FAILED:
            raise CommandError(contact_import.error)

    def _team(self, value: str) -> Team:
        team = Team.objects.filter(slug=value).first()
        if team is None and value.isdigit():
            team = Team.objects.filter(pk=int(value)).first()
        if team is None:
            raise CommandError(_("No team with the slug or id “%(team)s”.") % {"team": value})
        return team

    def _user(self, username: str) -> Any:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(_("No user “%(user)s”.") % {"user": username})
        return user

    def _summary(self, contact_import: ContactImport, report: str | None) -> None:
        out = self.stdout
        out.write(
            _("Import #%(id)s into %(team)s: %(status)s")
            % {
                "id": contact_import.pk,
                "team": contact_import.team,
                "status": contact_import.get_status_display(),
            }
        )
        out.write(
            _(
                "created: %(created)s  updated: %(updated)s  unchanged: %(unchanged)s  "
                "rejected: %(rejected)s  warnings: %(warnings)s"
            )
            % {
                "created": contact_import.created_count,
                "updated": contact_import.updated_count,
                "unchanged": contact_import.unchanged_count,
                "rejected": contact_import.rejected_count,
                "warnings": contact_import.warning_count,
            }
        )
        if contact_import.unknown_columns:
            out.write(
                _("Ignored columns: %(columns)s")
                % {"columns": ", ".join(contact_import.unknown_columns)}
            )
        if report:
            with Path(report).open("wb") as handle:
                if contact_import.report_file:
                    with contact_import.report_file.open("rb") as stored:
                        shutil.copyfileobj(stored, handle)
                else:
                    # Asked for explicitly: an empty report (header only) says "none rejected".
                    write_report(contact_import, handle)
            out.write(_("Rejected-rows report: %(path)s") % {"path": report})
        elif contact_import.report_file:
            try:
                location = contact_import.report_file.path
            except NotImplementedError:
                location = contact_import.report_file.name
            out.write(_("Rejected-rows report: %(path)s") % {"path": location})
        else:
            out.write(_("No rows were rejected."))
