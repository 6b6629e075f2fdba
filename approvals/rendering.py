"""The placeholder language of message templates: small on purpose, and safe.

`{{ first_name }}`, `{{ contact.salutation }}`, `{{ unsubscribe_url }}` and nothing else: no
filters, no tags, no expressions. A placeholder is a key into a flat dict of strings; nothing
is looked up with getattr, so template text can never reach an object's attributes (no
`{{ contact.__dict__ }}`, no `{{ contact.team.secret }}`). A placeholder that is unknown,
malformed or has no value is an error, never an empty string: a message that says
"Guten Tag  ," must not go out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from approvals.errors import RenderError
from consent.services.unsubscribe import unsubscribe_url
from crm.models import Channel

if TYPE_CHECKING:
    from approvals.models import TemplateVersion
    from consent.models import Purpose
    from crm.models import Contact

OPEN: Final = "{{"
CLOSE: Final = "}}"
# Lower-case names, optionally dotted once: `first_name`, `contact.salutation`. A leading
# letter (not an underscore) rules out dunder names before any lookup happens.
NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?")
# The contact fields a template may use, bare (`first_name`) or dotted (`contact.first_name`).
CONTACT_FIELDS: Final = (
    "first_name",
    "last_name",
    "full_name",
    "salutation",
    "organisation",
    "profession",
)
# The only prefixes a dotted name may have, and what may follow them.
DOTTED_PREFIXES: Final[dict[str, tuple[str, ...]]] = {"contact": CONTACT_FIELDS}
UNSUBSCRIBE_URL: Final = "unsubscribe_url"
TEXT_FIELDS: Final = ("subject", "header", "body", "footer")
# Spaces and tabs inside the braces are fine: `{{first_name}}` == `{{ first_name }}`.
_PADDING: Final = " \t"

# Preview data: content shown in place of a contact's data, German like most recipients.
SAMPLE_VALUES: Final[dict[str, str]] = {
    "first_name": "Jana",
    "last_name": "Schmidt",
    "full_name": "Jana Schmidt",
    "salutation": "Frau",
    "organisation": "Praxis am Markt",
    "profession": "Apothekerin",
}


@dataclass(frozen=True)
class Placeholder:
    """One `{{ name }}` in a text: where it starts and ends, and the name inside."""

    start: int
    end: int
    name: str


@dataclass(frozen=True)
class RenderedMessage:
    """A version's parts with every placeholder replaced."""

    subject: str
    header: str
    body: str
    footer: str
    buttons: list[dict[str, Any]] = field(default_factory=list)


def _snippet(text: str, start: int, length: int = 40) -> str:
    piece = text[start : start + length]
    return piece if start + length >= len(text) else piece + "…"


def _syntax_error(message: str, field_name: str | None) -> RenderError:
    return RenderError(message, code="template_syntax", field=field_name)


def _check_name(name: str, raw: str, field_name: str | None) -> None:
    if not NAME_RE.fullmatch(name):
        raise _syntax_error(
            _(
                "“%(raw)s” is not a valid placeholder. Write names such as {{ first_name }}: "
                "lower-case letters, digits and underscores."
            )
            % {"raw": raw},
            field_name,
        )
    if "." in name:
        prefix, attribute = name.split(".", 1)
        allowed = DOTTED_PREFIXES.get(prefix)
        if allowed is None or attribute not in allowed:
            raise _syntax_error(
                _("“%(raw)s” is not allowed. After “contact.” only these may follow: %(allowed)s.")
                % {"raw": raw, "allowed": ", ".join(CONTACT_FIELDS)},
                field_name,
            )


def parse(text: str, *, field: str | None = None) -> list[Placeholder]:
    """Every placeholder in `text`, in order. Raises RenderError (template_syntax) for an
    unclosed `{{`, a stray `}}`, or anything but a permitted name between the braces."""
    found: list[Placeholder] = []
    position = 0
    while True:
        start = text.find(OPEN, position)
        stray = text.find(CLOSE, position)
        if stray != -1 and (start == -1 or stray < start):
            raise _syntax_error(
                _("“}}” without a matching “{{” at “%(snippet)s”.")
                % {"snippet": _snippet(text, max(stray - 20, 0))},
                field,
            )
        if start == -1:
            return found
        end = text.find(CLOSE, start + len(OPEN))
        if end == -1:
            raise _syntax_error(
                _("“{{” is not closed at “%(snippet)s”.") % {"snippet": _snippet(text, start)},
                field,
            )
        inner = text[start + len(OPEN) : end]
        raw = text[start : end + len(CLOSE)]
        _check_name(inner.strip(_PADDING), raw, field)
        found.append(Placeholder(start=start, end=end + len(CLOSE), name=inner.strip(_PADDING)))
        position = end + len(CLOSE)


def placeholders(text: str, *, field: str | None = None) -> list[str]:
    """The names used in `text`, unique, in order of first use (RenderError if malformed)."""
    names: list[str] = []
    for placeholder in parse(text, field=field):
        if placeholder.name not in names:
            names.append(placeholder.name)
    return names


def substitute(text: str, found: Iterable[Placeholder], values: Mapping[str, str]) -> str:
    """Replace each placeholder in one pass: a value containing `{{ x }}` stays literal."""
    pieces: list[str] = []
    position = 0
    for placeholder in found:
        pieces.append(text[position : placeholder.start])
        pieces.append(values[placeholder.name])
        position = placeholder.end
    pieces.append(text[position:])
    return "".join(pieces)


def button_list(buttons: Any) -> list[dict[str, Any]]:
    """The buttons as a list of objects; RenderError (field buttons) for anything else."""
    if buttons in (None, ""):
        return []
    if not isinstance(buttons, list | tuple) or not all(isinstance(b, dict) for b in buttons):
        raise _syntax_error(
            _('Buttons must be a list of objects such as {"type": "quick_reply", "text": "Yes"}.'),
            "buttons",
        )
    return list(buttons)


def button_texts(buttons: Any) -> list[str]:
    """Every text value of every button (label, URL, ...): all of them may hold placeholders."""
    return [value for b in button_list(buttons) for value in b.values() if isinstance(value, str)]


def text_parts(version: TemplateVersion) -> list[tuple[str, str]]:
    """(field, text) for every text of a version that may hold placeholders, buttons last."""
    parts = [(name, getattr(version, name) or "") for name in TEXT_FIELDS]
    parts.extend(("buttons", text) for text in button_texts(version.buttons))
    return parts


def _is_blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def render(version: TemplateVersion, context: Mapping[str, Any]) -> RenderedMessage:
    """The version's parts with the context's values filled in.

    Refuses (RenderError) a malformed placeholder (template_syntax), a placeholder the
    version does not declare (unknown_variable) and a used variable whose value is missing,
    None or blank (missing_variable). Values are str()-converted and never expanded again.
    """
    parsed = {(part, text): parse(text, field=part) for part, text in text_parts(version) if text}
    declared = set(version.variables or [])
    unknown: dict[str, str] = {}
    missing: dict[str, str] = {}
    for (part, _text), found in parsed.items():
        for placeholder in found:
            if placeholder.name not in declared:
                unknown.setdefault(placeholder.name, part)
            elif _is_blank(context.get(placeholder.name)):
                missing.setdefault(placeholder.name, part)
    if unknown:
        raise RenderError(
            _("The version does not declare these placeholders: %(names)s.")
            % {"names": ", ".join(unknown)},
            code="unknown_variable",
            field=next(iter(unknown.values())),
        )
    if missing:
        raise RenderError(
            _("No value for these placeholders: %(names)s.") % {"names": ", ".join(missing)},
            code="missing_variable",
            field=next(iter(missing.values())),
        )
    values = {name: str(context[name]) for name in declared if name in context}

    def fill(part: str, text: str) -> str:
        return substitute(text, parsed[(part, text)], values) if text else text

    buttons = [
        {
            key: fill("buttons", value) if isinstance(value, str) else value
            for key, value in button.items()
        }
        for button in button_list(version.buttons)
    ]
    return RenderedMessage(
        subject=fill("subject", version.subject or ""),
        header=fill("header", version.header or ""),
        body=fill("body", version.body or ""),
        footer=fill("footer", version.footer or ""),
        buttons=buttons,
    )


def sample_value(name: str) -> str:
    """A plausible German stand-in for one variable (previews, SMS length estimates)."""
    bare = name.split(".", 1)[1] if "." in name else name
    if bare == UNSUBSCRIBE_URL:
        path = reverse("consent:unsubscribe", args=["example"])
        return settings.PUBLIC_BASE_URL.rstrip("/") + path
    return SAMPLE_VALUES.get(bare, f"Beispiel {bare}")


def sample_context(version: TemplateVersion) -> dict[str, str]:
    """Sample values for every variable the version declares."""
    return {name: sample_value(name) for name in version.variables or []}


def render_preview(version: TemplateVersion) -> RenderedMessage:
    """The version rendered with sample data; the same errors as a real send."""
    return render(version, sample_context(version))


def contact_context(
    contact: Contact,
    *,
    purpose: Purpose | None = None,
    channel: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The values a message to `contact` may use: the whitelisted contact fields (bare and
    as `contact.<field>`), `unsubscribe_url` when a purpose and channel are given, and
    `extra` (which wins). Empty fields stay empty, so render() refuses them if used."""
    language = contact.language or settings.LANGUAGE_CODE
    with translation.override(language):
        # The salutation as the contact reads it ("Frau" for German once translated).
        salutation = str(contact.get_salutation_display()) if contact.salutation else ""
    fields = {
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "full_name": contact.full_name,
        "salutation": salutation,
        "organisation": contact.organisation,
        "profession": contact.profession,
    }
    context: dict[str, Any] = dict(fields)
    context.update({f"contact.{name}": value for name, value in fields.items()})
    if purpose is not None and channel is not None:
        # A link naming another team's purpose or an unknown channel would be refused when
        # clicked: the recipient could not unsubscribe. Refuse it here instead.
        if purpose.team_id != contact.team_id or channel not in Channel.values:
            raise RenderError(
                _("The unsubscribe link needs a purpose of the contact's team and a channel."),
                code="unsubscribe_invalid",
                field=UNSUBSCRIBE_URL,
            )
        context[UNSUBSCRIBE_URL] = unsubscribe_url(contact, purpose, channel)
    if extra:
        context.update(extra)
    return context
