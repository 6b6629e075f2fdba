"""The domain error base: every refusal carries a machine-readable code and a readable message."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _


class DomainError(Exception):
    """A business rule refused an operation. Nothing was written.

    `code` is stable and machine readable (API clients branch on it); `message` is for people;
    `field` names the input that caused it, so the API can answer with field errors.
    """

    code = "domain_error"
    status_code = 400

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = str(message or _("The operation was refused."))
        self.field = field
        super().__init__(self.message)

    def field_errors(self) -> dict[str, list[str]]:
        """Messages per input field, for the API's 400 body (subclasses may name several)."""
        return {self.field: [self.message]} if self.field else {}

    def response_data(self) -> dict[str, Any]:
        """Further machine-readable facts for the API's error body (e.g. the send gate's
        decision); none by default."""
        return {}


class NotFoundInScope(DomainError):
    code = "not_found"
    status_code = 404


class PermissionRefused(DomainError):
    code = "permission_denied"
    status_code = 403
