"""Parse WhatsApp Cloud API webhook payloads into provider-neutral events.

Meta uses arrays at every level and may batch: every entry x change x message/status/error
is read, in order. Routing is by `field`; fields we do not handle are listed, not refused.
Anything that breaks the documented shape raises WebhookPayloadInvalid naming the JSON path.
Call this only after `meta_signature_ok` accepted the raw body.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from django.utils.translation import gettext_lazy as _

from messaging.webhooks.events import (
    CHANNEL_WHATSAPP,
    PROVIDER_WHATSAPP,
    DeliveryStatus,
    InboundMessage,
    ProviderErrorEvent,
    StatusUpdate,
    TemplateQualityEvent,
    TemplateStatusEvent,
    WebhookBatch,
    WebhookPayloadInvalid,
)

WHATSAPP_OBJECT: Final = "whatsapp_business_account"
FIELD_MESSAGES: Final = "messages"
FIELD_TEMPLATE_STATUS: Final = "message_template_status_update"
FIELD_TEMPLATE_QUALITY: Final = "message_template_quality_update"

# Meta's receipt values; anything else (e.g. a voice message "played") is kept with status None.
_STATUS_MAP: Final[dict[str, DeliveryStatus]] = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
_DIGITS: Final = re.compile(r"\d{1,15}")
_UNIX_SECONDS: Final = re.compile(r"\d{1,12}")

_MISSING = object()


def _at(path: str, key: str) -> str:
    """JSON path of `key` inside `path`, for error messages (e.g. entry[0].changes[0].field)."""
    return f"{path}.{key}" if path else key


def _invalid_missing(path: str) -> WebhookPayloadInvalid:
    return WebhookPayloadInvalid(_("%(path)s is missing.") % {"path": path})


def _obj(container: dict[str, Any], key: str, path: str, *, required: bool = True) -> Any:
    value = container.get(key, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise _invalid_missing(_at(path, key))
        return None
    if not isinstance(value, dict):
        raise WebhookPayloadInvalid(_("%(path)s must be an object.") % {"path": _at(path, key)})
    return value


def _objects(container: dict[str, Any], key: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    """The list under `key` (absent means empty) as (path, item) pairs; every item an object."""
    value = container.get(key, _MISSING)
    if value is _MISSING:
        return []
    if not isinstance(value, list):
        raise WebhookPayloadInvalid(_("%(path)s must be a list.") % {"path": _at(path, key)})
    items = []
    for index, item in enumerate(value):
        item_path = f"{_at(path, key)}[{index}]"
        if not isinstance(item, dict):
            raise WebhookPayloadInvalid(_("%(path)s must be an object.") % {"path": item_path})
        items.append((item_path, item))
    return items


def _str(container: dict[str, Any], key: str, path: str) -> str:
    value = container.get(key, _MISSING)
    if value is _MISSING:
        raise _invalid_missing(_at(path, key))
    if not isinstance(value, str) or not value:
        raise WebhookPayloadInvalid(
            _("%(path)s must be a non-empty string.") % {"path": _at(path, key)}
        )
    return value


def _opt_str(container: dict[str, Any], key: str, path: str) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookPayloadInvalid(_("%(path)s must be a string.") % {"path": _at(path, key)})
    return value


def _numeric_id(container: dict[str, Any], key: str, path: str) -> str:
    """Meta sends template ids as JSON numbers (and some tools as strings): always a str here."""
    value = container.get(key, _MISSING)
    if value is _MISSING:
        raise _invalid_missing(_at(path, key))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    raise WebhookPayloadInvalid(_("%(path)s must be a numeric id.") % {"path": _at(path, key)})


def _unix_time(value: object, path: str) -> datetime:
    # Meta documents `timestamp` as a string of Unix seconds; `entry.time` is a number.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        seconds = value
    elif isinstance(value, str) and _UNIX_SECONDS.fullmatch(value):
        seconds = int(value)
    else:
        raise WebhookPayloadInvalid(
            _("%(path)s must be a Unix timestamp in seconds.") % {"path": path}
        )
    return datetime.fromtimestamp(seconds, tz=UTC)


def _timestamp(container: dict[str, Any], key: str, path: str) -> datetime:
    if key not in container:
        raise _invalid_missing(_at(path, key))
    return _unix_time(container[key], _at(path, key))


def _phone(container: dict[str, Any], key: str, path: str) -> str:
    """A WhatsApp number (digits, no "+") as E.164."""
    value = _str(container, key, path)
    if not _DIGITS.fullmatch(value):
        raise WebhookPayloadInvalid(
            _("%(path)s must be a phone number in digits.") % {"path": _at(path, key)}
        )
    return "+" + value


def _display_number(metadata: dict[str, Any], path: str) -> str | None:
    value = _opt_str(metadata, "display_phone_number", path)
    digits = re.sub(r"\D", "", value or "")
    return "+" + digits if digits else None


def _first_error(item: dict[str, Any], path: str) -> tuple[str | None, str, str]:
    """(code, title, details) of the first entry in `errors[]`, if any."""
    errors = _objects(item, "errors", path)
    if not errors:
        return None, "", ""
    error_path, error = errors[0]
    code = error.get("code")
    error_data = _obj(error, "error_data", error_path, required=False) or {}
    details = _opt_str(error_data, "details", f"{error_path}.error_data") or ""
    title = _opt_str(error, "title", error_path) or _opt_str(error, "message", error_path) or ""
    return (None if code is None else str(code)), title, details


def _message_content(message: dict[str, Any], kind: str, path: str) -> tuple[str, str | None]:
    """(text, payload) for the message kinds that carry words; ("", None) for the rest."""
    if kind == "text":
        return _str(_obj(message, "text", path), "body", f"{path}.text"), None
    if kind == "button":
        button = _obj(message, "button", path)
        text = _opt_str(button, "text", f"{path}.button") or ""
        return text, _opt_str(button, "payload", f"{path}.button")
    if kind == "interactive":
        interactive = _obj(message, "interactive", path)
        reply_type = _str(interactive, "type", f"{path}.interactive")
        if reply_type in ("button_reply", "list_reply"):
            reply_path = f"{path}.interactive.{reply_type}"
            reply = _obj(interactive, reply_type, f"{path}.interactive")
            return _opt_str(reply, "title", reply_path) or "", _str(reply, "id", reply_path)
    return "", None


def _profile_names(value: dict[str, Any], path: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for contact_path, contact in _objects(value, "contacts", path):
        wa_id = _opt_str(contact, "wa_id", contact_path)
        profile = _obj(contact, "profile", contact_path, required=False) or {}
        name = _opt_str(profile, "name", f"{contact_path}.profile") or ""
        if wa_id:
            names[wa_id] = name
    return names


def _parse_messages_change(
    value: dict[str, Any], path: str, account_id: str, batch: WebhookBatch
) -> None:
    metadata = _obj(value, "metadata", path)
    phone_number_id = _str(metadata, "phone_number_id", f"{path}.metadata")
    to_address = _display_number(metadata, f"{path}.metadata")
    names = _profile_names(value, path)

    for item_path, item in _objects(value, "messages", path):
        sender = _str(item, "from", item_path)
        from_address = _phone(item, "from", item_path)
        kind = _str(item, "type", item_path)
        text, payload = _message_content(item, kind, item_path)
        context = _obj(item, "context", item_path, required=False) or {}
        referral = _obj(item, "referral", item_path, required=False)
        # contacts[].wa_id normally equals messages[].from; with a single contact use it anyway.
        profile_name = names.get(sender) or (next(iter(names.values())) if len(names) == 1 else "")
        batch.messages.append(
            InboundMessage(
                provider=PROVIDER_WHATSAPP,
                channel=CHANNEL_WHATSAPP,
                provider_message_id=_str(item, "id", item_path),
                from_address=from_address,
                to_address=to_address,
                phone_number_id=phone_number_id,
                account_id=account_id,
                profile_name=profile_name,
                occurred_at=_timestamp(item, "timestamp", item_path),
                kind=kind,
                text=text,
                payload=payload,
                reply_to_provider_id=_opt_str(context, "id", f"{item_path}.context"),
                referral=referral,
                raw=item,
            )
        )

    for item_path, item in _objects(value, "statuses", path):
        provider_status = _str(item, "status", item_path)
        recipient = _opt_str(item, "recipient_id", item_path)
        if recipient and _DIGITS.fullmatch(recipient):
            recipient = "+" + recipient
        error_code, error_title, error_details = _first_error(item, item_path)
        batch.statuses.append(
            StatusUpdate(
                provider=PROVIDER_WHATSAPP,
                channel=CHANNEL_WHATSAPP,
                provider_message_id=_str(item, "id", item_path),
                status=_STATUS_MAP.get(provider_status),
                provider_status=provider_status,
                occurred_at=_timestamp(item, "timestamp", item_path),
                recipient=recipient,
                error_code=error_code,
                error_title=error_title,
                error_details=error_details,
                phone_number_id=phone_number_id,
                account_id=account_id,
                callback_data=_opt_str(item, "biz_opaque_callback_data", item_path),
                raw=item,
            )
        )

    for item_path, item in _objects(value, "errors", path):
        code = item.get("code")
        error_data = _obj(item, "error_data", item_path, required=False) or {}
        batch.errors.append(
            ProviderErrorEvent(
                code=None if code is None else str(code),
                title=_opt_str(item, "title", item_path) or "",
                message=_opt_str(item, "message", item_path) or "",
                details=_opt_str(error_data, "details", f"{item_path}.error_data") or "",
                href=_opt_str(item, "href", item_path) or "",
                phone_number_id=phone_number_id,
                account_id=account_id,
                raw=item,
            )
        )


def _parse_template_status(
    value: dict[str, Any], path: str, account_id: str, occurred_at: datetime | None
) -> TemplateStatusEvent:
    return TemplateStatusEvent(
        event=_str(value, "event", path),
        provider_template_id=_numeric_id(value, "message_template_id", path),
        name=_str(value, "message_template_name", path),
        language=_str(value, "message_template_language", path),
        reason=_opt_str(value, "reason", path),
        category=_opt_str(value, "message_template_category", path),
        other_info=_obj(value, "other_info", path, required=False),
        disable_info=_obj(value, "disable_info", path, required=False),
        account_id=account_id,
        occurred_at=occurred_at,
        raw=value,
    )


def _parse_template_quality(
    value: dict[str, Any], path: str, account_id: str, occurred_at: datetime | None
) -> TemplateQualityEvent:
    return TemplateQualityEvent(
        provider_template_id=_numeric_id(value, "message_template_id", path),
        name=_str(value, "message_template_name", path),
        language=_str(value, "message_template_language", path),
        previous_quality_score=_str(value, "previous_quality_score", path),
        new_quality_score=_str(value, "new_quality_score", path),
        account_id=account_id,
        occurred_at=occurred_at,
        raw=value,
    )


def parse_whatsapp(payload: object) -> WebhookBatch:
    """Every event in one WhatsApp webhook payload (the parsed JSON body).

    Raises WebhookPayloadInvalid, naming the offending path, if the shape is not Meta's.
    """
    if not isinstance(payload, dict):
        raise WebhookPayloadInvalid(_("The webhook payload must be a JSON object."))
    if "object" not in payload:
        raise _invalid_missing("object")
    if payload["object"] != WHATSAPP_OBJECT:
        raise WebhookPayloadInvalid(
            _("object is “%(value)s”, expected “%(expected)s”.")
            % {"value": payload["object"], "expected": WHATSAPP_OBJECT}
        )
    if "entry" not in payload:
        raise _invalid_missing("entry")
    entries = _objects(payload, "entry", "")
    if not entries:
        raise WebhookPayloadInvalid(_("entry must be a non-empty list."))

    batch = WebhookBatch()
    for entry_path, entry in entries:
        account_id = _str(entry, "id", entry_path)
        entry_time = entry.get("time")
        occurred_at = None if entry_time is None else _unix_time(entry_time, f"{entry_path}.time")
        if "changes" not in entry:
            raise _invalid_missing(f"{entry_path}.changes")
        for change_path, change in _objects(entry, "changes", entry_path):
            field_name = _str(change, "field", change_path)
            value = _obj(change, "value", change_path)
            value_path = f"{change_path}.value"
            if field_name == FIELD_MESSAGES:
                _parse_messages_change(value, value_path, account_id, batch)
            elif field_name == FIELD_TEMPLATE_STATUS:
                batch.template_statuses.append(
                    _parse_template_status(value, value_path, account_id, occurred_at)
                )
            elif field_name == FIELD_TEMPLATE_QUALITY:
                batch.template_qualities.append(
                    _parse_template_quality(value, value_path, account_id, occurred_at)
                )
            else:
                batch.ignored_fields.append(field_name)
    return batch


def parse_whatsapp_body(raw_body: bytes) -> WebhookBatch:
    """Decode the raw (already verified) request body and parse it.

    Meta sends UTF-8; the body is decoded as such (not sniffed), so an accepted body can be
    stored as text in the webhook inbox.
    """
    try:
        payload = json.loads(raw_body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookPayloadInvalid(_("The webhook body is not valid JSON.")) from exc
    return parse_whatsapp(payload)
