"""Extension points for apps to the right of crm (consent registers both kinds).

ROW_CHECKS run before a batch is matched, in previews too: each returns {line: reason} for
rows it refuses (e.g. a suppressed address), and those rows are rejected with that reason.

ROW_HOOKS are called once per written batch, inside the batch's transaction (an exception
rolls the batch back and fails the import), with the import and the accepted rows paired with
their contacts, whether created, updated or unchanged. A hook returns warnings as
(line, message) pairs for rows it could not fully apply; they are reported with the import.
A hook reads its own cells from `row.raw` and lists those header names in HOOK_COLUMNS
(compared lower-case, without spaces, '-', '_' or '.') so they are not reported as ignored
columns. Apps append to these lists from their AppConfig.ready(); crm registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm.imports.columns import ImportRow
    from crm.models import Contact, ContactImport, Team

RowCheck = Callable[["Team", list["ImportRow"]], dict[int, str]]
RowHook = Callable[["ContactImport", list[tuple["Contact", "ImportRow"]]], list[tuple[int, str]]]
ROW_CHECKS: list[RowCheck] = []
ROW_HOOKS: list[RowHook] = []
HOOK_COLUMNS: set[str] = set()


def run_checks(team: Team, rows: list[ImportRow]) -> None:
    """Mark the rows a check refuses; rows already refused are not checked again."""
    for check in ROW_CHECKS:
        candidates = [row for row in rows if not row.error]
        if not candidates:
            return
        refused = check(team, candidates)
        if refused:
            for row in candidates:
                reason = refused.get(row.line)
                if reason:
                    row.error = reason


def run_hooks(
    contact_import: ContactImport, accepted: list[tuple[Contact, ImportRow]]
) -> list[tuple[int, str]]:
    warnings: list[tuple[int, str]] = []
    for hook in ROW_HOOKS:
        warnings += hook(contact_import, accepted)
    return warnings
