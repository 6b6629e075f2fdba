"""Columns and rows: header names (case-insensitive, German aliases) to contact fields, and
each row validated and normalised without a single query."""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Final

from django.utils.translation import gettext as _

from crm.addresses import AddressInvalid
from crm.imports import hooks
from crm.imports.emails import normalise_import_email
from crm.imports.errors import ImportFileInvalid, RowInvalid
from crm.imports.phones import normalise_import_phone
from crm.models import Channel, Language, Salutation

FIELD_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "external_id": (
        "externalid",
        "extid",
        "externeid",
        "externeid",
        "kundennummer",
        "kundennr",
        "customerid",
        "crmid",
        "erpid",
    ),
    "salutation": ("salutation", "anrede"),
    "first_name": ("firstname", "first", "givenname", "vorname"),
    "last_name": ("lastname", "last", "surname", "familyname", "nachname", "familienname"),
    "email": ("email", "mail", "emailaddress", "emailadresse"),
    "phone": (
        "phone",
        "phonenumber",
        "telephone",
        "tel",
        "mobile",
        "mobilephone",
        "cell",
        "sms",
        "telefon",
        "telefonnummer",
        "mobil",
        "mobilnummer",
        "mobiltelefon",
        "handy",
    ),
    "whatsapp": ("whatsapp", "whatsappnumber", "whatsappnummer"),
    "language": ("language", "lang", "sprache"),
    "time_zone": ("timezone", "tz", "zeitzone"),
    "organisation": (
        "organisation",
        "organization",
        "company",
        "firma",
        "unternehmen",
        "institution",
    ),
    "profession": ("profession", "occupation", "beruf", "fachrichtung"),
    "preferred_channel": ("preferredchannel", "channel", "bevorzugterkanal", "kanal"),
    "tags": ("tags", "tag", "labels", "schlagworte"),
}
ATTRIBUTE_PREFIX: Final = "attr_"
# A file must name at least one of these, or every row would be rejected.
IDENTITY_FIELDS: Final = frozenset(
    {"external_id", "first_name", "last_name", "email", "phone", "whatsapp"}
)
TEXT_LIMITS: Final = {
    "external_id": 120,
    "first_name": 100,
    "last_name": 100,
    "organisation": 200,
    "profession": 120,
}
TAG_MAX_LENGTH: Final = 60
ADDRESS_CHANNELS: Final = {
    "email": Channel.EMAIL,
    "phone": Channel.SMS,
    "whatsapp": Channel.WHATSAPP,
}
PHONE_CHANNELS: Final = (Channel.SMS, Channel.WHATSAPP)

_ALIASES: Final = {
    alias: name for name, aliases in FIELD_ALIASES.items() for alias in (*aliases, name)
}
_SALUTATIONS: Final = {
    "ms": Salutation.MS,
    "mrs": Salutation.MS,
    "miss": Salutation.MS,
    "frau": Salutation.MS,
    "fr": Salutation.MS,
    "mr": Salutation.MR,
    "herr": Salutation.MR,
    "hr": Salutation.MR,
    "mx": Salutation.MX,
    "divers": Salutation.MX,
    "dr": Salutation.DR,
    "prof": Salutation.PROF,
    "profdr": Salutation.PROF,
}
_LANGUAGES: Final = {
    **{code: code for code in Language.values},
    "deutsch": "de",
    "german": "de",
    "englisch": "en",
    "english": "en",
    "französisch": "fr",
    "franzoesisch": "fr",
    "french": "fr",
    "français": "fr",
    "italienisch": "it",
    "italian": "it",
    "italiano": "it",
    "spanisch": "es",
    "spanish": "es",
    "español": "es",
    "türkisch": "tr",
    "tuerkisch": "tr",
    "turkish": "tr",
    "türkçe": "tr",
    "polnisch": "pl",
    "polish": "pl",
    "polski": "pl",
}
_CHANNELS: Final = {
    "email": Channel.EMAIL,
    "mail": Channel.EMAIL,
    "sms": Channel.SMS,
    "whatsapp": Channel.WHATSAPP,
    "wa": Channel.WHATSAPP,
}
_TAG_SPLIT: Final = re.compile(r"[,|]")


@functools.lru_cache(maxsize=1024)
def header_key(name: str) -> str:
    """How header names compare: case, spaces, "-", "_" and "." do not matter.

    Cached: row hooks key every cell of every row by its header name.
    """
    return re.sub(r"[\s\-_.]+", "", name.strip().lower())


@functools.lru_cache(maxsize=1024)
def _compact(value: str) -> str:
    """Cached: salutations and channels repeat on every row."""
    return re.sub(r"[\s\-_.]+", "", value.lower())


@dataclass(frozen=True)
class ColumnMap:
    """Which column feeds which field. `labels` are the header names, made unique."""

    labels: list[str]
    fields: dict[int, str]
    attributes: dict[int, str]
    unknown: list[str]

    def raw(self, cells: list[str]) -> dict[str, str]:
        return {label: (cells[i] if i < len(cells) else "") for i, label in enumerate(self.labels)}


def resolve_columns(header: list[str]) -> ColumnMap:
    """Map header names to contact fields; refuse a header that names no identifying column."""
    labels: list[str] = []
    fields: dict[int, str] = {}
    attributes: dict[int, str] = {}
    unknown: list[str] = []
    taken: set[str] = set()
    for index, cell in enumerate(header):
        name = cell.strip().lstrip("\ufeff").strip()
        label = name or f"column {index + 1}"
        while label in labels:
            label = f"{label} ({index + 1})"
        labels.append(label)
        if not name:
            continue  # Trailing delimiters in spreadsheet exports: silently ignored.
        key = header_key(name)
        if name.lower().startswith(ATTRIBUTE_PREFIX) and name[len(ATTRIBUTE_PREFIX) :].strip():
            attributes[index] = name[len(ATTRIBUTE_PREFIX) :].strip()
        elif key in _ALIASES and _ALIASES[key] not in taken:
            fields[index] = _ALIASES[key]
            taken.add(_ALIASES[key])
        elif key not in hooks.HOOK_COLUMNS:
            unknown.append(name)
    if not taken & IDENTITY_FIELDS:
        raise ImportFileInvalid(
            _(
                "The header row names none of the columns an import needs: external_id, "
                "first_name, last_name, email, phone or whatsapp (or Vorname, Nachname, "
                "E-Mail, Telefon, Mobil)."
            ),
            field="file",
        )
    return ColumnMap(labels=labels, fields=fields, attributes=attributes, unknown=unknown)


@dataclass
class ImportRow:
    """One data row: where it is in the file, what it provides, or why it is refused."""

    line: int
    cells: list[str]
    columns: ColumnMap
    fields: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    points: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def raw(self) -> dict[str, str]:
        """The original cells by header name (what the report and row hooks see)."""
        return self.columns.raw(self.cells)


@functools.lru_cache(maxsize=512)
def _is_time_zone(value: str) -> bool:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _refuse(label: str, problem: str) -> RowInvalid:
    return RowInvalid(_("Column “%(column)s”: %(problem)s") % {"column": label, "problem": problem})


def _parse_value(row: ImportRow, name: str, label: str, value: str) -> None:
    if name in ADDRESS_CHANNELS:
        channel = ADDRESS_CHANNELS[name]
        try:
            if channel in PHONE_CHANNELS:
                address = normalise_import_phone(value)
            else:
                address = normalise_import_email(value)
        except AddressInvalid as exc:
            raise _refuse(label, exc.message) from exc
        row.points.append((channel, address))
    elif name in TEXT_LIMITS:
        if len(value) > TEXT_LIMITS[name]:
            raise _refuse(
                label,
                _("longer than %(limit)s characters.") % {"limit": TEXT_LIMITS[name]},
            )
        row.fields[name] = value
    elif name == "salutation":
        salutation = _SALUTATIONS.get(_compact(value))
        if salutation is None:
            raise _refuse(
                label,
                _("“%(value)s” is not a salutation (Frau, Herr, Divers, Dr., Prof.).")
                % {"value": value},
            )
        row.fields[name] = salutation.value
    elif name == "language":
        text = value.strip().lower()
        code = _LANGUAGES.get(text)
        if code is None and len(text) > 2 and text[2] in "-_":
            code = _LANGUAGES.get(text[:2])
        if code is None:
            raise _refuse(label, _("“%(value)s” is not a language.") % {"value": value})
        row.fields[name] = code
    elif name == "time_zone":
        if not _is_time_zone(value):
            raise _refuse(
                label, _("“%(value)s” is not a time zone such as Europe/Berlin.") % {"value": value}
            )
        row.fields[name] = value
    elif name == "preferred_channel":
        channel = _CHANNELS.get(_compact(value))
        if channel is None:
            raise _refuse(
                label,
                _("“%(value)s” is not a channel (email, sms, whatsapp).") % {"value": value},
            )
        row.fields[name] = channel.value
    elif name == "tags":
        for tag in _TAG_SPLIT.split(value):
            tag = tag.strip()
            if len(tag) > TAG_MAX_LENGTH:
                raise _refuse(
                    label,
                    _("the tag “%(tag)s” is longer than %(limit)s characters.")
                    % {"tag": tag, "limit": TAG_MAX_LENGTH},
                )
            if tag and tag.lower() not in {t.lower() for t in row.tags}:
                row.tags.append(tag)


def parse_row(line: int, cells: list[str], columns: ColumnMap) -> ImportRow:
    """Validate and normalise one row (no queries); a refused row carries `error`."""
    row = ImportRow(line=line, cells=cells, columns=columns)
    try:
        for index, name in columns.fields.items():
            value = cells[index].strip() if index < len(cells) else ""
            if value:
                _parse_value(row, name, columns.labels[index], value)
        for index, key in columns.attributes.items():
            value = cells[index].strip() if index < len(cells) else ""
            if value:
                row.attributes[key] = value
        if not (
            row.fields.get("first_name")
            or row.fields.get("last_name")
            or row.fields.get("external_id")
            or row.points
        ):
            raise RowInvalid(_("The row has no name, no external id and no address."))
    except RowInvalid as exc:
        row.error = exc.message
    return row
