from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from tqdm import tqdm

from consent.selectors import consent_ledger_size, consent_ledger_verify
from crm.errors import DomainError


class Command(BaseCommand):
    @property
    def help(self) -> str:  # a property: argparse needs a str, translated when asked for
        return _(
            "Recompute every contact's consent hash chain and evidence digests; report the "
            "first broken link and exit non-zero if there is one."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--contact", type=int, default=None, help=_("Check only this contact's chain (id).")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        contact_id = options["contact"]
        with tqdm(
            total=consent_ledger_size(contact_id),
            unit=" events",
            desc=_("Consent events"),
            disable=options["verbosity"] == 0,
        ) as bar:
            try:
                result = consent_ledger_verify(contact_id, progress=bar.update)
            except DomainError as exc:
                raise CommandError(exc.message) from exc
        if result.broken is not None:
            raise CommandError(
                _("Broken: contact %(contact)s, event %(event)s: %(reason)s")
                % {
                    "contact": result.broken.chain,
                    "event": result.broken.entry_id,
                    "reason": result.broken.reason,
                }
            )
        self.stdout.write(
            self.style.SUCCESS(
                _("OK: %(events)d events in %(chains)d chains")
                % {"events": result.events, "chains": result.chains}
            )
        )
