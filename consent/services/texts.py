"""Purposes and their consent texts: what a contact may agree to, and the exact wording.

A consent text is never edited: new wording is published as a new version, so every grant in
the ledger keeps pointing at the words the contact actually saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from consent import keywords
from consent.models import ConsentText, LegalBasis, Purpose
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.ledger import sha256_hex
from crm.models import Channel, Language, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class PurposeInvalid(DomainError):
    code = "purpose_invalid"


class ConsentTextInvalid(DomainError):
    code = "consent_text_invalid"


# Words the inbound keyword handling already gives a meaning; a purpose keyword must not clash.
RESERVED_KEYWORDS: Final = (
    keywords.WITHDRAW_KEYWORDS
    | keywords.GRANT_KEYWORDS
    | keywords.CONFIRM_KEYWORDS
    | keywords.HELP_KEYWORDS
)

# What purpose_update may change, in the order forms list them. The key is referenced by
# segment rules and integrations and the team owns the ledger rows, so neither moves.
PURPOSE_UPDATABLE_FIELDS: Final = (
    "name",
    "description",
    "legal_basis",
    "is_marketing",
    "allowed_channels",
    "double_opt_in_channels",
    "validity_months",
    "reconfirm_days_before",
    "frequency_cap",
    "frequency_period_hours",
    "opt_in_keywords",
    "is_active",
)
MAX_KEYWORD_LENGTH: Final = 40


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team_id: int) -> None:
    if actor is not None and not crm_selectors.user_may_write(actor, perm, team_id):
        raise PermissionRefused(_("You may not do this for this team."))


def _history_user(instance: Any, actor: AbstractBaseUser | None) -> None:
    if actor is not None:
        instance._history_user = actor


def _channel_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list | tuple):
        raise PurposeInvalid(_("Give the channels as a list."), field=field)
    unknown = [channel for channel in value if channel not in Channel.values]
    if unknown:
        raise PurposeInvalid(
            _("Unknown channel %(channels)s. Known channels: %(known)s.")
            % {
                "channels": ", ".join(str(channel) for channel in unknown),
                "known": ", ".join(Channel.values),
            },
            field=field,
        )
    # Keep the given order, drop repeats.
    return list(dict.fromkeys(value))


def _clean_keywords(value: Any, *, team_id: int, exclude_pk: int | None) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(word, str) for word in value):
        raise PurposeInvalid(_("Opt-in keywords must be a list of texts."), field="opt_in_keywords")
    cleaned: list[str] = []
    seen: set[str] = set()
    for word in value:
        folded = keywords.fold(word)
        if not folded:
            raise PurposeInvalid(_("An opt-in keyword cannot be empty."), field="opt_in_keywords")
        if len(folded) > MAX_KEYWORD_LENGTH:
            raise PurposeInvalid(
                _("An opt-in keyword has at most %(n)d characters.") % {"n": MAX_KEYWORD_LENGTH},
                field="opt_in_keywords",
            )
        if folded in RESERVED_KEYWORDS:
            raise PurposeInvalid(
                _("“%(word)s” is reserved for STOP, START and HELP handling.") % {"word": word},
                field="opt_in_keywords",
            )
        if folded in seen:
            continue
        seen.add(folded)
        cleaned.append(word.strip())
    others = Purpose.objects.filter(team_id=team_id).exclude(pk=exclude_pk)
    for other in others.only("name", "opt_in_keywords"):
        clash = seen & {keywords.fold(word) for word in other.opt_in_keywords or []}
        if clash:
            raise PurposeInvalid(
                _("The keyword “%(word)s” already belongs to the purpose “%(purpose)s”.")
                % {"word": ", ".join(sorted(clash)), "purpose": other.name},
                field="opt_in_keywords",
            )
    return cleaned


def purpose_fields_validate(
    fields: dict[str, Any], *, team_id: int, exclude_pk: int | None
) -> dict[str, Any]:
    """Check and clean purpose fields whose rules span several values (channels, keywords).

    Raises PurposeInvalid naming the field; admin forms call it to show errors in place.
    """
    cleaned = dict(fields)
    if "name" in cleaned:
        cleaned["name"] = str(cleaned["name"] or "").strip()
        if not cleaned["name"]:
            raise PurposeInvalid(_("A purpose needs a name."), field="name")
    if "legal_basis" in cleaned and cleaned["legal_basis"] not in LegalBasis.values:
        raise PurposeInvalid(_("Unknown legal basis."), field="legal_basis")
    allowed = _channel_list(cleaned.get("allowed_channels", []), "allowed_channels")
    if not allowed:
        raise PurposeInvalid(
            _("Name at least one channel the purpose may use."), field="allowed_channels"
        )
    cleaned["allowed_channels"] = allowed
    double = _channel_list(cleaned.get("double_opt_in_channels", []), "double_opt_in_channels")
    outside = [channel for channel in double if channel not in allowed]
    if outside:
        raise PurposeInvalid(
            _("Double opt-in channels must be allowed channels: %(channels)s is not.")
            % {"channels": ", ".join(outside)},
            field="double_opt_in_channels",
        )
    cleaned["double_opt_in_channels"] = double
    cleaned["opt_in_keywords"] = _clean_keywords(
        cleaned.get("opt_in_keywords", []), team_id=team_id, exclude_pk=exclude_pk
    )
    return cleaned


@transaction.atomic
def purpose_create(
    *, team: Team, key: str, name: str, actor: AbstractBaseUser | None, **fields: Any
) -> Purpose:
    """A new purpose of `team`; the key is unique per team and never changes afterwards."""
    _ensure_may(actor, "consent.add_purpose", team.pk)
    unknown = set(fields).difference(PURPOSE_UPDATABLE_FIELDS)
    if unknown:
        raise PurposeInvalid(
            _("Unknown purpose fields: %(fields)s.") % {"fields": ", ".join(sorted(unknown))}
        )
    key = (key or "").strip()
    try:
        validate_slug(key)
    except ValidationError as error:
        raise PurposeInvalid(
            _("The key may contain letters, digits, “-” and “_” only."), field="key"
        ) from error
    if Purpose.objects.filter(team=team, key=key).exists():
        raise PurposeInvalid(
            _("This team already has a purpose with the key “%(key)s”.") % {"key": key},
            field="key",
        )
    cleaned = purpose_fields_validate({**fields, "name": name}, team_id=team.pk, exclude_pk=None)
    purpose = Purpose(team=team, key=key, **cleaned)
    _history_user(purpose, actor)
    purpose.save()
    return purpose


@transaction.atomic
def purpose_update(*, purpose: Purpose, actor: AbstractBaseUser | None, **fields: Any) -> Purpose:
    """Change a purpose; consents already given keep their recorded state."""
    _ensure_may(actor, "consent.change_purpose", purpose.team_id)
    unknown = set(fields).difference(PURPOSE_UPDATABLE_FIELDS)
    if unknown:
        raise PurposeInvalid(
            _("These purpose fields cannot be changed: %(fields)s.")
            % {"fields": ", ".join(sorted(unknown))},
            field=sorted(unknown)[0],
        )
    purpose = Purpose.objects.select_for_update().get(pk=purpose.pk)
    merged = {
        "allowed_channels": purpose.allowed_channels,
        "double_opt_in_channels": purpose.double_opt_in_channels,
        "opt_in_keywords": purpose.opt_in_keywords,
        **fields,
    }
    cleaned = purpose_fields_validate(merged, team_id=purpose.team_id, exclude_pk=purpose.pk)
    for name, value in cleaned.items():
        setattr(purpose, name, value)
    _history_user(purpose, actor)
    purpose.save()
    return purpose


@transaction.atomic
def consent_text_publish(
    *, purpose: Purpose, language: str, body: str, actor: AbstractBaseUser | None
) -> ConsentText:
    """Publish new wording for a purpose as the next version in its language.

    Versions are numbered per purpose and language under a lock on the purpose, so two
    publishers cannot take the same number; existing versions are never changed.
    """
    _ensure_may(actor, "consent.add_consenttext", purpose.team_id)
    locked = Purpose.objects.select_for_update().get(pk=purpose.pk)
    body = consent_text_validate(purpose=locked, language=language, body=body)
    latest = ConsentText.objects.filter(purpose=locked, language=language).order_by("-version")
    last_version = latest.values_list("version", flat=True).first() or 0
    return ConsentText.objects.create(
        purpose=locked,
        language=language,
        body=body,
        version=last_version + 1,
        content_hash=sha256_hex(body),
        created_by=actor,
    )


def consent_text_validate(*, purpose: Purpose, language: str, body: str) -> str:
    """The wording as it would be published; refuses an unknown language, empty wording, and
    wording identical to the current version (nothing would change)."""
    if language not in Language.values:
        raise ConsentTextInvalid(
            _("Unknown language “%(language)s”.") % {"language": language}, field="language"
        )
    body = (body or "").strip()
    if not body:
        raise ConsentTextInvalid(_("The wording cannot be empty."), field="body")
    latest = (
        ConsentText.objects.filter(purpose=purpose, language=language).order_by("-version").first()
    )
    if latest is not None and latest.body == body:
        raise ConsentTextInvalid(
            _("Version %(version)d already has exactly this wording.")
            % {"version": latest.version},
            field="body",
        )
    return body
