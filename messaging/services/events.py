"""Outbound event webhooks: subscriptions, publishing events, signed delivery with retries.

Deliveries follow the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256>`), so integrators verify them with its libraries.
Publishing only writes rows in the caller's transaction; the network is touched only by the
delivery task after commit, so a subscriber that is down never slows or breaks messaging.
Payloads carry ids and states, never message bodies or addresses: integrators read those
through the API with their own permissions.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from kombu.exceptions import OperationalError as KombuOperationalError

from consent.models import ConsentEvent
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from messaging.models import DeliveryStatus, EventType, WebhookDelivery, WebhookSubscription
from messaging.models.integration import SECRET_PREFIX
from messaging.services.urlsafety import UnsafeUrl, url_safety_check

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.contrib.auth.models import AbstractBaseUser

    from crm.models import Team
    from messaging.models import Conversation, Message

logger = logging.getLogger(__name__)

ADD_PERM = "messaging.add_webhooksubscription"
CHANGE_PERM = "messaging.change_webhooksubscription"


class SubscriptionInvalid(DomainError):
    code = "webhook_subscription_invalid"


def webhook_sign(*, secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value for one delivery (Standard Webhooks, v1)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _event_types_check(event_types: list[str]) -> list[str]:
    known = set(EventType.values)
    unknown = sorted(set(event_types) - known)
    if not event_types or unknown:
        raise SubscriptionInvalid(
            _("Choose event types among %(known)s; unknown: %(unknown)s.")
            % {"known": ", ".join(sorted(known)), "unknown": ", ".join(unknown) or "-"},
            field="event_types",
        )
    return sorted(set(event_types))


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team_id: int) -> None:
    if actor is not None and not (
        actor.is_superuser or crm_selectors.user_may_write(actor, perm, team_id)
    ):
        raise PermissionRefused(_("You may not manage webhook subscriptions of this team."))


@transaction.atomic
def webhook_subscription_create(
    *,
    team: Team,
    url: str,
    event_types: list[str],
    owner: AbstractBaseUser,
    actor: AbstractBaseUser | None,
    description: str = "",
) -> WebhookSubscription:
    """Register an integrator's URL; it must be https and resolve to public addresses only.

    The generated signing secret is on the returned object: show it to the caller once.
    """
    _ensure_may(actor, ADD_PERM, team.pk)
    url_safety_check(url=url)
    subscription = WebhookSubscription(
        team=team,
        url=url,
        event_types=_event_types_check(event_types),
        owner=owner,
        description=description,
    )
    if actor is not None:
        subscription._history_user = actor
    subscription.save()
    return subscription


@transaction.atomic
def webhook_subscription_update(
    *, subscription: WebhookSubscription, actor: AbstractBaseUser | None, **changes: Any
) -> WebhookSubscription:
    """Change url, event types or description; a new URL is checked like a new one."""
    _ensure_may(actor, CHANGE_PERM, subscription.team_id)
    locked = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    fields = []
    if "url" in changes and changes["url"] != locked.url:
        url_safety_check(url=changes["url"])
        locked.url = changes["url"]
        fields.append("url")
    if "event_types" in changes:
        locked.event_types = _event_types_check(changes["event_types"])
        fields.append("event_types")
    if "description" in changes:
        locked.description = changes["description"]
        fields.append("description")
    if fields:
        if actor is not None:
            locked._history_user = actor
        locked.save(update_fields=[*fields, "updated_at"])
    return locked


@transaction.atomic
def webhook_subscription_enable(
    *, subscription: WebhookSubscription, actor: AbstractBaseUser | None
) -> WebhookSubscription:
    """Re-enable a disabled subscription (after the integrator fixed their endpoint)."""
    _ensure_may(actor, CHANGE_PERM, subscription.team_id)
    locked = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    url_safety_check(url=locked.url)
    locked.is_active = True
    locked.failure_count = 0
    locked.disabled_at = None
    locked.disabled_reason = ""
    if actor is not None:
        locked._history_user = actor
    locked._change_reason = "re-enabled"
    locked.save(
        update_fields=[
            "is_active",
            "failure_count",
            "disabled_at",
            "disabled_reason",
            "updated_at",
        ]
    )
    return locked


def event_publish(*, team_id: int, event_type: str, data: dict[str, Any]) -> int:
    """Queue one event for every active subscription of the team that wants it.

    Rows are written in the caller's transaction (an event of a rolled-back change is never
    sent); delivery runs after commit. Returns the number of deliveries queued.
    """
    return events_publish(team_id=team_id, event_type=event_type, data=[data])


def events_publish(*, team_id: int, event_type: str, data: Iterable[dict[str, Any]]) -> int:
    """`event_publish` for several events of one type: the subscriptions are read once, and
    `data` (which may be a generator) is only built when someone subscribed."""
    subscriptions = [
        subscription
        for subscription in WebhookSubscription.objects.filter(team_id=team_id, is_active=True)
        if subscription.wants(event_type)
    ]
    if not subscriptions:
        return 0
    data = list(data)
    if not data:
        return 0
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            subscription=subscription,
            event_id=f"msg_{uuid.uuid4().hex}",
            event_type=event_type,
            payload={"type": event_type, "timestamp": now.isoformat(), "data": item},
            next_attempt_at=now,
        )
        for item in data
        for subscription in subscriptions
    )
    for delivery in deliveries:
        transaction.on_commit(partial(_dispatch, delivery.pk))
    return len(deliveries)


def _dispatch(delivery_id: int) -> None:
    from messaging.tasks import deliver_webhook as deliver_webhook_task

    try:
        deliver_webhook_task.delay(delivery_id)
    except (KombuOperationalError, OSError):
        # A broker outage must not fail the message that caused the event; the periodic
        # sweep (webhook_deliveries_due) sends the pending delivery later.
        logger.warning("Webhook delivery %s not queued: broker unavailable", delivery_id)


def message_received_publish(*, message: Message) -> int:
    return event_publish(
        team_id=message.team_id,
        event_type=EventType.MESSAGE_RECEIVED,
        data={
            "message": message.pk,
            "conversation": message.conversation_id,
            "contact": message.contact_id,
            "account": message.account_id,
            "channel": message.channel,
            "kind": message.kind,
            "created_at": _iso(message.created_at),
        },
    )


def message_status_publish(*, message: Message) -> int:
    return event_publish(
        team_id=message.team_id,
        event_type=EventType.MESSAGE_STATUS,
        data={
            "message": message.pk,
            "conversation": message.conversation_id,
            "contact": message.contact_id,
            "status": message.status,
            "error_code": message.error_code,
        },
    )


def consent_changed_publish(*, events: list[ConsentEvent]) -> int:
    """Consent events were recorded: ids, purpose key, channel, action and source of each."""
    by_team: dict[int, list[ConsentEvent]] = {}
    for event in events:
        by_team.setdefault(event.team_id, []).append(event)
    return sum(
        events_publish(
            team_id=team_id,
            event_type=EventType.CONSENT_CHANGED,
            data=(
                {
                    "contact": event.contact_id,
                    "purpose": event.purpose.key,
                    "channel": event.channel,
                    "action": event.action,
                    "source": event.source,
                    "consent_event": event.pk,
                    "occurred_at": _iso(event.occurred_at),
                }
                for event in team_events
            ),
        )
        for team_id, team_events in sorted(by_team.items())
    )


def conversation_handed_off_publish(*, conversation: Conversation, reason: str) -> int:
    return event_publish(
        team_id=conversation.team_id,
        event_type=EventType.CONVERSATION_HANDED_OFF,
        data={
            "conversation": conversation.pk,
            "contact": conversation.contact_id,
            "account": conversation.account_id,
            "reason": reason,
            "handed_off_at": _iso(conversation.handed_off_at),
        },
    )


@transaction.atomic
def webhook_deliveries_claim_lost(*, now: dt.datetime | None = None) -> list[int]:
    """Pending deliveries whose task is overdue by a lease (broker outage, worker gone).

    Each is claimed for one more lease, so overlapping sweeps do not queue it twice.
    """
    now = now or timezone.now()
    lease = dt.timedelta(seconds=settings.MESSAGING_OUTBOX_LEASE_SECONDS)
    lost = list(
        WebhookDelivery.objects.select_for_update(skip_locked=True)
        .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - lease)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:500]
    )
    WebhookDelivery.objects.filter(pk__in=lost).update(next_attempt_at=now)
    return lost


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _backoff(attempts: int) -> int:
    return min(
        settings.MESSAGING_WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempts - 1),
        settings.MESSAGING_RETRY_MAX_SECONDS,
    )


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """Send once; returns (HTTP status or None, error text). Never raises."""
    subscription = delivery.subscription
    try:
        # Checked again now: the host may resolve elsewhere than at registration.
        url_safety_check(url=subscription.url)
    except UnsafeUrl as exc:
        return None, exc.message
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
    timestamp = int(timezone.now().timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_sign(
            secret=subscription.secret, msg_id=delivery.event_id, timestamp=timestamp, body=body
        ),
    }
    timeout = httpx.Timeout(settings.MESSAGING_WEBHOOK_TIMEOUT, connect=5.0)
    try:
        # No redirects: a 3xx to an internal address would get round the URL check.
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("POST", subscription.url, content=body.encode(), headers=headers) as rsp,
        ):
            status = rsp.status_code
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    return status, "" if 200 <= status < 300 else f"HTTP {status}"


def webhook_delivery_attempt(*, delivery_id: int) -> int | None:
    """Try one pending delivery once; returns seconds until the next try, or None when done.

    Webhooks are at-least-once: a redelivered task may send again, and receivers deduplicate
    by `webhook-id`. After the last failed try the subscription's failure count rises, and
    MESSAGING_WEBHOOK_DISABLE_AFTER failed deliveries in a row disable it.
    """
    delivery = WebhookDelivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    if not delivery.subscription.is_active:
        return _record(delivery_id, None, _("The subscription is disabled."), final=True)
    status, error = _post(delivery)
    return _record(delivery_id, status, error, final=False)


@transaction.atomic
def _record(delivery_id: int, status: int | None, error: str, *, final: bool) -> int | None:
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return None
    now = timezone.now()
    succeeded = not error
    if not final:
        delivery.attempts += 1
    delivery.last_status_code = status
    delivery.last_error = error
    retry_in = None
    if succeeded:
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif final or delivery.attempts >= settings.MESSAGING_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
    else:
        retry_in = _backoff(delivery.attempts)
        delivery.next_attempt_at = now + dt.timedelta(seconds=retry_in)
    delivery.save()
    if succeeded:
        _subscription_succeeded(delivery.subscription_id)
    elif delivery.status == DeliveryStatus.FAILED and not final:
        _subscription_failed(delivery.subscription_id, now)
    return retry_in


def _subscription_succeeded(subscription_id: int) -> None:
    subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription_id)
    if subscription.failure_count:
        subscription.failure_count = 0
        subscription.save(update_fields=["failure_count", "updated_at"])


def _subscription_failed(subscription_id: int, now: dt.datetime) -> None:
    subscription = (
        WebhookSubscription.objects.select_for_update()
        .select_related("owner")
        .get(pk=subscription_id)
    )
    subscription.failure_count += 1
    fields = ["failure_count", "updated_at"]
    if subscription.is_active and (
        subscription.failure_count >= settings.MESSAGING_WEBHOOK_DISABLE_AFTER
    ):
        subscription.is_active = False
        subscription.disabled_at = now
        subscription.disabled_reason = _("%(count)d deliveries in a row failed.") % {
            "count": subscription.failure_count
        }
        subscription._change_reason = "disabled after repeated failure"
        fields += ["is_active", "disabled_at", "disabled_reason"]
        transaction.on_commit(lambda: _owner_notify(subscription))
    subscription.save(update_fields=fields)


def _owner_notify(subscription: WebhookSubscription) -> None:
    if not subscription.owner.email:
        logger.warning("Webhook subscription %s disabled; its owner has no e-mail", subscription.pk)
        return
    send_mail(
        subject=_("Webhook subscription disabled: %(url)s") % {"url": subscription.url},
        message=_(
            "Dialog CRM stopped sending events to %(url)s: %(reason)s Fix the endpoint, then "
            "re-enable the subscription in the admin or through the API. Events from the "
            "meantime are recorded as failed deliveries."
        )
        % {"url": subscription.url, "reason": subscription.disabled_reason},
        from_email=None,
        recipient_list=[subscription.owner.email],
    )
