from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        # Messages join the consent app's access export, erasure and retention registries;
        # consent changes become outbound events; the demo gains conversations.
        from django.db.models.signals import post_delete, post_save

        from consent.signals import consent_changed
        from crm.demo import register_demo_step
        from messaging import demo, privacy, receivers
        from messaging.models import ChannelAccount

        privacy.register()
        register_demo_step(demo.DEMO_STEP)
        consent_changed.connect(receivers.publish_consent_changed, dispatch_uid="messaging-consent")
        for signal in (post_save, post_delete):
            signal.connect(
                receivers.forget_webhook_accounts,
                sender=ChannelAccount,
                dispatch_uid=f"messaging-webhook-accounts-{signal is post_save}",
            )
