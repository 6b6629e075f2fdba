from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _sync_roles_after_migrate(sender: AppConfig, **kwargs: Any) -> None:
    from crm.services import roles_sync

    roles_sync(using=kwargs.get("using", "default"))


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = _("Contacts")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Runs after every app's migrations, so permissions created by later apps reach roles.
        post_migrate.connect(_sync_roles_after_migrate, dispatch_uid="crm.sync_roles")
