"""Refusals of the import, each with a stable code; `field="file"` when the file is at fault."""

from __future__ import annotations

from crm.errors import DomainError


class ImportFileInvalid(DomainError):
    code = "import_file_invalid"


class ImportTransitionRefused(DomainError):
    code = "transition_refused"


class RowInvalid(DomainError):
    code = "row_invalid"
