from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = _("Consent")

    def ready(self) -> None:
        # Segment rules and imports gain consent; crm must not import consent itself.
        from consent import demo, imports, selectors
        from crm.demo import register_demo_step
        from crm.imports import hooks
        from crm.segments import ConditionType, register_condition

        register_demo_step(demo.DEMO_STEP)
        hooks.ROW_CHECKS.append(imports.refuse_suppressed)
        hooks.ROW_HOOKS.append(imports.record_import_consent)
        hooks.HOOK_COLUMNS.update(imports.CONSENT_COLUMNS)

        register_condition(
            "consent",
            ConditionType(
                selectors.CONSENT_CONDITION_OPS,
                selectors.consent_condition_validate,
                selectors.consent_condition_q,
            ),
        )
