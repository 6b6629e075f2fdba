"""message_send: the only way a message is accepted for sending (and notes are written).

Accepting means: the send gate allowed it, the message and its outbox row are written in one
transaction with the conversation's chain event, and delivery starts after commit. A refusal
raises SendRefused and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Final

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from kombu.exceptions import OperationalError as KombuOperationalError

from approvals.models import TemplateVersion
from approvals.rendering import contact_context, render
from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from crm.models import Contact
from messaging.errors import MessageInvalid, SendRefused
from messaging.models import (
    ChannelAccount,
    Conversation,
    Direction,
    Message,
    MessageKind,
    MessageStatus,
    OutboxEntry,
    SenderKind,
)

# Module import: conversations reaches message_send through automation (bot replies).
from messaging.services import conversations
from messaging.services.gate import GateDecision, SendRequest, send_gate_evaluate
from messaging.services.ledger import conversation_for, message_record

logger = logging.getLogger(__name__)

TEXT_MAX_CHARS: Final = 4096
SEND_PERM: Final = "messaging.add_message"
# How old a decision handed to message_send may be. Delivery asks the gate again when it
# claims the message, so a consent withdrawn since then still stops it.
DECISION_MAX_AGE: Final = dt.timedelta(minutes=5)


def _ensure_may_send(actor: AbstractBaseUser | None, contact: Contact) -> None:
    if actor is not None and not crm_selectors.user_may_write(actor, SEND_PERM, contact.team_id):
        raise PermissionRefused(_("You may not send messages for this team."))


def _rendered(
    *,
    contact: Contact,
    account: ChannelAccount,
    version: TemplateVersion | None,
    variables: Mapping[str, Any],
    text: str,
    subject: str,
) -> tuple[str, str, dict[str, Any]]:
    """(subject, body, variables) as the recipient will read them; template errors are 400s.

    For templates, `variables` are the values each placeholder received: the record of
    what was said, and the parameters WhatsApp needs to render the template itself.
    """
    if version is None:
        text = (text or "").strip()
        if not text:
            raise MessageInvalid(_("Write a text or choose a template."), field="text")
        if len(text) > TEXT_MAX_CHARS:
            raise MessageInvalid(
                _("The text is longer than %(max)d characters.") % {"max": TEXT_MAX_CHARS},
                field="text",
            )
        return subject.strip(), text, dict(variables)
    purpose = version.template.purpose
    context = contact_context(
        contact,
        purpose=purpose,
        channel=account.channel if purpose is not None else None,
        extra={key: str(value) for key, value in variables.items()},
    )
    rendered = render(version, context)
    body = "\n\n".join(part for part in (rendered.header, rendered.body, rendered.footer) if part)
    used = {name: str(context[name]) for name in version.variables if name in context}
    return rendered.subject, body, used


def dispatch_on_commit(message_id: int) -> None:
    """Start delivery once the transaction commits; a broker outage only delays it."""

    def dispatch() -> None:
        from messaging.tasks import deliver_message as deliver_message_task

        try:
            deliver_message_task.delay(message_id)
        except (KombuOperationalError, OSError):
            # The outbox row is committed: the periodic dispatcher sends it when the lease ends.
            logger.warning("message %s: broker unavailable, left to the outbox", message_id)

    transaction.on_commit(dispatch)


def lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.MESSAGING_OUTBOX_LEASE_SECONDS)


@transaction.atomic
def message_send(
    *,
    contact: Contact,
    account: ChannelAccount,
    actor: AbstractBaseUser | None,
    sender_kind: str = SenderKind.AGENT,
    template_version: TemplateVersion | None = None,
    variables: Mapping[str, Any] | None = None,
    text: str = "",
    subject: str = "",
    due_at: dt.datetime | None = None,
    address: str | None = None,
    opt_in_confirmation: bool = False,
    origin: str = "",
    decision: GateDecision | None = None,
) -> Message:
    """Ask the send gate and, if it allows, accept the message for delivery.

    Every outbound path calls this. Refused: raises SendRefused (nothing written). Allowed:
    the message (status `queued`, or `scheduled` when due later or deferred by quiet hours),
    its outbox row and its chain event are written together; delivery starts after commit.
    `decision` is the gate's answer already made for this very request moments ago (campaign
    batches decide a whole batch in one go); any other decision is ignored and the gate asked.
    """
    _ensure_may_send(actor, contact)
    variables = dict(variables or {})
    if template_version is not None:
        template_version = TemplateVersion.objects.select_related(
            "template", "template__purpose"
        ).get(pk=template_version.pk)
    now = timezone.now()
    if due_at is not None and due_at < now:
        due_at = None
    conversation = conversation_for(contact=contact, account=account)
    request = SendRequest(
        contact=contact,
        account=account,
        template_version=template_version,
        conversation=conversation,
        address=address,
        opt_in_confirmation=opt_in_confirmation,
    )
    at = due_at or now
    if decision is None or not _answers(decision, request, at):
        decision = send_gate_evaluate(request, at=at)
    if not decision.allowed:
        raise SendRefused(decision)
    message_subject, body, variables = _rendered(
        contact=contact,
        account=account,
        version=template_version,
        variables=variables,
        text=text,
        subject=subject,
    )
    due = max(filter(None, (due_at, decision.deferred_until)), default=None)
    message = message_record(
        conversation=conversation,
        actor=actor,
        label=sender_kind,
        direction=Direction.OUTBOUND,
        kind=MessageKind.TEMPLATE if template_version else MessageKind.TEXT,
        template_version=template_version,
        purpose=template_version.template.purpose if template_version else None,
        variables=variables,
        subject=message_subject,
        body=body,
        sender_kind=sender_kind,
        origin=origin,
        gate_decision=_decision_record(decision, opt_in_confirmation, address),
        status=MessageStatus.SCHEDULED if due else MessageStatus.QUEUED,
        due_at=due,
    )
    if sender_kind == SenderKind.AGENT and actor is not None:
        conversations.conversation_agent_replied(conversation=conversation, actor=actor, at=now)
    # Immediate sends are dispatched on commit; the row's due time is the safety net.
    OutboxEntry.objects.create(message=message, due_at=due or now + lease())
    if due is None:
        dispatch_on_commit(message.pk)
    return message


def _answers(decision: GateDecision, request: SendRequest, at: dt.datetime) -> bool:
    """Whether `decision` was made for the same question, recently enough to stand for `at`."""
    return (
        decision.request is not None
        and decision.request.question == request.question
        and decision.decided_at is not None
        and dt.timedelta(0) <= at - decision.decided_at <= DECISION_MAX_AGE
    )


def _decision_record(
    decision: GateDecision, opt_in_confirmation: bool, address: str | None
) -> dict[str, Any]:
    record = decision.as_record()
    # What delivery needs to re-ask the gate the same question later.
    record["request"] = {"opt_in_confirmation": opt_in_confirmation, "address": address}
    return record


@transaction.atomic
def conversation_note_add(
    *, conversation: Conversation, actor: AbstractBaseUser, text: str
) -> Message:
    """An internal note on the conversation's timeline; never sent to the contact."""
    _ensure_may_send(actor, conversation.contact)
    text = (text or "").strip()
    if not text:
        raise MessageInvalid(_("A note needs a text."), field="text")
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    return message_record(
        conversation=locked,
        actor=actor,
        direction=Direction.NOTE,
        kind=MessageKind.TEXT,
        body=text,
        sender_kind=SenderKind.AGENT,
        status=MessageStatus.RECEIVED,
    )
