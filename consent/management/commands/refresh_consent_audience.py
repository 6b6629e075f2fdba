from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from consent.services import consent_reachability_refresh_all


class Command(BaseCommand):
    @property
    def help(self) -> str:  # a property: argparse needs a str, translated when asked for
        return _(
            "Recompute the audience columns (team, reachable) of every current consent from "
            "contacts, addresses and the suppression list. Only needed after data was changed "
            "around the application (SQL by hand); safe to run again."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(done: int, total: int) -> None:
            self.stdout.write(_("%(done)d of %(total)d contacts") % {"done": done, "total": total})

        written = consent_reachability_refresh_all(on_progress=progress)
        self.stdout.write(_("Refreshed: %(count)d current consents.") % {"count": written})
