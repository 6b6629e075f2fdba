"""The import services: create (upload), start (queue), preview (dry run), run (engine),
import_file (the management command) and write_report."""

from __future__ import annotations

import csv
import gc
import io
import itertools
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core.files import File
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from crm import selectors
from crm.errors import DomainError, PermissionRefused
from crm.exports import csv_safe
from crm.imports import engine, hooks
from crm.imports.columns import ColumnMap, ImportRow, parse_row, resolve_columns
from crm.imports.engine import CREATED, REJECTED, UNCHANGED, UPDATED, RowResult, TeamTags
from crm.imports.errors import ImportFileInvalid, ImportTransitionRefused
from crm.imports.files import Source, as_binary, file_extension, open_import_file, open_source
from crm.imports.pipeline import parsed_batches
from crm.models import (
    IMPORT_TRANSITIONS,
    Contact,
    ContactImport,
    ContactPoint,
    ImportRejection,
    ImportStatus,
    Team,
)
from crm.planner import GrowthAnalyzer, prefer_index_probes

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

# Per batch: a dozen queries, one commit, one progress update; its rows' cells in memory.
BATCH_SIZE: Final = 5000
PREVIEW_ROWS: Final = 20
ALLOWED_EXTENSIONS: Final = (".csv", ".xlsx")
IMPORT_PERMISSION: Final = "crm.add_contactimport"


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
    if file_extension(name) not in ALLOWED_EXTENSIONS:
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
    binary = as_binary(uploaded_file)
    binary.seek(0)
    with open_source(binary, name) as source:
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
    with open_import_file(contact_import, count=False) as source:
        columns = resolve_columns(source.header)
        rows = [
            parse_row(line, cells, columns) for line, cells in itertools.islice(source.rows, limit)
        ]
        fmt, delimiter, encoding = source.format, source.delimiter, source.encoding
    plan = engine.plan_batch(contact_import.team, TeamTags(contact_import.team), rows, lock=False)
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


# Collect young objects after this many allocations instead of 700 (see _few_collections).
_YOUNG_GENERATION_THRESHOLD: Final = 50_000


@contextmanager
def _few_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while batches are processed.

    A batch allocates hundreds of thousands of objects (rows, their cells, contacts, sets)
    that all live until the batch is written. With the default threshold the collector
    traverses them again and again on the way, which costs a third of the import's Python
    time; collecting every 50,000 allocations still frees cycles batch by batch.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(_YOUNG_GENERATION_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class _Superseded(Exception):
    """Another run of the same import moved on: this one stops without touching anything."""


def _run_batches(
    contact_import: ContactImport,
    source: Source,
    columns: ColumnMap,
    *,
    progress: Callable[[ContactImport], None] | None,
    batch_size: int,
) -> None:
    team = contact_import.team
    actor = contact_import.created_by
    tags = TeamTags(team)
    growth = GrowthAnalyzer(Contact, ContactPoint, Contact.tags.through)
    # A re-run resumes after the rows whose batches were committed.
    rows = itertools.islice(source.rows, contact_import.processed_rows, None)
    with parsed_batches(rows, columns, batch_size) as batches:
        for parsed in batches:
            _run_batch(contact_import, parsed, tags, growth, actor=actor)
            if progress is not None:
                progress(contact_import)


def _run_batch(
    contact_import: ContactImport,
    parsed: list[ImportRow],
    tags: TeamTags,
    growth: GrowthAnalyzer,
    *,
    actor: AbstractBaseUser | None,
) -> None:
    """Match, write and count one batch in one transaction (with its progress counters)."""
    team = contact_import.team
    with transaction.atomic():
        locked = ContactImport.objects.select_for_update().get(pk=contact_import.pk)
        if (
            locked.status != ImportStatus.RUNNING
            or locked.processed_rows != contact_import.processed_rows
        ):
            raise _Superseded
        prefer_index_probes()
        plan = engine.plan_batch(team, tags, parsed, lock=True)
        written = engine.apply_plan(locked, tags, plan, actor)
        warnings = hooks.run_hooks(locked, engine.accepted_rows(plan))
        if warnings:
            raws = {row.line: row.raw for row, _result, _target in plan.results}
            ImportRejection.objects.bulk_create(
                ImportRejection(
                    contact_import=locked,
                    line_number=line,
                    reason=message[:500],
                    raw=raws.get(line, {}),
                    is_warning=True,
                )
                for line, message in warnings
            )
            locked.warning_count += len({line for line, _message in warnings})
        outcomes = [result.outcome for _row, result, _target in plan.results]
        locked.processed_rows += len(parsed)
        locked.created_count += outcomes.count(CREATED)
        locked.updated_count += outcomes.count(UPDATED)
        locked.unchanged_count += outcomes.count(UNCHANGED)
        locked.rejected_count += outcomes.count(REJECTED)
        locked.save(update_fields=[*_COUNTERS, "warning_count", "updated_at"])
    for name in (*_COUNTERS, "warning_count"):
        setattr(contact_import, name, getattr(locked, name))
    # The next batches' lookups are planned for the tables as they have grown by now.
    growth.added(written)
    growth.analyze_grown()


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
        with open_import_file(contact_import, count=True) as source:
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
            with _few_collections():
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
    if contact_import.rejected_count or contact_import.warning_count:
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
    """The rejected-rows report as CSV: line number, reason, then the original row (warnings
    too: rows imported with something left out).

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
