"""CSV exports that are safe to open in a spreadsheet, streamed row by row.

Any app that offers a CSV download uses these helpers, so formula injection is neutralised in
one place and large exports never sit in memory as a whole.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from django.http import StreamingHttpResponse

# A cell starting with one of these is read as a formula by Excel, LibreOffice and Google
# Sheets (OWASP "CSV injection"); "-" and "+" also start e.g. "-2+3+cmd|' /C calc'!A0".
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """Return `value` as text that a spreadsheet shows literally, never evaluates.

    `None` becomes an empty cell; text starting with a formula character gets a leading single
    quote, which spreadsheets hide and which a reader of the raw file can still strip.
    """
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class _LineBuffer:
    """A file-like object whose write() hands the line back, so csv.writer can stream."""

    def write(self, value: str) -> str:
        return value


def stream_csv(rows: Iterable[Sequence[Any]], header: Sequence[Any]) -> Iterator[str]:
    """Yield the header and then each row as one CSV line, every cell passed through csv_safe."""
    writer = csv.writer(_LineBuffer())
    yield writer.writerow([csv_safe(cell) for cell in header])
    for row in rows:
        yield writer.writerow([csv_safe(cell) for cell in row])


def csv_response(
    rows: Iterable[Sequence[Any]], header: Sequence[Any], *, filename: str
) -> StreamingHttpResponse:
    """A streaming download of `rows`; starts with a UTF-8 BOM so Excel reads umlauts right."""

    def content() -> Iterator[str]:
        yield "\ufeff"
        yield from stream_csv(rows, header)

    response = StreamingHttpResponse(content(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
