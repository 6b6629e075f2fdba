"""Hostile import files: wrong or mixed encodings, BOMs, German Excel exports, formula
injection through every CSV the product writes, and a 50 MB file on both sides of the limit.

Plain cp1252/UTF-8-BOM detection with ';', ',' and tab is covered in test_import.py; the
single-writer formula checks in test_admin_misc.py, test_contact_admin.py and test_exports.py.
"""

from __future__ import annotations

import csv
import io
import tracemalloc

import pytest
from django.core.files import File

from crm.imports import (
    ImportFileInvalid,
    contact_import_create,
    contact_import_preview,
    contact_import_run,
    contact_import_start,
    import_file,
)
from crm.models import Contact, ContactImport, ImportRejection, ImportStatus
from messaging.services.exports import conversations_export
from tests.crm.test_contact_admin import CHANGELIST, action_post, client_for, read_csv
from tests.crm.test_import import counts
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import receive_text

pytestmark = pytest.mark.django_db

GERMAN_HEADER = "Kundennummer;Vorname;Nachname;E-Mail;Schlagworte"
GERMAN_ROWS = ["K1;Jürgen;Müßig;jm@example.org;Käufer", "K2;Zoë;Çelik;zc@example.org;Öko"]


def upload(team, actor, content: bytes, name: str = "kontakte.csv") -> ContactImport:
    return contact_import_create(
        team=team, uploaded_file=File(io.BytesIO(content), name=name), actor=actor
    )


def run_upload(team, actor, content: bytes, name: str = "kontakte.csv") -> ContactImport:
    contact_import = upload(team, actor, content, name)
    contact_import_start(contact_import=contact_import, actor=actor)
    return contact_import_run(contact_import_id=contact_import.pk)


def names() -> set[tuple[str, str]]:
    return set(Contact.objects.values_list("first_name", "last_name"))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            "\r\n".join([GERMAN_HEADER, *GERMAN_ROWS]).encode("latin-1"), id="latin-1-crlf"
        ),
        pytest.param(
            "\n".join(["sep=;", GERMAN_HEADER, *GERMAN_ROWS]).encode("utf-8-sig"),
            id="bom-and-excel-sep-hint",
        ),
        pytest.param(
            "\r\n".join(
                [GERMAN_HEADER.replace(";", ","), *(r.replace(";", ",") for r in GERMAN_ROWS)]
            ).encode("cp1252"),
            id="cp1252-comma",
        ),
    ],
)
def test_german_excel_exports_are_decoded_right_in_preview_and_import(team, marketing, content):
    contact_import = upload(team, marketing, content)

    preview = contact_import_preview(contact_import=contact_import)
    assert [row.raw["Vorname"] for row in preview.rows] == ["Jürgen", "Zoë"]
    assert preview.columns == GERMAN_HEADER.split(";")

    contact_import_start(contact_import=contact_import, actor=marketing)
    result = contact_import_run(contact_import_id=contact_import.pk)
    assert counts(result) == (2, 0, 0, 0)
    assert names() == {("Jürgen", "Müßig"), ("Zoë", "Çelik")}
    assert set(Contact.objects.values_list("tags__name", flat=True)) == {"Käufer", "Öko"}


def test_quoted_semicolons_and_line_breaks_in_a_semicolon_file_stay_in_their_cell(team, marketing):
    content = (
        'Vorname;Nachname;Firma\r\n"Ada";"Lovelace; Byron";"Analytical\r\nEngines"\r\n'
    ).encode("cp1252")
    result = run_upload(team, marketing, content)

    assert counts(result) == (1, 0, 0, 0)
    contact = Contact.objects.get()
    assert (contact.last_name, contact.organisation) == ("Lovelace; Byron", "Analytical\r\nEngines")


@pytest.mark.parametrize("padding_mb", [0, 2], ids=["mixed-in-first-mb", "mixed-after-2-mb"])
def test_a_file_mixing_utf8_and_cp1252_is_refused_and_nothing_is_imported(
    team, marketing, padding_mb
):
    padding = [f"P{i};Pad;Ding;;" for i in range(padding_mb * 1024 * 1024 // 16)]
    content = (
        "\n".join([GERMAN_HEADER, GERMAN_ROWS[0], *padding]).encode("utf-8")
        + b"\n"
        + GERMAN_ROWS[1].encode("cp1252")
        + b"\n"
    )

    if not padding_mb:
        with pytest.raises(ImportFileInvalid, match="mixes character encodings"):
            upload(team, marketing, content)
        assert not ContactImport.objects.exists()
        return
    # The upload check reads the first megabyte only; the run scans the whole file first.
    result = run_upload(team, marketing, content)
    assert result.status == ImportStatus.FAILED
    assert "mixes character encodings" in result.error
    assert result.processed_rows == 0
    assert not Contact.objects.exists()


def test_a_utf16_file_is_refused_with_a_clear_error_and_nothing_is_stored(team, marketing):
    content = "\n".join([GERMAN_HEADER, *GERMAN_ROWS]).encode("utf-16")

    with pytest.raises(ImportFileInvalid, match="names none of the columns"):
        upload(team, marketing, content)
    assert not ContactImport.objects.exists()


# Each starts a formula in Excel, LibreOffice or Google Sheets.
FORMULAS = [
    '=HYPERLINK("http://evil.example","x")',
    "+SUM(1+1)",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)",
]


def formula_file() -> bytes:
    lines = ["external_id;first_name;last_name;email"]
    for index, formula in enumerate(FORMULAS):
        lines.append(f"{formula};{formula};{formula};ok{index}@example.org")
        # Same names with an invalid address: a rejected row that lands in the report.
        lines.append(f"R{index};{formula};{formula};bad-{index}")
    return "\n".join(lines).encode("utf-8-sig")


def test_formulas_are_stored_as_data_but_neutralised_in_every_csv_written(
    team, marketing, auditor, tmp_path
):
    result = run_upload(team, marketing, formula_file())

    assert counts(result) == (len(FORMULAS), 0, 0, len(FORMULAS))
    # Stored verbatim: the data is the customer's, only spreadsheets must not run it.
    assert names() == {(formula, formula) for formula in FORMULAS}
    assert set(Contact.objects.values_list("external_id", flat=True)) == set(FORMULAS)
    assert {r.raw["first_name"] for r in ImportRejection.objects.all()} == set(FORMULAS)

    # 1. The rejected-rows report (in the file's own delimiter).
    with result.report_file.open("rb") as handle:
        report = list(csv.reader(io.StringIO(handle.read().decode("utf-8-sig")), delimiter=";"))
    assert sorted(row[3:5] for row in report[1:]) == sorted(["'" + f] * 2 for f in FORMULAS)

    # 2. The contact export in admin.
    contacts = Contact.objects.order_by("pk")
    _header, *exported = read_csv(
        client_for(marketing).post(CHANGELIST, action_post("export_csv", contacts))
    )
    assert sorted((row[0], row[7]) for row in exported) == sorted(
        ("'" + contact.full_name, "'" + contact.external_id) for contact in contacts
    )

    # 3. The conversation export: the contacts write back with their own formulas.
    account = ChannelAccountFactory(team=team)
    for contact in contacts:
        receive_text(account, contact, contact.first_name)
    conversations_export(actor=auditor, out_dir=tmp_path / "export", team_ids=[team.pk])
    with (tmp_path / "export" / "messages.csv").open(encoding="utf-8", newline="") as handle:
        bodies = sorted(row["body"] for row in csv.DictReader(handle))
    assert bodies == sorted("'" + formula for formula in FORMULAS)


FIFTY_MB = 50 * 1024 * 1024
# Long (ignored) cells keep the row count, and so the test's time, small.
NOTE = "n" * 10_000


def write_fifty_mb_file(path) -> int:
    """A valid contact file of exactly 50 MB: 1,000 contacts, repeated until the size is
    reached; returns the number of data rows."""
    header = b"external_id;first_name;last_name;email;notes\n"
    rows = 0
    with path.open("wb") as handle:
        handle.write(header)
        size = len(header)
        while True:
            line = f"E{rows % 1000};Jürgen;Nr {rows % 1000};j{rows % 1000}@example.org;{NOTE}\n"
            data = line.encode("utf-8")
            if size + len(data) > FIFTY_MB:
                break
            handle.write(data)
            size += len(data)
            rows += 1
        # Top up to the exact size with a last, shorter row.
        filler = f"E0;Jürgen;Nr 0;j0@example.org;{'n' * (FIFTY_MB - size - 40)}"
        data = filler.encode("utf-8")
        handle.write(data + b" " * (FIFTY_MB - size - len(data) - 1) + b"\n")
    assert path.stat().st_size == FIFTY_MB
    return rows + 1


@pytest.fixture(scope="module")
def fifty_mb_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "kontakte.csv"
    return path, write_fifty_mb_file(path)


def test_a_50_mb_file_over_the_upload_limit_is_refused_and_nothing_is_stored(
    team, marketing, settings, fifty_mb_file
):
    settings.IMPORT_MAX_UPLOAD_MB = 49
    path, _rows = fifty_mb_file

    with path.open("rb") as handle, pytest.raises(ImportFileInvalid, match="larger than 49 MB"):
        contact_import_create(
            team=team, uploaded_file=File(handle, name=path.name), actor=marketing
        )
    assert not ContactImport.objects.exists()
    assert not list((settings.MEDIA_ROOT).rglob("*.csv"))


def peak_memory_mb(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1] / 1024 / 1024
    finally:
        tracemalloc.stop()


def test_a_50_mb_file_at_the_limit_is_accepted_and_read_with_bounded_memory(
    team, marketing, settings, fifty_mb_file
):
    settings.IMPORT_MAX_UPLOAD_MB = 50
    path, rows = fifty_mb_file

    def create():
        with path.open("rb") as handle:
            return contact_import_create(
                team=team, uploaded_file=File(handle, name=path.name), actor=marketing
            )

    contact_import, create_peak = peak_memory_mb(create)
    preview, preview_peak = peak_memory_mb(
        lambda: contact_import_preview(contact_import=contact_import)
    )

    assert contact_import.source_file.size == FIFTY_MB
    assert len(preview.rows) == 20
    assert preview.rows[0].raw["first_name"] == "Jürgen"
    assert preview.unknown_columns == ["notes"]
    # Streamed: a small fraction of the 50 MB is ever in memory.
    assert create_peak < 10, create_peak
    assert preview_peak < 10, preview_peak
    assert rows > 5000


@pytest.mark.postgres
def test_a_50_mb_file_is_imported_to_the_end_with_bounded_memory(
    team, marketing, settings, fifty_mb_file
):
    """The whole run, streamed in batches: memory holds one batch of rows (its size times
    the width of a row), never the file."""
    path, rows = fifty_mb_file

    result, peak = peak_memory_mb(
        lambda: import_file(path=path, team=team, actor=marketing, batch_size=500)
    )

    assert result.status == ImportStatus.COMPLETED
    assert result.processed_rows == result.total_rows == rows
    assert counts(result) == (1000, 0, rows - 1000, 0)
    assert Contact.objects.filter(team=team).count() == 1000
    # 500 rows of 10 kB are 5 MB of cells; the file is 50 MB.
    assert peak < 20, peak
