"""Contact import: CSV/XLSX files in, deduplicated contacts out, every rejected row reported.

The engine streams the file and works in batches (BATCH_SIZE rows). Each batch costs a fixed
number of queries whatever its size: one lookup per key kind (external ids, addresses), bulk
inserts and updates, history rows in bulk (simple-history's bulk utilities, because bulk_create
sends no signals), tag links and rejections in bulk, and one progress update. A batch is one
transaction that also moves `processed_rows`, so a crashed import keeps its finished batches
and a re-run resumes right after them. Rows are matched on external id, then e-mail, then
phone number; updates only fill in what a row provides, so importing a file twice changes
nothing the second time.

Public services: contact_import_create, contact_import_start, contact_import_preview,
contact_import_run, import_file and write_report. Callers import them from here.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import io
import itertools
import logging
import re
import tempfile
import zipfile
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core.files import File
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from crm import selectors
from crm.addresses import AddressInvalid, normalise_address
from crm.errors import DomainError, PermissionRefused
from crm.exports import csv_safe
from crm.hashing import address_hash
from crm.models import (
    IMPORT_TRANSITIONS,
    Channel,
    Contact,
    ContactImport,
    ContactPoint,
    ImportRejection,
    ImportStatus,
    Language,
    Salutation,
    Tag,
    Team,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

BATCH_SIZE: Final = 2000
PREVIEW_ROWS: Final = 20
ALLOWED_EXTENSIONS: Final = (".csv", ".xlsx")
IMPORT_PERMISSION: Final = "crm.add_contactimport"

CREATED: Final = "created"
UPDATED: Final = "updated"
UNCHANGED: Final = "unchanged"
REJECTED: Final = "rejected"


class ImportFileInvalid(DomainError):
    code = "import_file_invalid"


class ImportTransitionRefused(DomainError):
    code = "transition_refused"


class RowInvalid(DomainError):
    code = "row_invalid"


# ---------------------------------------------------------------------------------------------
# Columns: header names (case-insensitive, German aliases) -> contact fields.

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


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-_.]+", "", name.strip().lower())


def _compact(value: str) -> str:
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
        key = _header_key(name)
        if name.lower().startswith(ATTRIBUTE_PREFIX) and name[len(ATTRIBUTE_PREFIX) :].strip():
            attributes[index] = name[len(ATTRIBUTE_PREFIX) :].strip()
        elif key in _ALIASES and _ALIASES[key] not in taken:
            fields[index] = _ALIASES[key]
            taken.add(_ALIASES[key])
        elif key not in HOOK_COLUMNS:
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


# ---------------------------------------------------------------------------------------------
# Rows: one line of the file, validated and normalised without touching the database.


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
        try:
            address = normalise_address(ADDRESS_CHANNELS[name], value)
        except AddressInvalid as exc:
            raise _refuse(label, exc.message) from exc
        row.points.append((ADDRESS_CHANNELS[name], address))
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


# ---------------------------------------------------------------------------------------------
# Files: CSV (delimiter and encoding detected) or XLSX, streamed row by row.


@dataclass
class _Source:
    format: str
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    delimiter: str = ","
    encoding: str = ""
    total_rows: int | None = None


def _extension(name: str) -> str:
    return Path(name).suffix.lower()


def _scan_csv(binary: IO[bytes], *, full: bool) -> tuple[str, int | None]:
    """Pick the encoding and, with `full`, count lines (the progress total) in one pass.

    UTF-8 (a BOM is dropped) unless a byte sequence is not UTF-8: then Windows-1252, which is
    what German Excel writes.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    lines = 0
    last = b""
    while chunk := binary.read(1 << 20):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
        if not full:
            break
    if full and utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    if last and last != b"\n":
        lines += 1
    binary.seek(0)
    return ("utf-8-sig" if utf8 else "cp1252"), (lines if full else None)


def _pick_delimiter(line: str) -> str:
    """German Excel exports use ';', most others ','; the header line decides."""
    counts = {delimiter: line.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    previous = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileInvalid(
                _("Line %(line)s cannot be read: %(error)s")
                % {"line": reader.line_num, "error": exc}
            ) from exc
        line = previous + 1
        previous = reader.line_num
        if any(cell.strip() for cell in cells):
            yield line, cells


@contextmanager
def _open_csv(binary: IO[bytes], *, count: bool) -> Iterator[_Source]:
    encoding, lines = _scan_csv(binary, full=count)
    errors = "strict" if encoding.startswith("utf-8") else "replace"
    text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline="")
    try:
        first = text.readline()
        text.seek(0)
        reader_kwargs: dict[str, Any] = {}
        # Excel's "sep=;" hint line names the delimiter and precedes the header.
        hint = re.fullmatch(r"sep=(.)\s*", first.lstrip("\ufeff"))
        if hint:
            reader_kwargs["delimiter"] = hint.group(1)
        else:
            reader_kwargs["delimiter"] = _pick_delimiter(first)
        reader = csv.reader(text, **reader_kwargs)
        if hint:
            next(reader, None)
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            raise ImportFileInvalid(_("The file is empty."), field="file")
        total = None if lines is None else max(0, lines - reader.line_num)
        yield _Source(
            format="csv",
            header=header,
            rows=_csv_rows(reader),
            delimiter=reader_kwargs["delimiter"],
            encoding=encoding,
            total_rows=total,
        )
    finally:
        text.detach()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


@contextmanager
def _open_xlsx(binary: IO[bytes], *, count: bool) -> Iterator[_Source]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(binary, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ImportFileInvalid(
            _("The file is not a readable XLSX workbook."), field="file"
        ) from exc
    try:
        sheet = workbook.worksheets[0]
        values = sheet.iter_rows(values_only=True)
        header = [_cell_text(value) for value in next(values, ())]
        if not any(cell.strip() for cell in header):
            raise ImportFileInvalid(_("The file is empty."), field="file")

        def rows() -> Iterator[tuple[int, list[str]]]:
            for line, row in enumerate(values, start=2):
                cells = [_cell_text(value) for value in row]
                if any(cell.strip() for cell in cells):
                    yield line, cells

        total = None
        if count:
            # The sheet's stored dimension is cheap; a sheet without one is counted by reading.
            max_row = sheet.max_row
            if max_row is None:
                max_row = sum(1 for _row in sheet.iter_rows(values_only=True))
            total = max(0, max_row - 1)
        yield _Source(format="xlsx", header=header, rows=rows(), total_rows=total)
    finally:
        workbook.close()


@contextmanager
def _open_source(binary: IO[bytes], name: str, *, count: bool = False) -> Iterator[_Source]:
    extension = _extension(name)
    opener = _open_xlsx if extension == ".xlsx" else _open_csv
    with opener(binary, count=count) as source:
        yield source


def _binary(file: Any) -> IO[bytes]:
    """The raw binary file under Django's File wrappers (TextIOWrapper needs the real thing)."""
    inner = file
    while isinstance(inner, File) and getattr(inner, "file", None) is not None:
        inner = inner.file
    return inner


@contextmanager
def _open_import_file(contact_import: ContactImport, *, count: bool) -> Iterator[_Source]:
    with contact_import.source_file.open("rb") as stored:
        binary = _binary(stored)
        binary.seek(0)
        name = contact_import.original_name or contact_import.source_file.name
        with _open_source(binary, name, count=count) as source:
            yield source


# ---------------------------------------------------------------------------------------------
# Planning: match rows to contacts (reads only), then apply the plan in bulk (writes).


@dataclass
class _Target:
    """A contact as the batch will leave it: loaded or new, plus what rows add to it."""

    contact: Contact
    is_new: bool
    first_line: int
    points: set[tuple[str, str]] = field(default_factory=set)
    tag_names: set[str] = field(default_factory=set)
    changed_fields: set[str] = field(default_factory=set)
    new_points: list[tuple[str, str]] = field(default_factory=list)
    new_tags: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.contact.pk:
            return _("contact #%(id)s") % {"id": self.contact.pk}
        return _("the contact of line %(line)s") % {"line": self.first_line}


@dataclass
class RowResult:
    """What happened (or, in a preview, would happen) to one row."""

    line: int
    outcome: str
    reason: str = ""
    changes: list[str] = field(default_factory=list)
    contact_id: int | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass
class _Plan:
    results: list[tuple[ImportRow, RowResult, _Target | None]] = field(default_factory=list)
    created: list[_Target] = field(default_factory=list)
    updated: list[_Target] = field(default_factory=list)
    touched: list[_Target] = field(default_factory=list)
    new_tags: dict[str, str] = field(default_factory=dict)


class _TeamTags:
    """The team's tags by lower-case name, loaded once per run (tags are few; contacts many)."""

    def __init__(self, team: Team) -> None:
        self.team = team
        self.by_name: dict[str, Tag] = {}
        self.by_id: dict[int, str] = {}
        for tag in Tag.objects.filter(team=team).order_by("id"):
            self._add(tag)

    def _add(self, tag: Tag) -> None:
        self.by_name.setdefault(tag.name.lower(), tag)
        self.by_id[tag.pk] = tag.name.lower()

    def create_missing(self, names: dict[str, str]) -> None:
        missing = {key: name for key, name in names.items() if key not in self.by_name}
        if not missing:
            return
        Tag.objects.bulk_create(
            [Tag(team=self.team, name=name) for name in missing.values()], ignore_conflicts=True
        )
        for tag in Tag.objects.filter(team=self.team, name__in=list(missing.values())):
            self._add(tag)


def _diff(target: _Target, row: ImportRow) -> list[str]:
    """The changes `row` makes to `target`: only cells the row fills, never a blanking."""
    contact = target.contact
    changes = [name for name, value in row.fields.items() if getattr(contact, name) != value]
    changes += [
        f"{ATTRIBUTE_PREFIX}{key}"
        for key, value in row.attributes.items()
        if contact.attributes.get(key) != value
    ]
    changes += [
        f"+{channel}:{address}"
        for channel, address in row.points
        if (channel, address) not in target.points
    ]
    changes += [f"+tag:{tag}" for tag in row.tags if tag.lower() not in target.tag_names]
    return changes


def _apply_row(target: _Target, row: ImportRow) -> None:
    contact = target.contact
    for name, value in row.fields.items():
        if getattr(contact, name) != value:
            setattr(contact, name, value)
            target.changed_fields.add(name)
    changed_attributes = {
        key: value for key, value in row.attributes.items() if contact.attributes.get(key) != value
    }
    if changed_attributes:
        contact.attributes = {**contact.attributes, **changed_attributes}
        target.changed_fields.add("attributes")
    for point in row.points:
        if point not in target.points:
            target.points.add(point)
            target.new_points.append(point)
    for tag in row.tags:
        if tag.lower() not in target.tag_names:
            target.tag_names.add(tag.lower())
            target.new_tags.append(tag)


class _Matcher:
    """Finds, for each row, the contact it means: in the team (one query per key kind for the
    whole batch) or earlier in the same batch, so duplicates within a file merge."""

    def __init__(self, team: Team, tags: _TeamTags, rows: list[ImportRow], *, lock: bool) -> None:
        self.team = team
        external_ids = {row.fields["external_id"] for row in rows if "external_id" in row.fields}
        emails = {a for row in rows for c, a in row.points if c == Channel.EMAIL}
        phones = {a for row in rows for c, a in row.points if c in PHONE_CHANNELS}
        owner_ids: set[int] = set()
        if external_ids:
            owner_ids |= set(
                Contact.objects.filter(team=team, external_id__in=external_ids).values_list(
                    "id", flat=True
                )
            )
        address_q = Q()
        if emails:
            address_q |= Q(channel=Channel.EMAIL, address__in=emails)
        if phones:
            address_q |= Q(channel__in=PHONE_CHANNELS, address__in=phones)
        if address_q:
            owner_ids |= set(
                ContactPoint.objects.filter(address_q, team=team).values_list(
                    "contact_id", flat=True
                )
            )
        self.by_external_id: dict[str, _Target] = {}
        self.by_address: dict[tuple[str, str], _Target] = {}
        if not owner_ids:
            return
        contacts = Contact.objects.filter(id__in=owner_ids).order_by("id")
        if lock:
            # Rows are compared with the state they will overwrite: no edit may slip between.
            contacts = contacts.select_for_update()
        targets = {c.pk: _Target(contact=c, is_new=False, first_line=0) for c in contacts}
        for contact_id, channel, address in ContactPoint.objects.filter(
            contact_id__in=owner_ids
        ).values_list("contact_id", "channel", "address"):
            targets[contact_id].points.add((channel, address))
        through = Contact.tags.through
        for contact_id, tag_id in through.objects.filter(contact_id__in=owner_ids).values_list(
            "contact_id", "tag_id"
        ):
            targets[contact_id].tag_names.add(tags.by_id.get(tag_id, f"#{tag_id}"))
        for target in targets.values():
            self.register(target)

    def register(self, target: _Target) -> None:
        if target.contact.external_id:
            self.by_external_id[target.contact.external_id] = target
        for point in target.points:
            self.by_address[point] = target

    def matches(self, row: ImportRow) -> list[tuple[str, _Target]]:
        """(key, contact) pairs in priority order: external id, e-mail, phone."""
        found: list[tuple[str, _Target]] = []
        external_id = row.fields.get("external_id")
        if external_id and external_id in self.by_external_id:
            found.append(
                (_("external id “%(id)s”") % {"id": external_id}, self.by_external_id[external_id])
            )
        for channel, address in sorted(row.points, key=lambda p: p[0] != Channel.EMAIL):
            candidates = [(channel, address)]
            if channel in PHONE_CHANNELS:
                candidates = [(c, address) for c in PHONE_CHANNELS]
            for candidate in candidates:
                if candidate in self.by_address:
                    found.append((f"“{address}”", self.by_address[candidate]))
                    break
        return found


def _conflict(row: ImportRow, matches: list[tuple[str, _Target]]) -> str:
    """Why the row cannot be applied to the one contact it matched, or to several; '' if fine."""
    distinct = {id(target) for _key, target in matches}
    if len(distinct) > 1:
        parts = ", ".join(f"{key} → {target.describe()}" for key, target in matches)
        return _("Conflict: the row points to different contacts (%(parts)s).") % {"parts": parts}
    if not matches:
        return ""
    key, target = matches[0]
    external_id = row.fields.get("external_id")
    theirs = target.contact.external_id
    if external_id and theirs and theirs != external_id:
        return _(
            "Conflict: %(key)s belongs to %(contact)s, whose external id is “%(theirs)s”, "
            "not “%(ours)s”."
        ) % {"key": key, "contact": target.describe(), "theirs": theirs, "ours": external_id}
    return ""


def _plan_batch(team: Team, tags: _TeamTags, rows: list[ImportRow], *, lock: bool) -> _Plan:
    """Decide each row's outcome and gather the bulk writes; reads only, writes nothing."""
    plan = _Plan()
    matcher = _Matcher(team, tags, [row for row in rows if not row.error], lock=lock)
    seen: set[int] = set()
    for row in rows:
        result = RowResult(line=row.line, outcome=REJECTED, reason=row.error)
        target: _Target | None = None
        if not row.error:
            matches = matcher.matches(row)
            result.reason = _conflict(row, matches)
            if matches and not result.reason:
                target = matches[0][1]
                result.changes = _diff(target, row)
                contact = target.contact
                if result.changes and not target.is_new and contact.erased_at is not None:
                    result.reason = _(
                        "%(contact)s was erased on request; imports do not change it."
                    ) % {"contact": target.describe()}
                elif result.changes and not target.is_new and contact.is_restricted:
                    result.reason = _(
                        "Processing of %(contact)s is restricted; imports do not change it."
                    ) % {"contact": target.describe()}
                else:
                    result.outcome = UPDATED if result.changes else UNCHANGED
            elif not result.reason:
                contact = Contact(
                    team=team,
                    language=team.default_language,
                    time_zone=team.default_time_zone,
                )
                target = _Target(contact=contact, is_new=True, first_line=row.line)
                result.outcome = CREATED
                plan.created.append(target)
            if result.reason:
                target = None
            elif target is not None:
                _apply_row(target, row)
                matcher.register(target)
                if not target.is_new and id(target) not in seen:
                    seen.add(id(target))
                    plan.touched.append(target)
                for tag in target.new_tags:
                    if tag.lower() not in tags.by_name:
                        plan.new_tags.setdefault(tag.lower(), tag)
        result.outcome = REJECTED if result.reason else result.outcome
        result.contact_id = target.contact.pk if target else None
        plan.results.append((row, result, target))
    plan.updated = [t for t in plan.touched if t.changed_fields]
    return plan


def _apply_plan(
    contact_import: ContactImport, tags: _TeamTags, plan: _Plan, actor: AbstractBaseUser | None
) -> None:
    """Write a batch in bulk: a fixed number of queries, whatever the batch size."""
    reason = _("contact import #%(id)s") % {"id": contact_import.pk}
    now = timezone.now()
    tags.create_missing(plan.new_tags)
    if plan.created:
        bulk_create_with_history(
            [target.contact for target in plan.created],
            Contact,
            default_user=actor,
            default_change_reason=reason,
            default_date=now,
        )
    if plan.updated:
        fields = sorted({name for target in plan.updated for name in target.changed_fields})
        for target in plan.updated:
            target.contact.updated_at = now
        bulk_update_with_history(
            [target.contact for target in plan.updated],
            Contact,
            [*fields, "updated_at"],
            default_user=actor,
            default_change_reason=reason,
            default_date=now,
        )
    points: list[ContactPoint] = []
    links = []
    through = Contact.tags.through
    for target in [*plan.created, *plan.touched]:
        contact = target.contact
        primary_channels = {c for c, _a in target.points - set(target.new_points)}
        for channel, address in target.new_points:
            points.append(
                ContactPoint(
                    contact_id=contact.pk,
                    team_id=contact.team_id,
                    channel=channel,
                    address=address,
                    address_hash=address_hash(address),
                    is_primary=channel not in primary_channels,
                )
            )
            primary_channels.add(channel)
        links += [
            through(contact_id=contact.pk, tag_id=tags.by_name[tag.lower()].pk)
            for tag in target.new_tags
        ]
    if points:
        bulk_create_with_history(
            points, ContactPoint, default_user=actor, default_change_reason=reason, default_date=now
        )
    if links:
        through.objects.bulk_create(links, ignore_conflicts=True)
    rejections = [
        ImportRejection(
            contact_import=contact_import,
            line_number=row.line,
            reason=result.reason[:500],
            raw=row.raw,
        )
        for row, result, _target in plan.results
        if result.outcome == REJECTED
    ]
    if rejections:
        ImportRejection.objects.bulk_create(rejections)


# Extension point for per-row extras, e.g. consent evidence columns (a later issue). Each hook
# is called once per written batch, inside the batch's transaction (an exception rolls the
# batch back and fails the import), with the import and the accepted rows paired with their
# contacts, whether created, updated or unchanged. A hook reads its own cells from `row.raw`
# and lists those header names (compared lower-case, without spaces, '-', '_' or '.') in
# HOOK_COLUMNS so they are not reported as ignored. Apps to the right of crm append to both
# from their AppConfig.ready(); crm itself registers nothing.
RowHook = Callable[[ContactImport, list[tuple[Contact, ImportRow]]], None]
ROW_HOOKS: list[RowHook] = []
HOOK_COLUMNS: set[str] = set()


def _run_hooks(contact_import: ContactImport, plan: _Plan) -> None:
    if not ROW_HOOKS:
        return
    accepted = [(target.contact, row) for row, _result, target in plan.results if target]
    for hook in ROW_HOOKS:
        hook(contact_import, accepted)


# ---------------------------------------------------------------------------------------------
# Services.


def _ensure_may_import(actor: AbstractBaseUser | None, team: Team | int) -> None:
    if actor is not None and not selectors.user_may_write(actor, IMPORT_PERMISSION, team):
        raise PermissionRefused(_("You may not import contacts into this team."))


def _transition(contact_import: ContactImport, to: str, **fields: Any) -> ContactImport:
    """Move the import's status along IMPORT_TRANSITIONS, under a row lock."""
    with transaction.atomic():
        locked = ContactImport.objects.select_for_update().get(pk=contact_import.pk)
        if to not in IMPORT_TRANSITIONS[locked.status]:
            raise ImportTransitionRefused(
                _("An import that is %(status)s cannot become %(to)s.")
                % {"status": locked.get_status_display(), "to": ImportStatus(to).label}
            )
        locked.status = to
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=["status", *fields, "updated_at"])
    contact_import.status = locked.status
    contact_import.updated_at = locked.updated_at
    for name, value in fields.items():
        setattr(contact_import, name, value)
    return contact_import


@transaction.atomic
def contact_import_create(
    *,
    team: Team,
    uploaded_file: File,
    actor: AbstractBaseUser | None,
    start: bool = False,
    size_limit: bool = True,
) -> ContactImport:
    """Store an uploaded CSV/XLSX file as a new import after checking role, size, type and
    header; nothing is stored when any check fails. `start=True` also queues it.

    `size_limit=False` is for files an operator imports from disk (IMPORT_MAX_UPLOAD_MB is
    about uploads through admin and API).
    """
    _ensure_may_import(actor, team)
    name = Path(uploaded_file.name or "").name
    if _extension(name) not in ALLOWED_EXTENSIONS:
        raise ImportFileInvalid(
            _("Only .csv and .xlsx files can be imported, not “%(name)s”.") % {"name": name},
            field="file",
        )
    limit_mb = settings.IMPORT_MAX_UPLOAD_MB
    if size_limit and uploaded_file.size > limit_mb * 1024 * 1024:
        raise ImportFileInvalid(
            _("The file is larger than %(limit)s MB.") % {"limit": limit_mb}, field="file"
        )
    if not uploaded_file.size:
        raise ImportFileInvalid(_("The file is empty."), field="file")
    binary = _binary(uploaded_file)
    binary.seek(0)
    with _open_source(binary, name) as source:
        columns = resolve_columns(source.header)
    binary.seek(0)
    contact_import = ContactImport(
        team=team,
        original_name=name[:255],
        created_by=actor,
        columns=columns.labels,
        unknown_columns=columns.unknown,
    )
    contact_import.source_file.save(name, uploaded_file, save=False)
    contact_import.save()
    if start:
        contact_import_start(contact_import=contact_import, actor=actor)
    return contact_import


def contact_import_start(
    *, contact_import: ContactImport, actor: AbstractBaseUser | None
) -> ContactImport:
    """Queue an uploaded import; the Celery task runs it after commit (inline when eager)."""
    from crm.tasks import run_contact_import as run_contact_import_task

    _ensure_may_import(actor, contact_import.team_id)
    with transaction.atomic():
        _transition(contact_import, ImportStatus.QUEUED)
        import_id = contact_import.pk
        transaction.on_commit(lambda: run_contact_import_task.delay(contact_import_id=import_id))
    return contact_import


@dataclass
class ImportPreview:
    rows: list[RowResult]
    columns: list[str]
    unknown_columns: list[str]
    format: str
    delimiter: str
    encoding: str


def contact_import_preview(
    *, contact_import: ContactImport, limit: int = PREVIEW_ROWS
) -> ImportPreview:
    """A dry run over the first `limit` rows: what each would do, and why rows are refused.

    Runs the same matching as the import itself but writes nothing.
    """
    with _open_import_file(contact_import, count=False) as source:
        columns = resolve_columns(source.header)
        rows = [
            parse_row(line, cells, columns) for line, cells in itertools.islice(source.rows, limit)
        ]
        fmt, delimiter, encoding = source.format, source.delimiter, source.encoding
    plan = _plan_batch(contact_import.team, _TeamTags(contact_import.team), rows, lock=False)
    results = []
    for row, result, _target in plan.results:
        result.raw = row.raw
        results.append(result)
    return ImportPreview(
        rows=results,
        columns=columns.labels,
        unknown_columns=columns.unknown,
        format=fmt,
        delimiter=delimiter,
        encoding=encoding,
    )


class _Superseded(Exception):
    """Another run of the same import moved on: this one stops without touching anything."""


def _run_batches(
    contact_import: ContactImport,
    source: _Source,
    columns: ColumnMap,
    *,
    progress: Callable[[ContactImport], None] | None,
    batch_size: int,
) -> None:
    team = contact_import.team
    actor = contact_import.created_by
    tags = _TeamTags(team)
    # A re-run resumes after the rows whose batches were committed.
    rows = itertools.islice(source.rows, contact_import.processed_rows, None)
    while chunk := list(itertools.islice(rows, batch_size)):
        parsed = [parse_row(line, cells, columns) for line, cells in chunk]
        with transaction.atomic():
            locked = ContactImport.objects.select_for_update().get(pk=contact_import.pk)
            if (
                locked.status != ImportStatus.RUNNING
                or locked.processed_rows != contact_import.processed_rows
            ):
                raise _Superseded
            plan = _plan_batch(team, tags, parsed, lock=True)
            _apply_plan(locked, tags, plan, actor)
            _run_hooks(locked, plan)
            outcomes = [result.outcome for _row, result, _target in plan.results]
            locked.processed_rows += len(parsed)
            locked.created_count += outcomes.count(CREATED)
            locked.updated_count += outcomes.count(UPDATED)
            locked.unchanged_count += outcomes.count(UNCHANGED)
            locked.rejected_count += outcomes.count(REJECTED)
            locked.save(update_fields=[*_COUNTERS, "updated_at"])
        for name in _COUNTERS:
            setattr(contact_import, name, getattr(locked, name))
        if progress is not None:
            progress(contact_import)


_COUNTERS: Final = (
    "processed_rows",
    "created_count",
    "updated_count",
    "unchanged_count",
    "rejected_count",
)


def contact_import_run(
    *,
    contact_import_id: int,
    progress: Callable[[ContactImport], None] | None = None,
    batch_size: int | None = None,
) -> ContactImport:
    """Run (or resume) an import to the end. Idempotent: a completed import is left alone,
    a failed or interrupted one continues after its last committed batch."""
    contact_import = ContactImport.objects.select_related("team", "created_by").get(
        pk=contact_import_id
    )
    if contact_import.status == ImportStatus.COMPLETED:
        return contact_import
    _transition(
        contact_import,
        ImportStatus.RUNNING,
        error="",
        started_at=contact_import.started_at or timezone.now(),
    )
    try:
        with _open_import_file(contact_import, count=True) as source:
            columns = resolve_columns(source.header)
            if contact_import.total_rows is None:
                contact_import.total_rows = source.total_rows
                ContactImport.objects.filter(pk=contact_import.pk).update(
                    total_rows=source.total_rows,
                    columns=columns.labels,
                    unknown_columns=columns.unknown,
                )
            if progress is not None:
                progress(contact_import)
            _run_batches(
                contact_import,
                source,
                columns,
                progress=progress,
                batch_size=batch_size or BATCH_SIZE,
            )
            delimiter = source.delimiter
        _finish(contact_import, delimiter=delimiter)
    except _Superseded:
        logger.warning("Import %s is being run elsewhere; this run stops.", contact_import.pk)
        contact_import.refresh_from_db()
    except Exception as exc:
        logger.exception("Import %s failed", contact_import.pk)
        message = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
        _transition(
            contact_import,
            ImportStatus.FAILED,
            error=_("The import stopped after %(rows)s rows: %(error)s")
            % {"rows": contact_import.processed_rows, "error": message},
        )
        if isinstance(exc, OperationalError | InterfaceError):
            raise  # The database went away: the task retries and resumes.
    return contact_import


def _finish(contact_import: ContactImport, *, delimiter: str) -> None:
    if contact_import.rejected_count:
        with tempfile.TemporaryFile() as report:
            write_report(contact_import, report, delimiter=delimiter)
            report.seek(0)
            contact_import.report_file.save(
                f"import-{contact_import.pk}-rejected-rows.csv", File(report), save=False
            )
    # Blank lines and multi-line cells make the counted total an estimate; the end is exact.
    _transition(
        contact_import,
        ImportStatus.COMPLETED,
        finished_at=timezone.now(),
        total_rows=contact_import.processed_rows,
        report_file=contact_import.report_file.name or "",
    )


def write_report(contact_import: ContactImport, out: IO[bytes], *, delimiter: str = ",") -> None:
    """The rejected-rows report as CSV: line number, reason, then the original row.

    Cells are passed through csv_safe so that a spreadsheet never runs a cell as a formula.
    """
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
    try:
        writer = csv.writer(text, delimiter=delimiter)
        columns = list(contact_import.columns)
        writer.writerow([_("line"), _("reason"), *(csv_safe(c) for c in columns)])
        rejections = contact_import.rejections.order_by("line_number", "id")
        for rejection in rejections.iterator(chunk_size=BATCH_SIZE):
            writer.writerow(
                [
                    rejection.line_number,
                    csv_safe(rejection.reason),
                    *(csv_safe(rejection.raw.get(column, "")) for column in columns),
                ]
            )
        text.flush()
    finally:
        text.detach()


def import_file(
    *,
    path: str | Path,
    team: Team,
    actor: AbstractBaseUser | None,
    progress: Callable[[ContactImport], None] | None = None,
    batch_size: int | None = None,
) -> ContactImport:
    """Import a file from disk in this process (the management command): stored and recorded
    like an upload, so it shows in admin with its rejected rows and report."""
    path = Path(path)
    with path.open("rb") as handle:
        contact_import = contact_import_create(
            team=team, uploaded_file=File(handle, name=path.name), actor=actor, size_limit=False
        )
    _transition(contact_import, ImportStatus.QUEUED)
    return contact_import_run(
        contact_import_id=contact_import.pk, progress=progress, batch_size=batch_size
    )
