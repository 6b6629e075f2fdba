"""Provider webhooks: /webhooks/whatsapp/<account>/ and /webhooks/twilio/<account>/.

No session or CSRF: the provider's signature over the raw request is the authentication, and
it is checked before anything is parsed or stored. Answers: 404 unknown account, 413 too
large, 403 bad signature, 400 unreadable payload (all storing nothing); otherwise 200, also
when single items failed (they are quarantined, the provider must not retry forever).

WhatsApp answers as soon as the verified body is stored in the webhook inbox; a Celery task
applies the waiting rows in batches (messaging.services.inbound), so a burst of deliveries
costs the provider one INSERT each. Twilio's requests are still applied before the answer.
Both views are reached past the session-based middleware (messaging.middleware).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Final

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from messaging import selectors
from messaging.models import ChannelAccount, ProviderKind
from messaging.services.accounts import account_credentials
from messaging.services.inbound import (
    inbound_webhook_accept,
    webhook_batch_process,
    webhook_payload_quarantine,
)
from messaging.webhooks.events import WebhookBatch, WebhookPayloadInvalid
from messaging.webhooks.signatures import (
    meta_signature_ok,
    meta_verification_challenge,
    twilio_json_signature_ok,
    twilio_signature_ok,
)
from messaging.webhooks.twilio import (
    is_twilio_status_callback,
    parse_twilio_inbound,
    parse_twilio_status,
)
from messaging.webhooks.whatsapp import parse_whatsapp_body

logger = logging.getLogger(__name__)

META_SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
TWILIO_SIGNATURE_HEADER: Final = "X-Twilio-Signature"
# Our message's idempotency key, added to Twilio's status callback URL by delivery.
TWILIO_CALLBACK_PARAM: Final = "m"
# An empty TwiML answer: Twilio sends no automatic reply to the incoming message.
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _body(request: HttpRequest) -> bytes | None:
    """The raw body, or None when it is larger than MESSAGING_WEBHOOK_MAX_BYTES."""
    limit = settings.MESSAGING_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None
    return body if len(body) <= limit else None


def _too_large() -> JsonResponse:
    return _error(413, "payload_too_large", _("The webhook payload is too large."))


def _forbidden(account: ChannelAccount) -> JsonResponse:
    logger.warning("account %s: webhook signature missing or invalid", account.slug)
    return _error(403, "signature_invalid", _("The webhook signature is missing or invalid."))


def _not_found() -> JsonResponse:
    return _error(404, "not_found", _("Unknown webhook address."))


def _process_now(
    account: ChannelAccount, batch: WebhookBatch, body: bytes, content_type: str
) -> None:
    """Apply the batch; a failed item puts the whole body in quarantine, once."""
    result = webhook_batch_process(account=account, batch=batch)
    if result.failed:
        webhook_payload_quarantine(
            account=account, body=body, content_type=content_type, errors=result.errors
        )


@csrf_exempt
@require_http_methods(["GET", "POST"])
def whatsapp_webhook(request: HttpRequest, account: str) -> HttpResponse:
    """Meta's subscription handshake (GET) and its signed event notifications (POST)."""
    channel_account = selectors.webhook_account(account, ProviderKind.WHATSAPP_CLOUD)
    if channel_account is None:
        return _not_found()
    credentials = account_credentials(channel_account)
    if request.method == "GET":
        challenge = meta_verification_challenge(request.GET, credentials.get("verify_token", ""))
        if challenge is None:
            return _error(403, "verify_token_invalid", _("The verify token does not match."))
        return HttpResponse(challenge, content_type="text/plain")

    body = _body(request)
    if body is None:
        return _too_large()
    signature = request.headers.get(META_SIGNATURE_HEADER)
    if not meta_signature_ok(body, signature, credentials.get("app_secret", "")):
        return _forbidden(channel_account)
    try:
        # Parsed here only to refuse a malformed body now; the task parses the stored copy.
        parse_whatsapp_body(body)
    except WebhookPayloadInvalid as exc:
        return _error(400, exc.code, exc.message)
    webhook_id = inbound_webhook_accept(
        account=channel_account, body=body, content_type=request.content_type or ""
    )
    return JsonResponse({"status": "accepted" if webhook_id is not None else "duplicate"})


def _twilio_params(
    request: HttpRequest, body: bytes, url: str, auth_token: str
) -> Mapping[str, str] | None:
    """The request's parameters if its signature holds (form or JSON variant), else None."""
    signature = request.headers.get(TWILIO_SIGNATURE_HEADER)
    if request.content_type == "application/json":
        if not twilio_json_signature_ok(url, body, signature, auth_token):
            return None
        try:
            params = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookPayloadInvalid(_("The webhook body is not valid JSON.")) from exc
        if not isinstance(params, dict):
            raise WebhookPayloadInvalid(_("The webhook payload must be a JSON object."))
        return params
    # Every parameter Twilio sent is signed, blanks included: validate over request.POST.
    if not twilio_signature_ok(url, request.POST, signature, auth_token):
        return None
    return request.POST


def _twilio_batch(request: HttpRequest, params: Mapping[str, str]) -> WebhookBatch:
    if not is_twilio_status_callback(params):
        return WebhookBatch(messages=[parse_twilio_inbound(params)])
    update = parse_twilio_status(params)
    key = request.GET.get(TWILIO_CALLBACK_PARAM)
    if key and update.callback_data is None:
        update = dataclasses.replace(update, callback_data=key)
    return WebhookBatch(statuses=[update])


@csrf_exempt
@require_http_methods(["POST"])
def twilio_webhook(request: HttpRequest, account: str) -> HttpResponse:
    """Twilio's incoming messages and status callbacks (one URL, told apart by the fields)."""
    channel_account = selectors.webhook_account(account, ProviderKind.TWILIO_SMS)
    if channel_account is None:
        return _not_found()
    body = _body(request)
    if body is None:
        return _too_large()
    # Twilio signs the public URL it called, not the one a TLS-terminating proxy forwards.
    url = settings.PUBLIC_BASE_URL.rstrip("/") + request.get_full_path()
    auth_token = account_credentials(channel_account).get("auth_token", "")
    try:
        params = _twilio_params(request, body, url, auth_token)
        if params is None:
            return _forbidden(channel_account)
        batch = _twilio_batch(request, params)
    except WebhookPayloadInvalid as exc:
        return _error(400, exc.code, exc.message)
    _process_now(channel_account, batch, body, request.content_type or "")
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")
