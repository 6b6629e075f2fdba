from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from tqdm import tqdm

from crm.demo import DemoCredential, DemoSummary, demo_contacts_planned, demo_seed
from crm.errors import DomainError
from crm.roles import AUDITOR

DEFAULT_PASSWORD = "demo-password"  # noqa: S105 - the documented demo password, not a secret


def _teams_label(credential: DemoCredential) -> str:
    if credential.teams:
        return ", ".join(credential.teams)
    if credential.role == AUDITOR:
        return _("(none; reads every team)")
    return _("(every team)")


class Command(BaseCommand):
    @property
    def help(self) -> str:  # a property: argparse needs a str, translated when asked for
        return _(
            "Load demo data: teams, one user per role, realistic contacts and segments. "
            "Safe to run again; nothing is duplicated."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--contacts",
            type=int,
            default=1000,
            help=_("Contacts to generate (default 1000)."),
        )
        parser.add_argument(
            "--password",
            default=DEFAULT_PASSWORD,
            help=_("Password of every demo user (default %(default)s)."),
        )
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help=_("Where the server will answer, for the printed links."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        total = demo_contacts_planned(max(options["contacts"], 0))
        bars: list[tqdm] = []

        def progress(count: int) -> None:
            # Opened on the first batch, so the step lines printed before it stay readable.
            if not bars:
                bars.append(
                    tqdm(
                        total=total,
                        unit=" contacts",
                        desc=_("Contacts"),
                        disable=options["verbosity"] == 0,
                    )
                )
            bars[0].update(count)
            if bars[0].n >= total:
                bars[0].close()

        try:
            summary = demo_seed(
                contacts=options["contacts"],
                password=options["password"],
                stdout=self.stdout if options["verbosity"] > 0 else None,
                progress=progress,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        finally:
            for bar in bars:
                bar.close()
        self._print_summary(summary, options["base_url"].rstrip("/"))

    def _print_summary(self, summary: DemoSummary, base_url: str) -> None:
        rows = [(_("user"), _("password"), _("role"), _("teams"))]
        rows += [
            (
                credential.username,
                credential.password,
                credential.role,
                _teams_label(credential),
            )
            for credential in summary.credentials
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(_("Demo data ready. Log in with:")))
        for index, row in enumerate(rows):
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
            self.stdout.write(("  " + line).rstrip())
            if index == 0:
                self.stdout.write("  " + "  ".join("-" * width for width in widths))
        self.stdout.write("")
        self.stdout.write(_("Admin:    %(url)s") % {"url": f"{base_url}/admin/"})
        self.stdout.write(_("API docs: %(url)s") % {"url": f"{base_url}/api/docs/"})
        self.stdout.write(_("API:      %(url)s") % {"url": f"{base_url}/api/v1/"})
