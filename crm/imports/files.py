"""Files: CSV (delimiter and encoding detected) or XLSX, streamed row by row, never loaded whole."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from django.core.files import File
from django.utils.translation import gettext as _

from crm.imports.errors import ImportFileInvalid
from crm.models import ContactImport


@dataclass
class Source:
    format: str
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]
    delimiter: str = ","
    encoding: str = ""
    total_rows: int | None = None


def file_extension(name: str) -> str:
    return Path(name).suffix.lower()


# A well-formed UTF-8 multi-byte character. Windows-1252 text almost never holds one: it would
# take a letter such as "Ä" or "ß" directly followed by a sign such as "€", "°" or "»".
_UTF8_CHARACTER: Final = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def _scan_csv(binary: IO[bytes], *, full: bool) -> tuple[str, int | None]:
    """Pick the encoding and, with `full`, count lines (the progress total) in one pass.

    UTF-8 (a BOM is dropped) unless a byte sequence is not UTF-8: then Windows-1252, which is
    what German Excel writes. A file that is neither, because rows saved in both encodings
    were put together, is refused: read either way, part of its umlauts would be garbled.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    has_utf8_characters = False
    lines = 0
    last = b""
    while chunk := binary.read(1 << 20):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        has_utf8_characters = has_utf8_characters or bool(_UTF8_CHARACTER.search(chunk))
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
        if not full or (not utf8 and has_utf8_characters):
            break
    if full and utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    if not utf8 and has_utf8_characters:
        raise ImportFileInvalid(
            _(
                "The file mixes character encodings: some lines are UTF-8, others are not "
                "(e.g. Windows-1252), so umlauts would be garbled. Save it in one encoding, "
                "preferably UTF-8, and upload it again."
            ),
            field="file",
        )
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
        # Some cell holds more than whitespace (one join instead of a strip per cell).
        if "".join(cells).strip():
            yield line, cells


@contextmanager
def _open_csv(binary: IO[bytes], *, count: bool) -> Iterator[Source]:
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
        yield Source(
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
def _open_xlsx(binary: IO[bytes], *, count: bool) -> Iterator[Source]:
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
        yield Source(format="xlsx", header=header, rows=rows(), total_rows=total)
    finally:
        workbook.close()


@contextmanager
def open_source(binary: IO[bytes], name: str, *, count: bool = False) -> Iterator[Source]:
    extension = file_extension(name)
    opener = _open_xlsx if extension == ".xlsx" else _open_csv
    with opener(binary, count=count) as source:
        yield source


def as_binary(file: Any) -> IO[bytes]:
    """The raw binary file under Django's File wrappers (TextIOWrapper needs the real thing)."""
    inner = file
    while isinstance(inner, File) and getattr(inner, "file", None) is not None:
        inner = inner.file
    return inner


@contextmanager
def open_import_file(contact_import: ContactImport, *, count: bool) -> Iterator[Source]:
    with contact_import.source_file.open("rb") as stored:
        binary = as_binary(stored)
        binary.seek(0)
        name = contact_import.original_name or contact_import.source_file.name
        with open_source(binary, name, count=count) as source:
            yield source
