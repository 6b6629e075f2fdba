"""The review queue of possible withdrawals: free text a human must judge.

Messages such as "bitte keine Nachrichten mehr" are never dropped: inbound handling puts them
in the queue, and a person either records the withdrawal (with a note) or dismisses the entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from consent.models import ConsentAction, ConsentEvent, ConsentSource, Purpose, WithdrawalReview
from consent.services.ledger import Evidence, EvidenceMissing, consent_record
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class ReviewClosed(DomainError):
    code = "review_closed"
    status_code = 409


class ReviewInvalid(DomainError):
    code = "review_invalid"


def _locked_open_review(
    review: WithdrawalReview, actor: AbstractBaseUser | None
) -> WithdrawalReview:
    if actor is not None and not crm_selectors.user_may_write(
        actor, "consent.change_withdrawalreview", review.team_id
    ):
        raise PermissionRefused(_("You may not decide reviews of this team."))
    # Lock: two people working the queue must not both decide the same entry.
    locked = (
        WithdrawalReview.objects.select_for_update().select_related("contact").get(pk=review.pk)
    )
    if locked.status != WithdrawalReview.Status.OPEN:
        raise ReviewClosed(
            _("This entry was already decided: %(status)s.")
            % {"status": locked.get_status_display()}
        )
    return locked


def _purposes_on_channel(review: WithdrawalReview) -> list[Purpose]:
    """Like a STOP keyword: every purpose of the team collected on the message's channel."""
    return [
        purpose
        for purpose in Purpose.objects.filter(team_id=review.team_id).order_by("name")
        if review.channel in (purpose.allowed_channels or [])
    ]


@transaction.atomic
def withdrawal_review_confirm(
    *,
    review: WithdrawalReview,
    actor: AbstractBaseUser | None,
    note: str,
    purposes: Iterable[Purpose] | None = None,
) -> list[ConsentEvent]:
    """Record the withdrawal the message asked for and close the entry.

    Without `purposes` every purpose on the message's channel is withdrawn. The withdrawal
    takes effect when the message arrived, and its evidence is the message plus the note.
    """
    locked = _locked_open_review(review, actor)
    note = (note or "").strip()
    if not note:
        raise EvidenceMissing(_("Say in a note why this message is a withdrawal."), field="note")
    chosen = list(purposes) if purposes is not None else _purposes_on_channel(locked)
    foreign = [purpose.name for purpose in chosen if purpose.team_id != locked.team_id]
    if foreign:
        raise ReviewInvalid(
            _("These purposes belong to another team: %(names)s.") % {"names": ", ".join(foreign)},
            field="purposes",
        )
    if not chosen:
        raise ReviewInvalid(
            _("No purpose of this team is collected on this channel."), field="purposes"
        )
    events = [
        consent_record(
            contact=locked.contact,
            purpose=purpose,
            channel=locked.channel,
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.AGENT,
            evidence=Evidence(
                message_text=locked.text,
                inbound_message_ref=locked.inbound_message_ref,
                note=note,
            ),
            actor=actor,
            occurred_at=locked.created_at,
        )
        for purpose in chosen
    ]
    _close(locked, WithdrawalReview.Status.WITHDRAWN, actor)
    return events


@transaction.atomic
def withdrawal_review_dismiss(
    *, review: WithdrawalReview, actor: AbstractBaseUser | None
) -> WithdrawalReview:
    """Close the entry as not a withdrawal; consent stays as it is."""
    locked = _locked_open_review(review, actor)
    _close(locked, WithdrawalReview.Status.DISMISSED, actor)
    return locked


def _close(review: WithdrawalReview, status: str, actor: AbstractBaseUser | None) -> None:
    review.status = status
    review.decided_by = actor
    review.decided_at = timezone.now()
    review.save(update_fields=["status", "decided_by", "decided_at", "updated_at"])
