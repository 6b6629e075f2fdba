from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = _("Consent")

    def ready(self) -> None:
        # Segment rules gain consent-state conditions; crm must not import consent itself.
        from consent import selectors
        from crm.segments import ConditionType, register_condition

        register_condition(
            "consent",
            ConditionType(
                selectors.CONSENT_CONDITION_OPS,
                selectors.consent_condition_validate,
                selectors.consent_condition_q,
            ),
        )
