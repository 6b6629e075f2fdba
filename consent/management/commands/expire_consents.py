from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from consent.services import consents_expire_due, consents_request_reconfirmation


class Command(BaseCommand):
    @property
    def help(self) -> str:  # a property: argparse needs a str, translated when asked for
        return _(
            "Expire consents past their validity and ask for reconfirmation of consents that "
            "expire soon (what the periodic tasks do). Safe to run again."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        expired = consents_expire_due()
        self.stdout.write(_("Expired: %(count)d consents.") % {"count": expired})
        requested = consents_request_reconfirmation()
        self.stdout.write(_("Reconfirmation requested: %(count)d consents.") % {"count": requested})
