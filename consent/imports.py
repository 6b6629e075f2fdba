"""Consent in contact imports: refuse suppressed addresses, record consent with evidence.

Registered into crm's import extension points from ConsentConfig.ready(). A row that claims
consent without evidence (consent text version, collection date, source) is imported without
consent and reported as a warning: never recorded as consented.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Final

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from consent.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentText,
    Purpose,
    Suppression,
)
from consent.services.ledger import ConsentChange, Evidence, consent_record_many
from crm.hashing import address_hash
from crm.imports.columns import ImportRow, header_key
from crm.imports.lookups import any_of
from crm.models import Contact, ContactImport, Team

PURPOSE: Final = "consentpurpose"
CHANNELS: Final = "consentchannels"
TEXT_VERSION: Final = "consenttextversion"
COLLECTED_AT: Final = "consentdate"
SOURCE: Final = "consentsource"
IP_ADDRESS: Final = "consentip"
CONSENT_COLUMNS: Final = frozenset(
    {PURPOSE, CHANNELS, TEXT_VERSION, COLLECTED_AT, SOURCE, IP_ADDRESS}
)


def _cells(row: ImportRow) -> dict[str, str]:
    return {header_key(name): value.strip() for name, value in row.raw.items()}


def refuse_suppressed(team: Team, rows: list[ImportRow]) -> dict[int, str]:
    """Rows carrying an address on the suppression list are refused (one query per batch)."""
    hashes = {address: address_hash(address) for row in rows for _channel, address in row.points}
    if not hashes:
        return {}
    # One query with one array parameter for the whole batch (see crm.imports.lookups), not
    # consent.selectors.suppressed_hashes' queries of 1,000 parameters each.
    suppressed = set(
        Suppression.objects.filter(any_of("address_hash", set(hashes.values()))).values_list(
            "address_hash", flat=True
        )
    )
    if not suppressed:
        return {}
    refused = {}
    for row in rows:
        for _channel, address in row.points:
            if hashes[address] in suppressed:
                refused[row.line] = _(
                    "“%(address)s” is on the suppression list and must not be imported."
                ) % {"address": address}
                break
    return refused


def _collected_at(text: str) -> dt.datetime | None:
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            return None
        moment = dt.datetime.combine(day, dt.time(12, 0))
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, dt.UTC)
    return moment


class _Batch:
    """Lookups for one batch, so recording consent costs queries per batch, not per row."""

    def __init__(self, team: Team, contacts: list[Contact]) -> None:
        self.purposes = {p.key.lower(): p for p in Purpose.objects.filter(team=team)}
        self.texts = {
            (text.purpose_id, text.version, text.language): text
            for text in ConsentText.objects.filter(purpose__team=team)
        }
        self.recorded = set(
            ConsentEvent.objects.filter(
                contact__in=[c.pk for c in contacts], source=ConsentSource.IMPORT
            ).values_list("contact_id", "purpose_id", "channel", "occurred_at")
        )

    def text_for(self, purpose: Purpose, version: str, language: str) -> ConsentText | None:
        if not version.isdigit():
            return None
        number = int(version)
        exact = self.texts.get((purpose.pk, number, language))
        if exact is not None:
            return exact
        return next(
            (t for (p, v, _lang), t in self.texts.items() if p == purpose.pk and v == number), None
        )


class _ClaimIncomplete(Exception):
    """The row claims consent but its evidence does not hold up."""


@dataclass(frozen=True)
class _Claim:
    purpose: Purpose
    text: ConsentText
    collected_at: dt.datetime
    ip_address: str | None


def _claim(batch: _Batch, contact: Contact, cells: dict[str, str]) -> _Claim:
    purpose = batch.purposes.get(cells[PURPOSE].lower())
    if purpose is None:
        raise _ClaimIncomplete(_("unknown purpose “%(key)s”") % {"key": cells[PURPOSE]})
    missing = [
        label
        for label, key in (
            (_("consent text version"), TEXT_VERSION),
            (_("consent date"), COLLECTED_AT),
            (_("consent source"), SOURCE),
        )
        if not cells.get(key)
    ]
    if missing:
        raise _ClaimIncomplete(_("missing evidence: %(missing)s") % {"missing": ", ".join(missing)})
    text = batch.text_for(purpose, cells[TEXT_VERSION], contact.language)
    if text is None:
        raise _ClaimIncomplete(
            _("consent text version “%(v)s” does not exist") % {"v": cells[TEXT_VERSION]}
        )
    collected_at = _collected_at(cells[COLLECTED_AT])
    if collected_at is None:
        raise _ClaimIncomplete(_("“%(v)s” is not a date") % {"v": cells[COLLECTED_AT]})
    ip_text = cells.get(IP_ADDRESS, "")
    try:
        ip_address = str(ipaddress.ip_address(ip_text)) if ip_text else None
    except ValueError as exc:
        raise _ClaimIncomplete(_("“%(v)s” is not an IP address") % {"v": ip_text}) from exc
    return _Claim(purpose, text, collected_at, ip_address)


def record_import_consent(
    contact_import: ContactImport, accepted: list[tuple[Contact, ImportRow]]
) -> list[tuple[int, str]]:
    """Record `granted` (source import) for rows that claim consent with full evidence."""
    # All rows of a batch share the file's columns: without a purpose column no row claims
    # consent, and no row's cells need to be looked at.
    if not accepted or not any(
        header_key(label) == PURPOSE for label in accepted[0][1].columns.labels
    ):
        return []
    rows = [(contact, row, _cells(row)) for contact, row in accepted]
    claims = [(contact, row, cells) for contact, row, cells in rows if cells.get(PURPOSE)]
    if not claims:
        return []
    batch = _Batch(contact_import.team, [contact for contact, _row, _cells in claims])
    warnings: list[tuple[int, str]] = []
    changes: list[ConsentChange] = []
    lines: list[int] = []  # the import line of each change, for its warning
    for contact, row, cells in claims:
        try:
            claim = _claim(batch, contact, cells)
        except _ClaimIncomplete as problem:
            warnings.append(
                (row.line, _("Imported without consent: %(problem)s.") % {"problem": problem})
            )
            continue
        purpose = claim.purpose
        wanted = {c.strip().lower() for c in cells.get(CHANNELS, "").replace("|", ",").split(",")}
        wanted.discard("")
        channels = sorted(
            {channel for channel, _address in row.points}
            & set(purpose.allowed_channels)
            & (wanted or set(purpose.allowed_channels))
        )
        if not channels:
            warnings.append(
                (row.line, _("Imported without consent: no address on a channel of the purpose."))
            )
            continue
        channels = [
            channel
            for channel in channels
            # Re-importing the same file records nothing twice.
            if (contact.pk, purpose.pk, channel, claim.collected_at) not in batch.recorded
        ]
        evidence = Evidence(
            consent_text=claim.text,
            collected_at=claim.collected_at,
            ip_address=claim.ip_address,
            note=_("%(source)s (contact import #%(id)s)")
            % {"source": cells[SOURCE], "id": contact_import.pk},
        )
        lines.extend(row.line for _channel in channels)
        changes.extend(
            ConsentChange(
                contact_id=contact.pk,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.GRANTED,
                source=ConsentSource.IMPORT,
                evidence=evidence,
                occurred_at=claim.collected_at,
            )
            for channel in channels
        )
    # One batch write for the whole import batch; a row that breaks a rule only loses its own
    # consent (reported), the other rows' consent is recorded.
    outcome = consent_record_many(changes, skip_invalid=True)
    warnings.extend(
        (lines[index], _("Consent not recorded: %(why)s") % {"why": error.message})
        for index, error in outcome.refused
    )
    return sorted(warnings, key=lambda warning: warning[0])
