from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = _("Consent")

    def ready(self) -> None:
        # Segment rules and imports gain consent; crm must not import consent itself.
        # Connects consent's receivers of crm signals (the audience columns of the projection).
        from consent import demo, imports, receivers, selectors  # noqa: F401
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
