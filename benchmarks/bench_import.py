"""Contact CSV import at scale, through the product path: contact_import_create stores the
uploaded file, contact_import_start queues the Celery task (eager here), which runs
contact_import_run in batches and writes the rejected-rows report.

The file is generated with a known outcome for every line (German Excel shape: ';', UTF-8
with BOM, names with umlauts, phone numbers in mixed national and international formats,
e-mails in mixed case): about 2 % bad rows (invalid phone, invalid e-mail, nothing that
identifies a contact), 1 % duplicates of earlier rows, 2 % rows for contacts that already
exist (they gain a phone number). Each figure checks the import's counts, the database and
the report against what the generator planted, so a fast wrong import cannot pass.

The naive figure imports a small sample the way per-row CRMs do (one save() per contact and
contact point after a lookup query); its rate is per row, so it compares directly.
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import Group
from django.core.files import File
from django.db import connection
from django.test import override_settings

from benchmarks.harness import Figure, median
from crm import roles
from crm.addresses import AddressInvalid, normalise_address
from crm.imports import contact_import_create, contact_import_start
from crm.models import Channel, Contact, ContactImport, ContactPoint, ImportStatus, Team
from crm.services import roles_sync, team_member_add

IMPORT_TARGET = 30_000.0
REIMPORT_TARGET = 50_000.0
NAIVE_SAMPLE = 2_000

HEADER = ["Kundennummer", "Anrede", "Vorname", "Nachname", "E-Mail", "Telefon", "Firma", "Tags"]
FIRST_NAMES = ["Jürgen", "Bärbel", "Jörg", "Özlem", "Sören", "Anna", "Günther", "Zoë", "Lukas"]
LAST_NAMES = ["Müller", "Schäfer", "Groß", "Weiß", "Böhm", "Krüger", "Öztürk", "Nowak", "Dubois"]
DOMAINS = ["example.org", "Example.DE", "Mail.Example.com"]
SALUTATIONS = ["Frau", "Herr", "", "Dr."]
TAGS = ["", "Newsletter", "", "newsletter|Messe-2026", "", ""]
_ASCII = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ë": "e", "Ö": "Oe"})

# Line kinds by row number i (line = i + 2): what each row must do to the database.
NEW, EXISTING, DUPLICATE, BAD = "new", "existing", "duplicate", "bad"


def kind_of(i: int) -> str:
    if i % 100 == 99:
        return DUPLICATE  # repeats row i - 50 (a new contact), e-mail in other case
    if i % 50 == 17:
        return BAD
    if i % 50 == 33:
        return EXISTING
    return NEW


def _phone(i: int) -> str:
    """Seven formats, one prefix each so no two rows share a number; 30 % have none."""
    digits = f"{i:07d}"
    return [
        f"0151 {i:08d}",
        f"+49 160 {i:08d}",
        f"0049 (170) {i // 10_000:04d}-{i % 10_000:04d}",
        f"+49176{i:08d}",
        f"+43 664 {digits}",
        f"+41 79 {digits[:3]} {digits[3:5]} {digits[5:]}",
        f"0175/{i:08d}",
        "",
        "",
        "",
    ][i % 10]


def _new_row(i: int) -> list[str]:
    first, last = FIRST_NAMES[i % 9], LAST_NAMES[i // 9 % 9]
    local = f"{first}.{last}.{i}".translate(_ASCII)
    email = "" if i % 20 == 5 else f"{local}@{DOMAINS[i % 3]}"
    return [
        f"K{i:07d}" if i % 2 == 0 else "",
        SALUTATIONS[i % 4],
        first,
        last,
        email,
        _phone(i),
        f"Praxis {last}" if i % 7 == 0 else "",
        TAGS[i % 6],
    ]


def generate_row(i: int) -> list[str]:
    kind = kind_of(i)
    if kind == DUPLICATE:
        row = _new_row(i - 50)
        row[4] = row[4].upper()
        return row
    if kind == EXISTING:
        return ["", "", "Bestand", f"Kunde{i}", f"Bestand{i}@Example.org", f"0171 {i:08d}", "", ""]
    if kind == BAD:
        variant = i // 50 % 3
        if variant == 0:
            return ["", "Herr", "Jörg", "Falsch", "", "12345", "", ""]
        if variant == 1:
            return ["", "Frau", "Bärbel", "Falsch", f"baerbel{i}(at)example.org", "", "", ""]
        return ["", "", "", "", "", "", "Nur eine Firma GmbH", ""]
    return _new_row(i)


@dataclass
class Planted:
    new: int
    existing: int
    duplicate: int
    bad_lines: list[int]
    points: int  # contact points the import must create


def write_file(path: Path, size: int) -> Planted:
    counts = {NEW: 0, EXISTING: 0, DUPLICATE: 0}
    bad_lines: list[int] = []
    points = 0
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(HEADER)
        for i in range(size):
            row = generate_row(i)
            writer.writerow(row)
            kind = kind_of(i)
            if kind == BAD:
                bad_lines.append(i + 2)
                continue
            counts[kind] += 1
            if kind == NEW:
                points += bool(row[4]) + bool(row[5])
            elif kind == EXISTING:
                points += 1  # the phone; the e-mail exists already
    return Planted(counts[NEW], counts[EXISTING], counts[DUPLICATE], bad_lines, points)


def seed_existing(team_id: int, size: int) -> int:
    """The contacts the EXISTING rows refer to (e-mail only, same name), built in SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT %s, '', 'Bestand', 'Kunde' || g, 'de', 'Europe/Berlin', '', '', '',
                   '{}'::jsonb, NULL, false, NULL, now(), now()
            FROM generate_series(33, %s - 1, 50) AS g
            """,
            [team_id, size],
        )
        cursor.execute(
            """
            INSERT INTO crm_contactpoint (contact_id, team_id, channel, address, address_hash,
                                          is_primary, created_at, updated_at)
            SELECT id, team_id, 'email', address,
                   encode(sha256(convert_to(address, 'UTF8')), 'hex'), true, now(), now()
            FROM (SELECT id, team_id, 'bestand' || substr(last_name, 6) || '@example.org'
                         AS address
                  FROM crm_contact WHERE team_id = %s) AS seeded
            """,
            [team_id],
        )
        return cursor.rowcount


def reset(team_id: int, size: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE crm_contact, crm_contactpoint, crm_historicalcontact, "
            "crm_historicalcontactpoint, crm_contact_tags, crm_importrejection, "
            "crm_contactimport CASCADE"
        )
    seed_existing(team_id, size)


def make_team() -> tuple[Team, object]:
    from django.contrib.auth import get_user_model

    roles_sync()
    team = Team.objects.create(name="Bench Import", slug="bench-import")
    user = get_user_model().objects.create_user(username="bench-importer")
    user.groups.add(Group.objects.get(name=roles.MARKETING))
    team_member_add(team=team, user=user)
    return team, user


def import_through_product(path: Path, team: Team, user: object) -> ContactImport:
    """Upload, queue, run (the eager Celery task) — what the admin's upload form does."""
    with path.open("rb") as handle:
        contact_import = contact_import_create(
            team=team, uploaded_file=File(handle, name=path.name), actor=user, size_limit=False
        )
    contact_import_start(contact_import=contact_import, actor=user)
    contact_import.refresh_from_db()
    return contact_import


def database_state(team_id: int) -> tuple[int, int, int, int, object]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT count(*) FROM crm_contact WHERE team_id = %s),
                   (SELECT count(*) FROM crm_contactpoint WHERE team_id = %s),
                   (SELECT count(*) FROM crm_historicalcontact),
                   (SELECT count(*) FROM crm_historicalcontactpoint),
                   (SELECT max(updated_at) FROM crm_contact WHERE team_id = %s)
            """,
            [team_id, team_id, team_id],
        )
        return cursor.fetchone()


def report_lines(contact_import: ContactImport) -> list[int]:
    with contact_import.report_file.open("rb") as handle:
        text = handle.read().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    return [int(row[0]) for row in rows[1:]]


def _require(condition: bool, problem: object) -> None:
    """A wrong answer stops the benchmark: a fast wrong import must not produce a figure."""
    if not condition:
        raise SystemExit(f"import benchmark: {problem}")


def check_import(
    contact_import: ContactImport, planted: Planted, seeded: int, team_id: int
) -> dict[str, object]:
    """Counts, database and report against the plan; raises on the first difference."""
    expected = (planted.new, planted.existing, planted.duplicate, len(planted.bad_lines))
    actual = (
        contact_import.created_count,
        contact_import.updated_count,
        contact_import.unchanged_count,
        contact_import.rejected_count,
    )
    _require(contact_import.status == ImportStatus.COMPLETED, contact_import.error)
    _require(actual == expected, f"created/updated/unchanged/rejected {actual} != {expected}")
    contacts, points, contact_history, point_history, _latest = database_state(team_id)
    _require(contacts == seeded + planted.new, (contacts, seeded, planted.new))
    _require(points == seeded + planted.points, (points, seeded, planted.points))
    # One history row per created contact and contact point (existing contacts only gain a
    # phone number: their own row does not change).
    _require(contact_history == planted.new, ("contact history", contact_history))
    _require(point_history == planted.points, ("contact point history", point_history))
    _require(report_lines(contact_import) == planted.bad_lines, "report lines differ")
    return {
        "created": actual[0],
        "updated": actual[1],
        "unchanged": actual[2],
        "rejected": actual[3],
        "report_lines": len(planted.bad_lines),
        "ok": True,
    }


def naive_import(path: Path, team: Team, user: object) -> int:
    """The per-row way: read, normalise, look up, save() each contact and point."""
    rows = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        next(reader)
        for external_id, _salutation, first, last, email, phone, organisation, _tags in reader:
            rows += 1
            try:
                addresses = [(Channel.EMAIL, normalise_address(Channel.EMAIL, email))] * bool(
                    email
                ) + [(Channel.SMS, normalise_address(Channel.SMS, phone))] * bool(phone)
            except AddressInvalid:
                continue
            point = ContactPoint.objects.filter(
                team=team, address__in=[a for _c, a in addresses]
            ).first()
            contact = point.contact if point else Contact(team=team)
            contact.first_name, contact.last_name = first, last
            contact.external_id = external_id or contact.external_id
            contact.organisation = organisation or contact.organisation
            contact.save()
            known = set(contact.points.values_list("channel", "address"))
            for channel, address in addresses:
                if (channel, address) not in known:
                    ContactPoint(
                        contact=contact, team=team, channel=channel, address=address
                    ).save()
    return rows


def run(size: int, runs: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as media, override_settings(MEDIA_ROOT=media):
        return _run(size, runs, Path(media))


def _run(size: int, runs: int, media: Path) -> list[Figure]:
    team, user = make_team()
    path = media / "kontakte.csv"
    planted = write_file(path, size)
    import_timings, reimport_timings = [], []
    for _run_number in range(runs):
        reset(team.pk, size)
        seeded = Contact.objects.filter(team=team).count()
        started = time.perf_counter()
        first = import_through_product(path, team, user)
        import_timings.append(time.perf_counter() - started)
        import_notes = check_import(first, planted, seeded, team.pk)
        before = database_state(team.pk)
        started = time.perf_counter()
        again = import_through_product(path, team, user)
        reimport_timings.append(time.perf_counter() - started)
        _require(database_state(team.pk) == before, "the re-import changed the database")
        _require(
            (again.created_count, again.updated_count, again.unchanged_count)
            == (
                0,
                0,
                size - len(planted.bad_lines),
            ),
            again,
        )
        _require(report_lines(again) == planted.bad_lines, "re-import report lines differ")
    reimport_notes = {"unchanged": size - len(planted.bad_lines), "database_unchanged": True}

    sample = min(size, NAIVE_SAMPLE)
    reset(team.pk, sample)
    sample_path = media / "stichprobe.csv"
    write_file(sample_path, sample)
    started = time.perf_counter()
    naive_rows = naive_import(sample_path, team, user)
    naive_seconds = time.perf_counter() - started

    return [
        Figure(
            name="CSV import (validate, dedup, report)",
            size=size,
            unit="rows/s",
            median=size / median(import_timings),
            target=IMPORT_TARGET,
            higher_is_better=True,
            runs=[size / t for t in import_timings],
            notes={**import_notes, "seconds": median(import_timings)},
        ),
        Figure(
            name="CSV re-import (all deduplicated, no change)",
            size=size,
            unit="rows/s",
            median=size / median(reimport_timings),
            target=REIMPORT_TARGET,
            higher_is_better=True,
            runs=[size / t for t in reimport_timings],
            notes={**reimport_notes, "seconds": median(reimport_timings)},
        ),
        Figure(
            name="naive CSV import (save() per row)",
            size=naive_rows,
            unit="rows/s",
            median=naive_rows / naive_seconds,
            target=IMPORT_TARGET,
            higher_is_better=True,
            runs=[naive_rows / naive_seconds],
            notes={"sample_rows": naive_rows, "extrapolated_from_sample": True},
        ),
    ]
