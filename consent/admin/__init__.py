"""Admin of the consent app: purposes, consent texts, the ledger, the per-contact consent panel,
the suppression list and the review queue of possible withdrawals.

Thin by design: querysets come from `consent.selectors` (other teams' rows are 404), forms
check input with the services' own validators, and every write goes through
`consent.services`. The ledger and the projection are read-only; consent changes are recorded on
the per-contact panel (/admin/consent/consent/contact/<id>/) with a mandatory note.
Importing this package registers every consent admin, data-subject requests included.
"""

from __future__ import annotations

# Data-subject requests and retention have their own admin module; importing registers them.
from consent import admin_subjects  # noqa: F401

# isort: split
from consent.admin.consents import ConsentAdmin, ConsentEventAdmin, RecordConsentForm
from consent.admin.purposes import (
    ConsentTextAdmin,
    ConsentTextForm,
    PurposeAdmin,
    PurposeForm,
    VisiblePurposeFilter,
)
from consent.admin.reviews import ConfirmWithdrawalForm, DismissForm, WithdrawalReviewAdmin
from consent.admin.suppressions import SuppressionAddForm, SuppressionAdmin

__all__ = [
    "ConfirmWithdrawalForm",
    "ConsentAdmin",
    "ConsentEventAdmin",
    "ConsentTextAdmin",
    "ConsentTextForm",
    "DismissForm",
    "PurposeAdmin",
    "PurposeForm",
    "RecordConsentForm",
    "SuppressionAddForm",
    "SuppressionAdmin",
    "VisiblePurposeFilter",
    "WithdrawalReviewAdmin",
]
