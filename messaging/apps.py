from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        # Messages join the consent app's access export, erasure and retention registries.
        from crm.demo import register_demo_step
        from messaging import demo, privacy

        privacy.register()
        register_demo_step(demo.DEMO_STEP)
