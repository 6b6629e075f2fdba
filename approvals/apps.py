from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = _("Approvals")

    def ready(self) -> None:
        # Demo data joins crm's seed command; crm must not import approvals itself.
        from approvals import demo
        from crm.demo import register_demo_step

        register_demo_step(demo.DEMO_STEP)
