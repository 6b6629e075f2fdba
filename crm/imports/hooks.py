"""Extension point for per-row extras, e.g. consent evidence columns (a later issue).

Each hook in ROW_HOOKS is called once per written batch, inside the batch's transaction (an
exception rolls the batch back and fails the import), with the import and the accepted rows
paired with their contacts, whether created, updated or unchanged. A hook reads its own cells
from `row.raw` and lists those header names in HOOK_COLUMNS (compared lower-case, without
spaces, '-', '_' or '.') so they are not reported as ignored columns. Apps to the right of crm
append to both lists from their AppConfig.ready(); crm itself registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm.imports.columns import ImportRow
    from crm.models import Contact, ContactImport

RowHook = Callable[["ContactImport", list[tuple["Contact", "ImportRow"]]], None]
ROW_HOOKS: list[RowHook] = []
HOOK_COLUMNS: set[str] = set()


def run_hooks(contact_import: ContactImport, accepted: list[tuple[Contact, ImportRow]]) -> None:
    for hook in ROW_HOOKS:
        hook(contact_import, accepted)
