"""The import engine: parsing, normalisation, deduplication, conflicts, resume, history, cost."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
from django.core.files import File
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm import imports
from crm.imports import (
    ImportFileInvalid,
    contact_import_preview,
    contact_import_run,
    engine,
    hooks,
    import_file,
)
from crm.models import (
    Channel,
    Contact,
    ContactImport,
    ContactPoint,
    ImportRejection,
    ImportStatus,
    Tag,
)
from crm.services import contact_create, tag_create
from tests.factories import ContactFactory, ContactPointFactory

pytestmark = pytest.mark.django_db

HEADER = ["external_id", "first_name", "last_name", "email", "phone", "tags"]


def write_csv(path, rows, *, header=HEADER, delimiter=",", encoding="utf-8"):
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run(tmp_path, rows, team, actor, *, header=HEADER, name="contacts.csv", **kwargs):
    path = write_csv(tmp_path / name, rows, header=header)
    return import_file(path=path, team=team, actor=actor, **kwargs)


def read_report(contact_import):
    with contact_import.report_file.open("rb") as handle:
        text = handle.read().decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


def counts(contact_import):
    return (
        contact_import.created_count,
        contact_import.updated_count,
        contact_import.unchanged_count,
        contact_import.rejected_count,
    )


def test_rows_are_normalised_and_created_with_tags_attributes_and_team_defaults(
    tmp_path, team, marketing
):
    header = [
        "Anrede",
        "Vorname",
        "Nachname",
        "E-Mail",
        "Telefon",
        "WhatsApp",
        "Sprache",
        "Organisation",
        "Beruf",
        "Tags",
        "attr_member_since",
    ]
    rows = [
        [
            "Frau",
            "Ada",
            "Lovelace",
            " Ada@Example.ORG ",
            "0151 23456789",
            "+49 151 23456790",
            "Englisch",
            "Analytical Engines",
            "Mathematikerin",
            "vip| kino ,VIP",
            "2020",
        ]
    ]
    result = run(tmp_path, rows, team, marketing, header=header)

    assert result.status == ImportStatus.COMPLETED
    assert counts(result) == (1, 0, 0, 0)
    assert result.progress_percent == 100
    contact = Contact.objects.get(team=team)
    assert (contact.salutation, contact.first_name, contact.last_name) == ("ms", "Ada", "Lovelace")
    assert contact.language == "en"
    assert contact.time_zone == team.default_time_zone
    assert contact.organisation == "Analytical Engines"
    assert contact.profession == "Mathematikerin"
    assert contact.attributes == {"member_since": "2020"}
    assert sorted(contact.points.values_list("channel", "address", "is_primary")) == [
        ("email", "ada@example.org", True),
        ("sms", "+4915123456789", True),
        ("whatsapp", "+4915123456790", True),
    ]
    assert all(p.address_hash for p in contact.points.all())
    assert sorted(contact.tags.values_list("name", flat=True)) == ["kino", "vip"]
    assert not result.report_file


def test_bad_rows_are_rejected_with_line_numbers_reasons_and_report(tmp_path, team, marketing):
    rows = [
        ["E1", "Ada", "Lovelace", "ada@example.org", "", ""],
        ["E2", "Bad", "Mail", "not-an-email", "", ""],
        ["E3", "Bad", "Phone", "", "12345", ""],
        ["", "", "", "", "", "only-a-tag"],
        ["E5", "Grace", "Hopper", "grace@example.org", "", ""],
    ]
    result = run(tmp_path, rows, team, marketing)

    assert counts(result) == (2, 0, 0, 3)
    rejections = list(ImportRejection.objects.filter(contact_import=result))
    assert [r.line_number for r in rejections] == [3, 4, 5]
    assert "email" in rejections[0].reason
    assert "not-an-email" in rejections[0].reason
    assert "12345" in rejections[1].reason
    assert "no name, no external id and no address" in rejections[2].reason
    assert rejections[0].raw["email"] == "not-an-email"
    assert set(Contact.objects.filter(team=team).values_list("external_id", flat=True)) == {
        "E1",
        "E5",
    }

    report = read_report(result)
    assert report[0] == ["line", "reason", *HEADER]
    assert [row[0] for row in report[1:]] == ["3", "4", "5"]
    assert report[1][2:] == ["E2", "Bad", "Mail", "not-an-email", "", ""]


@pytest.mark.parametrize(
    ("header", "value", "problem"),
    [
        (["first_name", "language"], "Klingonisch", "not a language"),
        (["first_name", "time_zone"], "Mars/Olympus", "not a time zone"),
        (["first_name", "salutation"], "Majestät", "not a salutation"),
        (["first_name", "preferred_channel"], "fax", "not a channel"),
        (["first_name", "external_id"], "x" * 121, "longer than 120"),
    ],
)
def test_invalid_field_values_reject_the_row(tmp_path, team, marketing, header, value, problem):
    result = run(tmp_path, [["Ada", value]], team, marketing, header=header)
    assert counts(result) == (0, 0, 0, 1)
    assert problem in ImportRejection.objects.get().reason
    assert not Contact.objects.exists()


def existing_contact(team, marketing, **fields):
    points = fields.pop("points", [(Channel.EMAIL, "ada@example.org")])
    return contact_create(team=team, actor=marketing, points=points, **fields)


@pytest.mark.parametrize(
    "row",
    [
        ["E1", "", "Byron", "", "", ""],  # external id
        ["", "", "Byron", "ADA@example.org", "", ""],  # e-mail
        ["", "", "Byron", "", "0151 23456789", ""],  # phone
    ],
    ids=["external_id", "email", "phone"],
)
def test_existing_contact_is_matched_and_only_provided_cells_are_set(
    tmp_path, team, marketing, row
):
    contact = existing_contact(
        team,
        marketing,
        external_id="E1",
        first_name="Ada",
        last_name="Lovelace",
        organisation="Engines",
        points=[(Channel.EMAIL, "ada@example.org"), (Channel.SMS, "+4915123456789")],
    )
    result = run(tmp_path, [row], team, marketing)

    assert counts(result) == (0, 1, 0, 0)
    contact.refresh_from_db()
    assert contact.last_name == "Byron"
    assert (contact.first_name, contact.organisation) == ("Ada", "Engines")
    assert Contact.objects.count() == 1


def test_phone_matches_a_whatsapp_address_and_adds_the_sms_point(tmp_path, team, marketing):
    contact = existing_contact(
        team, marketing, first_name="Ada", points=[(Channel.WHATSAPP, "+4915123456789")]
    )
    result = run(tmp_path, [["", "Ada", "Lovelace", "", "015123456789", ""]], team, marketing)

    assert counts(result) == (0, 1, 0, 0)
    assert sorted(contact.points.values_list("channel", flat=True)) == ["sms", "whatsapp"]


def test_match_adds_external_id_new_address_and_tags_without_removing_any(
    tmp_path, team, marketing
):
    old_tag = tag_create(team=team, name="Kino", actor=marketing)
    contact = existing_contact(team, marketing, first_name="Ada", tags=[old_tag])
    result = run(
        tmp_path,
        [["E9", "", "", "ada@example.org", "0151 23456789", "kino,newsletter"]],
        team,
        marketing,
    )

    assert counts(result) == (0, 1, 0, 0)
    contact.refresh_from_db()
    assert contact.external_id == "E9"
    assert sorted(contact.tags.values_list("name", flat=True)) == ["Kino", "newsletter"]
    assert contact.points.count() == 2
    assert Tag.objects.filter(team=team).count() == 2


@pytest.mark.parametrize("batch_size", [1, 2000], ids=["rows-in-separate-batches", "one-batch"])
def test_duplicates_within_the_file_merge_into_one_contact(tmp_path, team, marketing, batch_size):
    rows = [
        ["", "Ada", "", "ada@example.org", "", "vip"],
        ["", "Ada", "", "ADA@example.org", "", "vip"],  # same contact, nothing new
        ["", "", "Lovelace", "ada@example.org", "0151 23456789", "kino"],  # adds to it
        ["E1", "", "", "", "+4915123456789", ""],  # found by phone, gets the external id
        ["E1", "Augusta", "", "", "", ""],  # found by external id
    ]
    result = run(tmp_path, rows, team, marketing, batch_size=batch_size)

    assert counts(result) == (1, 3, 1, 0)
    contact = Contact.objects.get(team=team)
    assert (contact.first_name, contact.last_name, contact.external_id) == (
        "Augusta",
        "Lovelace",
        "E1",
    )
    assert contact.points.count() == 2
    assert sorted(contact.tags.values_list("name", flat=True)) == ["kino", "vip"]


def test_row_whose_email_and_external_id_belong_to_different_contacts_is_rejected(
    tmp_path, team, marketing
):
    x = existing_contact(team, marketing, first_name="X", points=[(Channel.EMAIL, "x@example.org")])
    y = existing_contact(team, marketing, first_name="Y", external_id="Y1", points=[])
    result = run(tmp_path, [["Y1", "Changed", "", "x@example.org", "", ""]], team, marketing)

    assert counts(result) == (0, 0, 0, 1)
    reason = ImportRejection.objects.get().reason
    assert "Conflict" in reason
    assert f"#{x.pk}" in reason
    assert f"#{y.pk}" in reason
    x.refresh_from_db()
    y.refresh_from_db()
    assert (x.first_name, x.external_id, y.first_name) == ("X", None, "Y")


def test_row_matching_a_contact_with_another_external_id_is_rejected(tmp_path, team, marketing):
    contact = existing_contact(team, marketing, first_name="Ada", external_id="A1")
    result = run(tmp_path, [["B2", "Eve", "", "ada@example.org", "", ""]], team, marketing)

    assert counts(result) == (0, 0, 0, 1)
    assert "“A1”" in ImportRejection.objects.get().reason
    contact.refresh_from_db()
    assert (contact.first_name, contact.external_id) == ("Ada", "A1")


def test_conflict_within_the_same_file_is_rejected(tmp_path, team, marketing):
    rows = [
        ["E1", "Ada", "", "ada@example.org", "", ""],
        ["E2", "Bob", "", "bob@example.org", "", ""],
        ["E2", "Bob", "", "ada@example.org", "", ""],
    ]
    result = run(tmp_path, rows, team, marketing)

    assert counts(result) == (2, 0, 0, 1)
    assert ImportRejection.objects.get().line_number == 4


def test_contacts_of_other_teams_are_neither_matched_nor_changed(
    tmp_path, team, other_team, marketing
):
    foreign = ContactFactory(team=other_team, external_id="E1", first_name="Foreign")
    ContactPointFactory(contact=foreign, address="ada@example.org")
    result = run(tmp_path, [["E1", "Ada", "", "ada@example.org", "", ""]], team, marketing)

    assert counts(result) == (1, 0, 0, 0)
    foreign.refresh_from_db()
    assert foreign.first_name == "Foreign"
    assert Contact.objects.filter(team=team).count() == 1


@pytest.mark.parametrize(
    ("delimiter", "encoding"),
    [(";", "utf-8-sig"), (";", "cp1252"), (",", "utf-8"), ("\t", "utf-8-sig")],
)
def test_delimiter_and_encoding_are_detected(tmp_path, team, marketing, delimiter, encoding):
    header = ["Vorname", "Nachname", "E-Mail", "Tags"]
    path = write_csv(
        tmp_path / "export.csv",
        [["Jürgen", "Müßig", "jm@example.org", "Käufer, Großhandel"]],
        header=header,
        delimiter=delimiter,
        encoding=encoding,
    )
    result = import_file(path=path, team=team, actor=marketing)

    assert counts(result) == (1, 0, 0, 0)
    contact = Contact.objects.get()
    assert (contact.first_name, contact.last_name) == ("Jürgen", "Müßig")
    assert sorted(contact.tags.values_list("name", flat=True)) == ["Großhandel", "Käufer"]
    assert result.columns == header


def test_excel_sep_hint_line_is_honoured_and_lines_still_count_from_the_top(
    tmp_path, team, marketing
):
    path = tmp_path / "hint.csv"
    path.write_text("sep=;\nemail;first_name\nbad;Ada\nok@example.org;Bob\n", encoding="utf-8")
    result = import_file(path=path, team=team, actor=marketing)

    assert counts(result) == (1, 0, 0, 1)
    assert ImportRejection.objects.get().line_number == 3


def test_quoted_cells_with_line_breaks_keep_the_starting_line_number(tmp_path, team, marketing):
    path = tmp_path / "multiline.csv"
    path.write_text(
        'first_name,organisation,email\nAda,"Two\nlines",ada@example.org\nBob,x,bad\n',
        encoding="utf-8",
    )
    result = import_file(path=path, team=team, actor=marketing)

    assert counts(result) == (1, 0, 0, 1)
    assert ImportRejection.objects.get().line_number == 4
    assert Contact.objects.get().organisation == "Two\nlines"


def test_xlsx_file_is_imported(tmp_path, team, marketing):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Kundennummer", "Vorname", "Nachname", "E-Mail", "Mobil", "attr_score"])
    sheet.append([1001, "Ada", "Lovelace", "ada@example.org", 15123456789, 7.5])
    sheet.append([None, None, None, None, None, None])
    sheet.append([1002, "Bad", "Phone", None, "12", None])
    path = tmp_path / "contacts.xlsx"
    workbook.save(path)

    result = import_file(path=path, team=team, actor=marketing)

    assert counts(result) == (1, 0, 0, 1)
    assert ImportRejection.objects.get().line_number == 4
    contact = Contact.objects.get()
    assert contact.external_id == "1001"
    assert contact.attributes == {"score": "7.5"}
    assert set(contact.points.values_list("address", flat=True)) == {
        "ada@example.org",
        "+4915123456789",
    }


def test_reimporting_the_same_file_changes_nothing(tmp_path, team, marketing):
    tag_create(team=team, name="vip", actor=marketing)
    rows = [
        ["E1", "Ada", "Lovelace", "ada@example.org", "0151 23456789", "vip"],
        ["", "Bob", "", "bob@example.org", "", "new-tag"],
        ["", "", "", "bad", "", ""],
    ]
    path = write_csv(tmp_path / "contacts.csv", rows)
    first = import_file(path=path, team=team, actor=marketing)
    assert counts(first) == (2, 0, 0, 1)
    snapshot = list(Contact.objects.order_by("id").values())
    history = (Contact.history.count(), ContactPoint.history.count())
    links = Contact.tags.through.objects.count()

    second = import_file(path=path, team=team, actor=marketing)

    assert counts(second) == (0, 0, 2, 1)
    assert list(Contact.objects.order_by("id").values()) == snapshot
    assert (Contact.history.count(), ContactPoint.history.count()) == history
    assert Contact.tags.through.objects.count() == links
    assert Tag.objects.filter(team=team).count() == 2


def test_history_rows_name_the_importing_user(tmp_path, team, marketing):
    existing = existing_contact(team, marketing, first_name="Ada")
    Contact.history.all().delete()
    ContactPoint.history.all().delete()

    run(
        tmp_path,
        [["", "", "Lovelace", "ada@example.org", "", ""], ["", "Bob", "", "", "0170 1234567", ""]],
        team,
        marketing,
    )

    created = Contact.objects.exclude(pk=existing.pk).get()
    assert sorted(Contact.history.values_list("id", "history_type", "history_user")) == sorted(
        [(existing.pk, "~", marketing.pk), (created.pk, "+", marketing.pk)]
    )
    assert set(ContactPoint.history.values_list("history_type", "history_user")) == {
        ("+", marketing.pk)
    }
    record = Contact.history.get(id=existing.pk)
    assert record.last_name == "Lovelace"
    assert "import" in record.history_change_reason


def test_unknown_columns_are_reported_once_and_ignored(tmp_path, team, marketing):
    header = ["first_name", "Lieblingsfarbe", "", "email"]
    rows = [["Ada", "blau", "", "ada@example.org"], ["Bob", "rot", "", "bob@example.org"]]
    result = run(tmp_path, rows, team, marketing, header=header)

    assert result.unknown_columns == ["Lieblingsfarbe"]
    assert counts(result) == (2, 0, 0, 0)


def test_header_without_identifying_columns_is_refused_and_nothing_is_stored(
    tmp_path, team, marketing
):
    with pytest.raises(ImportFileInvalid):
        run(tmp_path, [["blau", "x"]], team, marketing, header=["Farbe", "organisation"])
    assert not ContactImport.objects.exists()
    assert not Contact.objects.exists()


def test_restricted_contact_is_not_changed_by_an_import(tmp_path, team, marketing):
    contact = existing_contact(team, marketing, first_name="Ada")
    Contact.objects.filter(pk=contact.pk).update(is_restricted=True)
    result = run(
        tmp_path,
        [
            ["", "Changed", "", "ada@example.org", "", ""],
            ["", "Ada", "", "ada@example.org", "", ""],
        ],
        team,
        marketing,
    )

    assert counts(result) == (0, 0, 1, 1)
    assert "restricted" in ImportRejection.objects.get().reason
    contact.refresh_from_db()
    assert contact.first_name == "Ada"


def test_a_crashed_import_keeps_finished_batches_and_a_rerun_resumes(
    tmp_path, team, marketing, monkeypatch
):
    rows = [["", f"P{i}", "", f"p{i}@example.org", "", ""] for i in range(10)]
    rows[7][3] = "bad"
    path = write_csv(tmp_path / "contacts.csv", rows)
    real_apply = engine.apply_plan
    calls = {"n": 0}

    def crash_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker lost")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(engine, "apply_plan", crash_on_third_batch)
    failed = import_file(path=path, team=team, actor=marketing, batch_size=3)

    assert failed.status == ImportStatus.FAILED
    assert "worker lost" in failed.error
    assert failed.processed_rows == 6
    assert Contact.objects.count() == 6

    monkeypatch.setattr(engine, "apply_plan", real_apply)
    done = contact_import_run(contact_import_id=failed.pk, batch_size=3)

    assert done.status == ImportStatus.COMPLETED
    assert counts(done) == (9, 0, 0, 1)
    assert done.processed_rows == done.total_rows == 10
    assert Contact.objects.count() == 9
    assert list(done.rejections.values_list("line_number", flat=True)) == [9]


def test_running_a_completed_import_again_does_nothing(tmp_path, team, marketing):
    result = run(tmp_path, [["E1", "Ada", "", "", "", ""]], team, marketing)
    again = contact_import_run(contact_import_id=result.pk)
    assert again.status == ImportStatus.COMPLETED
    assert counts(again) == (1, 0, 0, 0)
    assert Contact.objects.count() == 1


def test_preview_is_a_dry_run_that_writes_nothing(tmp_path, team, marketing):
    existing_contact(team, marketing, first_name="Ada")
    path = write_csv(
        tmp_path / "contacts.csv",
        [
            ["", "Ada", "", "ada@example.org", "", ""],
            ["", "Ada", "Lovelace", "ada@example.org", "", "new"],
            ["", "Bob", "", "bob@example.org", "", ""],
            ["", "", "", "bad", "", ""],
        ],
    )
    with path.open("rb") as handle:
        contact_import = imports.contact_import_create(
            team=team, uploaded_file=File(handle, name="contacts.csv"), actor=marketing
        )
    before = (Contact.objects.count(), Tag.objects.count(), Contact.history.count())

    preview = contact_import_preview(contact_import=contact_import)

    assert [row.outcome for row in preview.rows] == ["unchanged", "updated", "created", "rejected"]
    assert [row.line for row in preview.rows] == [2, 3, 4, 5]
    assert "last_name" in preview.rows[1].changes
    assert "not a valid e-mail" in preview.rows[3].reason
    assert (Contact.objects.count(), Tag.objects.count(), Contact.history.count()) == before
    assert not ImportRejection.objects.exists()


def test_row_hooks_get_each_accepted_row_with_its_contact(tmp_path, team, marketing, monkeypatch):
    seen = []

    def hook(contact_import, pairs):
        seen.extend((c.pk, r.raw["Consent"]) for c, r in pairs)
        return [(r.line, "consent left out") for _c, r in pairs]

    monkeypatch.setattr(hooks, "ROW_HOOKS", [hook])
    monkeypatch.setattr(hooks, "HOOK_COLUMNS", {"consent"})
    result = run(
        tmp_path,
        [["Ada", "ada@example.org", "yes"], ["", "bad", "no"]],
        team,
        marketing,
        header=["first_name", "email", "Consent"],
    )

    assert result.unknown_columns == []
    assert seen == [(Contact.objects.get().pk, "yes")]
    assert result.warning_count == 1
    assert result.rejected_count == 1
    warning = result.rejections.get(is_warning=True)
    assert (warning.line_number, warning.reason) == (2, "consent left out")


def test_row_checks_reject_rows_before_matching(tmp_path, team, marketing, monkeypatch):
    def refuse_ada(team, rows):
        return {row.line: "refused by check" for row in rows if row.raw["first_name"] == "Ada"}

    monkeypatch.setattr(hooks, "ROW_CHECKS", [refuse_ada])
    result = run(
        tmp_path,
        [["Ada", "ada@example.org"], ["Bea", "bea@example.org"]],
        team,
        marketing,
        header=["first_name", "email"],
    )
    assert list(Contact.objects.values_list("first_name", flat=True)) == ["Bea"]
    assert result.rejections.get().reason == "refused by check"


def test_queries_grow_with_the_number_of_batches_not_rows(tmp_path, team, marketing):
    """Batches of 25 keep SQLite's 999-parameter limit from splitting any bulk statement."""
    tag_create(team=team, name="vip", actor=marketing)
    existing = [
        existing_contact(team, marketing, external_id=f"X{i}", points=[]) for i in range(100)
    ]
    assert len(existing) == 100

    def queries_for(batches, prefix, offset):
        rows = []
        for i in range(25 * batches):
            if i % 5 == 0:  # every fifth row updates an existing contact
                rows.append([f"X{i}", f"{prefix}{i}", "", "", "", "vip"])
            else:
                rows.append(
                    ["", "N", "", f"{prefix}{i}@example.org", f"0151 {offset + i:08d}", "vip"]
                )
        path = write_csv(tmp_path / f"{prefix}.csv", rows)
        with CaptureQueriesContext(connection) as ctx:
            result = import_file(path=path, team=team, actor=marketing, batch_size=25)
        assert result.status == ImportStatus.COMPLETED, result.error
        assert result.rejected_count == 0
        return len(ctx.captured_queries)

    one, two, four = queries_for(1, "a", 0), queries_for(2, "b", 1000), queries_for(4, "c", 2000)
    per_batch = two - one
    # 23 on PostgreSQL: new addresses refresh the consent projection's audience columns (one
    # UPDATE per batch, consent.services.reachability), and each batch prices index probes
    # and checks whether a table has grown enough to be analyzed (crm.planner).
    assert per_batch <= 23
    assert four - one == 3 * per_batch


def test_command_prints_summary_and_writes_the_report(tmp_path, team, marketing):
    path = write_csv(
        tmp_path / "contacts.csv",
        [["E1", "Ada", "", "ada@example.org", "", ""], ["E2", "", "", "bad", "", ""]],
        header=[*HEADER[:-1], "Farbe"],
    )
    report = tmp_path / "rejected.csv"
    out = io.StringIO()
    call_command(
        "import_contacts",
        str(path),
        "--team",
        "kino-nord",
        "--user",
        "marketing",
        "--report",
        str(report),
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert "created: 1  updated: 0  unchanged: 0  rejected: 1" in text
    assert "Ignored columns: Farbe" in text
    assert str(report) in text
    lines = report.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("line,reason,external_id")
    assert lines[1].startswith("3,")
    assert Contact.history.get().history_user == marketing


def test_command_by_team_id_without_rejections_and_without_user(tmp_path, team):
    path = write_csv(tmp_path / "contacts.csv", [["E1", "Ada", "", "", "", ""]])
    out = io.StringIO()
    call_command(
        "import_contacts", str(path), "--team", str(team.pk), stdout=out, stderr=io.StringIO()
    )
    assert "No rows were rejected." in out.getvalue()
    assert Contact.history.get().history_user is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "nope"], "No team"),
        (["--team", "kino-nord", "--user", "ghost"], "No user"),
    ],
)
def test_command_refuses_unknown_team_or_user(tmp_path, team, args, message):
    path = write_csv(tmp_path / "contacts.csv", [["E1", "Ada", "", "", "", ""]])
    with pytest.raises(CommandError, match=message):
        call_command("import_contacts", str(path), *args, stdout=io.StringIO())
    assert not ContactImport.objects.exists()


def test_command_refuses_a_user_who_may_not_import(tmp_path, team, editor):
    path = write_csv(tmp_path / "contacts.csv", [["E1", "Ada", "", "", "", ""]])
    with pytest.raises(CommandError, match="may not import"):
        call_command(
            "import_contacts",
            str(path),
            "--team",
            "kino-nord",
            "--user",
            "editor",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not ContactImport.objects.exists()


def test_a_file_with_only_a_header_completes_with_nothing_to_do(tmp_path, team, marketing):
    result = run(tmp_path, [], team, marketing)
    assert result.status == ImportStatus.COMPLETED
    assert (result.total_rows, result.progress_percent) == (0, 100)
    assert counts(result) == (0, 0, 0, 0)


def test_an_import_that_was_not_queued_cannot_run(tmp_path, team, marketing):
    path = write_csv(tmp_path / "contacts.csv", [["E1", "Ada", "", "", "", ""]])
    with path.open("rb") as handle:
        contact_import = imports.contact_import_create(
            team=team, uploaded_file=File(handle, name="contacts.csv"), actor=marketing
        )
    with pytest.raises(imports.ImportTransitionRefused):
        contact_import_run(contact_import_id=contact_import.pk)
    assert not Contact.objects.exists()
