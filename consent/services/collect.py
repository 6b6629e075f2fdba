"""Consent and suppressions handed in by people and integrations (API, admin).

Thin front doors to the ledger: they decide which ledger service applies and check the
caller's role and team, so the API and the admin behave the same.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils.translation import gettext_lazy as _

from consent.models import ConsentAction, ConsentEvent, Purpose, Suppression
from consent.services.double_opt_in import opt_in_request
from consent.services.ledger import ConsentInvalid, Evidence, consent_record, suppression_add
from crm import selectors as crm_selectors
from crm.addresses import normalise_address
from crm.errors import PermissionRefused
from crm.models import Contact, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

# What a form or an integration may report; `confirmed` comes only from double opt-in and
# `expired` only from the expiry task.
COLLECTABLE_ACTIONS = frozenset(
    {ConsentAction.GRANTED, ConsentAction.WITHDRAWN, ConsentAction.REQUESTED}
)


@transaction.atomic
def consent_collect(
    *,
    contact: Contact,
    purpose: Purpose,
    channel: str,
    action: str,
    source: str,
    evidence: Evidence,
    actor: AbstractBaseUser | None,
    occurred_at: dt.datetime | None = None,
) -> ConsentEvent:
    """Record consent reported by a form or integration.

    A grant on a channel that needs double opt-in (UWG §7) starts a double opt-in round
    instead, so the contact gets the confirmation message rather than a grant that can never
    be confirmed. Returns the event written (`requested` in that case).
    """
    if action not in COLLECTABLE_ACTIONS:
        raise ConsentInvalid(
            _("The action must be one of: %(actions)s.")
            % {"actions": ", ".join(sorted(COLLECTABLE_ACTIONS))},
            field="action",
        )
    if purpose.team_id != contact.team_id:
        raise ConsentInvalid(_("The purpose belongs to another team."), field="purpose")
    if action == ConsentAction.REQUESTED or (
        action == ConsentAction.GRANTED and purpose.needs_double_opt_in(channel)
    ):
        request = opt_in_request(
            contact=contact,
            purpose=purpose,
            channel=channel,
            evidence=evidence,
            source=source,
            actor=actor,
            occurred_at=occurred_at,
        )
        return request.request_event
    return consent_record(
        contact=contact,
        purpose=purpose,
        channel=channel,
        action=action,
        source=source,
        evidence=evidence,
        actor=actor,
        occurred_at=occurred_at,
    )


@transaction.atomic
def suppression_add_manual(
    *,
    team: Team,
    channel: str,
    address: str,
    actor: AbstractBaseUser | None,
    note: str = "",
    reason: str = Suppression.Reason.MANUAL,
) -> Suppression:
    """Suppress an address a user typed in: normalised, then stored only as its hash.

    Suppression applies to every team; `team` records who added it.
    """
    if actor is not None and not crm_selectors.user_may_write(
        actor, "consent.add_suppression", team
    ):
        raise PermissionRefused(_("You may not add suppressions for this team."))
    if reason not in Suppression.Reason.values:
        raise ConsentInvalid(_("Unknown reason."), field="reason")
    normalised = normalise_address(channel, address)
    return suppression_add(
        address=normalised, channel=channel, reason=reason, team=team, note=note.strip()[:255]
    )
