"""Contact import: CSV/XLSX files in, deduplicated contacts out, every rejected row reported.

The engine streams the file (files.py) and works in batches of BATCH_SIZE rows. Each row is
validated and normalised without queries (columns.py). Each batch costs a fixed number of
queries whatever its size (engine.py): one lookup of the owners of its keys (external ids,
addresses; one UNION ALL arm per kind), each sending its keys as one array parameter on
PostgreSQL (lookups.py), bulk inserts and updates, history rows in bulk (bulk_create sends no
signals), tag links and rejections in bulk, and one progress update. Matched contacts are
loaded without Model.__init__ and without their timestamps (writes.load), and the garbage
collector runs less often during a run. New contacts and contact points go in with COPY on
PostgreSQL, their history rows copied from them by the database, and with simple-history's
bulk_create_with_history elsewhere (writes.py); phone numbers in the usual spellings skip
phonenumbers.parse (phones.py), with the same results. A batch is one transaction that also
moves `processed_rows`, so a crashed import keeps its finished batches and a re-run resumes
right after them (services.py). While a batch is written, a thread reads and parses the next
one (pipeline.py). Rows are matched on external id, then e-mail, then phone number; updates
only fill in what a row provides, so importing a file twice changes nothing the second time.
hooks.py is the extension point for per-row extras such as consent evidence.

Callers import the public API from here.
"""

from __future__ import annotations

from crm.imports.columns import ColumnMap, ImportRow, parse_row, resolve_columns
from crm.imports.engine import CREATED, REJECTED, UNCHANGED, UPDATED, RowResult
from crm.imports.errors import ImportFileInvalid, ImportTransitionRefused, RowInvalid
from crm.imports.hooks import HOOK_COLUMNS, ROW_HOOKS, RowHook
from crm.imports.services import (
    ALLOWED_EXTENSIONS,
    BATCH_SIZE,
    IMPORT_PERMISSION,
    PREVIEW_ROWS,
    ImportPreview,
    contact_import_create,
    contact_import_preview,
    contact_import_run,
    contact_import_start,
    import_file,
    write_report,
)

__all__ = [
    "ALLOWED_EXTENSIONS",
    "BATCH_SIZE",
    "CREATED",
    "HOOK_COLUMNS",
    "IMPORT_PERMISSION",
    "PREVIEW_ROWS",
    "REJECTED",
    "ROW_HOOKS",
    "UNCHANGED",
    "UPDATED",
    "ColumnMap",
    "ImportFileInvalid",
    "ImportPreview",
    "ImportRow",
    "ImportTransitionRefused",
    "RowHook",
    "RowInvalid",
    "RowResult",
    "contact_import_create",
    "contact_import_preview",
    "contact_import_run",
    "contact_import_start",
    "import_file",
    "parse_row",
    "resolve_columns",
    "write_report",
]
