from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        # Messages join the consent app's access export, erasure and retention registries;
        # consent changes become outbound events; the demo gains conversations.
        from consent.signals import consent_changed
        from crm.demo import register_demo_step
        from messaging import demo, privacy, receivers

        privacy.register()
        register_demo_step(demo.DEMO_STEP)
        consent_changed.connect(receivers.publish_consent_changed, dispatch_uid="messaging-consent")
