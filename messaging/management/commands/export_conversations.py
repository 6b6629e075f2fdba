"""`manage.py export_conversations --out DIR [--team T]... [--contact ID] [--since D] [--until D]`.

Writes the auditor export (JSON Lines, CSV, manifest with SHA-256 and chain heads) through
messaging.services.exports and records it. Runs as the system unless `--user NAME` names a user
whose export right and team scope then apply.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _
from tqdm import tqdm

from crm.errors import DomainError
from crm.models import Team
from messaging.services.exports import conversations_export


def operator_label() -> str:
    """Who ran the command, for the record when no --user is given."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        name = "unknown"
    return f"manage.py:{name}"


def parse_moment(value: str, option: str) -> dt.datetime:
    """YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][offset]; without an offset in DISPLAY_TIME_ZONE."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(
                _("%(option)s: “%(value)s” is not YYYY-MM-DD or YYYY-MM-DDTHH:MM.")
                % {"option": option, "value": value}
            )
        moment = dt.datetime.combine(day, dt.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(settings.DISPLAY_TIME_ZONE))
    return moment


class Command(BaseCommand):
    help = (
        "Export conversations for an audit: messages and every event of their hash chains as "
        "JSON Lines and CSV, plus a manifest with each file's SHA-256 and the chain heads. "
        "Check the result with `manage.py verify_export DIR`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="New or empty directory to write to.")
        parser.add_argument(
            "--team",
            action="append",
            default=None,
            help="Slug or id of a team to export (repeatable); default: every team in scope.",
        )
        parser.add_argument("--contact", type=int, help="Only this contact's conversations (id).")
        parser.add_argument(
            "--since",
            help="Start of the period (inclusive), YYYY-MM-DD[THH:MM]; without an offset in "
            "DISPLAY_TIME_ZONE.",
        )
        parser.add_argument("--until", help="End of the period (exclusive), same format.")
        parser.add_argument(
            "--user",
            help="Username whose export right and teams apply (recorded as exporter); "
            "default: the system, recorded as manage.py:<operating-system user>.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = self._user(options["user"]) if options["user"] else None
        team_ids = [self._team(value) for value in options["team"]] if options["team"] else None
        since = parse_moment(options["since"], "--since") if options["since"] else None
        until = parse_moment(options["until"], "--until") if options["until"] else None
        out_dir = Path(options["out"])
        with tqdm(
            unit=" rows",
            desc=_("Exporting"),
            file=sys.stderr,
            disable=options["verbosity"] == 0,
            dynamic_ncols=True,
        ) as bar:
            try:
                export = conversations_export(
                    actor=actor,
                    out_dir=out_dir,
                    team_ids=team_ids,
                    contact_id=options["contact"],
                    since=since,
                    until=until,
                    progress=bar.update,
                    label=operator_label(),
                )
            except DomainError as error:
                raise CommandError(error.message) from error
        self.stdout.write(
            self.style.SUCCESS(
                _(
                    "Exported %(messages)d messages and %(events)d events of %(conversations)d "
                    "conversations to %(path)s (export #%(id)s)."
                )
                % {
                    "messages": export.message_count,
                    "events": export.event_count,
                    "conversations": export.conversation_count,
                    "path": export.location,
                    "id": export.pk,
                }
            )
        )
        self.stdout.write(_("manifest.json SHA-256: %(sha)s") % {"sha": export.manifest_sha256})

    def _user(self, username: str) -> Any:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(_("No active user “%(name)s”.") % {"name": username})
        return user

    def _team(self, value: str) -> int:
        team = Team.objects.filter(slug=value).first()
        if team is None and value.isdigit():
            team = Team.objects.filter(pk=int(value)).first()
        if team is None:
            raise CommandError(_("No team with the slug or id “%(team)s”.") % {"team": value})
        return team.pk
