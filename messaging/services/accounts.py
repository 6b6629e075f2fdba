"""Channel accounts: validation and the credentials read from the environment."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from crm.models import Team
from messaging.errors import ChannelAccountInvalid
from messaging.models import PROVIDER_CHANNELS, PROVIDER_CREDENTIALS, ChannelAccount
from messaging.models.channels import ENV_PREFIX_RE


def account_credentials(account: ChannelAccount) -> dict[str, str]:
    """The account's secrets as the adapter expects them, read now from the environment."""
    credentials: dict[str, str] = {}
    if account.provider == "whatsapp_cloud" and account.external_id:
        credentials["phone_number_id"] = account.external_id
    if account.provider == "twilio_sms" and account.external_id:
        credentials["account_sid"] = account.external_id
    if account.provider == "twilio_sms" and account.address:
        credentials["from_number"] = account.address
    if account.provider == "smtp_email" and account.address:
        credentials["from_email"] = account.address
    prefix = account.credentials_env
    for name in PROVIDER_CREDENTIALS.get(account.provider, ()):
        value = os.environ.get(f"{prefix}_{name.upper()}", "") if prefix else ""
        if value:
            credentials[name] = value.rstrip("\n")
    return credentials


def account_fields_validate(*, provider: str, channel: str, credentials_env: str) -> None:
    """The provider speaks the channel; the environment prefix is a valid variable name."""
    if channel not in PROVIDER_CHANNELS.get(provider, frozenset()):
        raise ChannelAccountInvalid(
            _("The provider “%(provider)s” cannot send on the channel “%(channel)s”.")
            % {"provider": provider, "channel": channel},
            field="channel",
        )
    if credentials_env and not ENV_PREFIX_RE.fullmatch(credentials_env):
        raise ChannelAccountInvalid(
            _("Use upper-case letters, digits and underscores, e.g. WHATSAPP_MAIN."),
            field="credentials_env",
        )


@transaction.atomic
def channel_account_create(
    *, team: Team, actor: AbstractBaseUser | None, **fields: Any
) -> ChannelAccount:
    """Create a sender for a team (managers with messaging.add_channelaccount)."""
    if actor is not None and not crm_selectors.user_may_write(
        actor, "messaging.add_channelaccount", team
    ):
        raise PermissionRefused(_("You may not add channel accounts to this team."))
    account = ChannelAccount(team=team, **fields)
    account_fields_validate(
        provider=account.provider, channel=account.channel, credentials_env=account.credentials_env
    )
    account.full_clean()
    account.save()
    return account
