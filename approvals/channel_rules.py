"""What each channel accepts, checked when a version is submitted for review.

Reviewers should only spend time on content that can actually go out: a WhatsApp body Meta
would refuse, an SMS that costs nine segments, or a marketing e-mail without an unsubscribe
link is refused at submission, with one Violation per broken rule (the API shows them as
field errors). The limits are constants in code, not settings: an approved version was
checked against them, and a changed setting must not silently invalidate or widen what
reviewers signed off.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from django.utils.translation import gettext_lazy as _

from approvals import rendering
from approvals.errors import ChannelRulesViolated, RenderError, Violation
from approvals.models import TemplateCategory
from crm.models import Channel

if TYPE_CHECKING:
    from approvals.models import TemplateVersion

__all__ = [
    "SMS_MAX_SEGMENTS",
    "Violation",
    "check_version",
    "sms_encoding_and_segments",
    "validate_version",
]

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"

# 3GPP TS 23.038 (GSM 03.38) default alphabet: 128 positions minus the escape (0x1B).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: reached through the escape, so each costs two septets.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

# Per segment: one SMS carries 140 octets = 160 septets or 70 UCS-2 units; in a concatenated
# message the 6-octet user data header leaves 153 septets or 67 units per part.
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
# Every segment is billed, and long concatenations are where carriers and older handsets
# fail to reassemble. Twilio accepts up to 1,600 characters but recommends at most 320
# (twilio.com/docs/glossary/what-sms-character-limit). Six segments (918 GSM-7 / 402 UCS-2
# characters) leave room for mandatory texts (e.g. pharma obligatory information) and
# still keep cost and reassembly risk bounded.
SMS_MAX_SEGMENTS: Final = 6

# WhatsApp template limits, from Meta's template components reference
# (developers.facebook.com/documentation/business-messaging/whatsapp/templates/components):
# text header <= 60 characters with at most 1 parameter, body <= 1,024, footer <= 60,
# at most 10 buttons per template, button label <= 25 characters, at most 2 URL buttons,
# 1 phone-number button and 1 copy-code button, and quick replies grouped together.
WHATSAPP_BODY_MAX: Final = 1024
WHATSAPP_HEADER_MAX: Final = 60
WHATSAPP_FOOTER_MAX: Final = 60
WHATSAPP_HEADER_PLACEHOLDERS_MAX: Final = 1
WHATSAPP_BUTTONS_MAX: Final = 10
WHATSAPP_BUTTON_TEXT_MAX: Final = 25
# Meta now allows more quick replies, but shows only three as buttons and folds the rest
# into a list; three also matches interactive reply buttons (max 3, see
# shared/providers/README.md section 5), so a template and a session reply look alike.
WHATSAPP_BUTTON_TYPE_MAX: Final = {
    "quick_reply": 3,
    "url": 2,
    "phone_number": 1,
    "copy_code": 1,
}
# Template names: lower-case letters, digits and underscores, at most 512 characters (Meta).
WHATSAPP_NAME_RE: Final = re.compile(r"^[a-z0-9_]{1,512}$")

EMAIL_SUBJECT_MAX: Final = 200


def sms_encoding_and_segments(text: str) -> tuple[str, int]:
    """("GSM-7" | "UCS-2", number of SMS segments) for `text` as carriers would send it.

    An extension character (two septets) or a UCS-2 surrogate pair (an emoji, two units)
    is never split across two parts, so a part may carry one unit less than its maximum.
    """
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
        encoding, single, part = GSM7, GSM7_SINGLE, GSM7_PART
    else:
        units = [2 if ord(char) > 0xFFFF else 1 for char in text]
        encoding, single, part = UCS2, UCS2_SINGLE, UCS2_PART
    if sum(units) <= single:
        return encoding, 1
    segments, used = 1, 0
    for size in units:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return encoding, segments


def _non_gsm_characters(text: str) -> list[str]:
    seen: list[str] = []
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION and char not in seen:
            seen.append(char)
    return seen


def _parsed_parts(
    version: TemplateVersion, violations: list[Violation]
) -> dict[str, list[list[rendering.Placeholder]]]:
    """Placeholders per field (buttons: one list per button text). A text that does not
    parse becomes a violation and is left out, so later rules skip it."""
    try:
        buttons = rendering.button_texts(version.buttons)
    except RenderError as exc:
        violations.append(Violation(field="buttons", message=exc.message, code=exc.code))
        buttons = []
    texts = [(name, getattr(version, name) or "") for name in rendering.TEXT_FIELDS]
    texts.extend(("buttons", text) for text in buttons)
    parsed: dict[str, list[list[rendering.Placeholder]]] = {}
    for field, text in texts:
        try:
            found = rendering.parse(text, field=field)
        except RenderError as exc:
            violations.append(Violation(field=field, message=exc.message, code=exc.code))
            continue
        parsed.setdefault(field, []).append(found)
    return parsed


def _check_variables(
    version: TemplateVersion,
    parsed: dict[str, list[list[rendering.Placeholder]]],
    violations: list[Violation],
) -> None:
    declared = list(version.variables or [])
    used: dict[str, str] = {}
    for field, texts in parsed.items():
        for found in texts:
            for placeholder in found:
                used.setdefault(placeholder.name, field)
    for name, field in used.items():
        if name not in declared:
            violations.append(
                Violation(
                    field=field,
                    message=_("“%(name)s” is used but not declared as a variable.")
                    % {"name": name},
                    code="undeclared_variable",
                )
            )
    for name in declared:
        if name not in used:
            violations.append(
                Violation(
                    field="variables",
                    message=_("“%(name)s” is declared but not used in the text.") % {"name": name},
                    code="unused_variable",
                )
            )


def _too_long(field: str, label: str, text: str, limit: int) -> Violation | None:
    if len(text) <= limit:
        return None
    return Violation(
        field=field,
        message=_("The %(label)s has %(length)s characters; at most %(limit)s are allowed.")
        % {"label": label, "length": len(text), "limit": limit},
        code="too_long",
    )


def _not_supported(field: str, channel_label: str, what: str) -> Violation:
    return Violation(
        field=field,
        message=_("%(channel)s messages have no %(what)s; leave it empty.")
        % {"channel": channel_label, "what": what},
        code="not_supported",
    )


def _sms_rules(
    version: TemplateVersion,
    parsed: dict[str, list[list[rendering.Placeholder]]],
    violations: list[Violation],
) -> None:
    label = str(Channel.SMS.label)
    for field, what in (
        ("subject", _("subject")),
        ("header", _("header")),
        ("footer", _("footer")),
    ):
        if getattr(version, field):
            violations.append(_not_supported(field, label, str(what)))
    if version.buttons:
        violations.append(_not_supported("buttons", label, str(_("buttons"))))
    body_parses = len(parsed.get("body", [])) == 1
    if not version.body or not body_parses:
        return
    # Counted on the text as sent, with sample values in place of the placeholders: an
    # estimate (a long surname adds characters), which is why the limit leaves headroom.
    found = parsed["body"][0]
    sample = {p.name: rendering.sample_value(p.name) for p in found}
    text = rendering.substitute(version.body, found, sample)
    encoding, segments = sms_encoding_and_segments(text)
    if segments <= SMS_MAX_SEGMENTS:
        return
    message = _(
        "The SMS needs %(segments)s segments (%(encoding)s, %(length)s characters with sample "
        "values); at most %(max)s are allowed."
    ) % {"segments": segments, "encoding": encoding, "length": len(text), "max": SMS_MAX_SEGMENTS}
    if encoding == UCS2:
        message = "{} {}".format(
            message,
            _("These characters are not in GSM-7 and force UCS-2 (70 per SMS): %(chars)s")
            % {"chars": " ".join(_non_gsm_characters(text)[:10])},
        )
    violations.append(Violation(field="body", message=message, code="too_many_segments"))


def _starts_or_ends_with_placeholder(body: str, found: list[rendering.Placeholder]) -> bool:
    if not found:
        return False
    stripped_start = len(body) - len(body.lstrip())
    stripped_end = len(body.rstrip())
    return found[0].start == stripped_start or found[-1].end == stripped_end


def _whatsapp_button_rules(buttons: list[dict[str, Any]], violations: list[Violation]) -> None:
    def add(message: str, code: str) -> None:
        violations.append(Violation(field="buttons", message=message, code=code))

    if len(buttons) > WHATSAPP_BUTTONS_MAX:
        add(
            _("A WhatsApp template has at most %(max)s buttons.") % {"max": WHATSAPP_BUTTONS_MAX},
            "too_many_buttons",
        )
    types = [button.get("type") for button in buttons]
    for position, (button, kind) in enumerate(zip(buttons, types, strict=True), start=1):
        if kind not in WHATSAPP_BUTTON_TYPE_MAX:
            add(
                _("Button %(n)s: the type must be one of %(types)s.")
                % {"n": position, "types": ", ".join(WHATSAPP_BUTTON_TYPE_MAX)},
                "invalid_button",
            )
        text = button.get("text")
        if not isinstance(text, str) or not text.strip():
            add(_("Button %(n)s needs a text.") % {"n": position}, "button_text_required")
        elif len(text) > WHATSAPP_BUTTON_TEXT_MAX:
            add(
                _("Button %(n)s: the text has %(length)s characters; at most %(max)s.")
                % {"n": position, "length": len(text), "max": WHATSAPP_BUTTON_TEXT_MAX},
                "too_long",
            )
    for kind, limit in WHATSAPP_BUTTON_TYPE_MAX.items():
        if types.count(kind) > limit:
            add(
                _("A WhatsApp template has at most %(max)s buttons of type “%(type)s”.")
                % {"max": limit, "type": kind},
                "too_many_buttons",
            )
    # Quick replies and the other buttons must form two blocks, not alternate (Meta refuses).
    quick = [index for index, kind in enumerate(types) if kind == "quick_reply"]
    if quick and quick[-1] - quick[0] + 1 != len(quick):
        add(_("Quick-reply buttons must be next to each other."), "buttons_not_grouped")


def _whatsapp_rules(
    version: TemplateVersion,
    parsed: dict[str, list[list[rendering.Placeholder]]],
    violations: list[Violation],
) -> None:
    if not WHATSAPP_NAME_RE.match(version.template.name or ""):
        violations.append(
            Violation(
                field="name",
                message=_(
                    "WhatsApp template names use only lower-case letters, digits and "
                    "underscores (at most 512)."
                ),
                code="invalid_name",
            )
        )
    if version.subject:
        violations.append(_not_supported("subject", str(Channel.WHATSAPP.label), str(_("subject"))))
    for field, label, limit in (
        ("header", _("header"), WHATSAPP_HEADER_MAX),
        ("body", _("body"), WHATSAPP_BODY_MAX),
        ("footer", _("footer"), WHATSAPP_FOOTER_MAX),
    ):
        violation = _too_long(field, str(label), getattr(version, field) or "", limit)
        if violation:
            violations.append(violation)
    header = parsed.get("header", [[]])
    if len(header) == 1 and len(header[0]) > WHATSAPP_HEADER_PLACEHOLDERS_MAX:
        violations.append(
            Violation(
                field="header",
                message=_("A WhatsApp header may hold at most one placeholder."),
                code="too_many_placeholders",
            )
        )
    # Meta rejects templates whose body starts or ends with a parameter (also documented by
    # Twilio: twilio.com/docs/content/twilio-quick-reply).
    body = parsed.get("body", [])
    if len(body) == 1 and _starts_or_ends_with_placeholder(version.body, body[0]):
        violations.append(
            Violation(
                field="body",
                message=_(
                    "A WhatsApp body must not start or end with a placeholder; add text "
                    "before and after it."
                ),
                code="placeholder_at_edge",
            )
        )
    if isinstance(version.buttons, list) and all(isinstance(b, dict) for b in version.buttons):
        _whatsapp_button_rules(version.buttons, violations)


def _email_rules(
    version: TemplateVersion,
    parsed: dict[str, list[list[rendering.Placeholder]]],
    violations: list[Violation],
) -> None:
    if not (version.subject or "").strip():
        violations.append(
            Violation(
                field="subject",
                message=_("An e-mail needs a subject."),
                code="required",
            )
        )
    else:
        violation = _too_long("subject", str(_("subject")), version.subject, EMAIL_SUBJECT_MAX)
        if violation:
            violations.append(violation)
    # UWG section 7 (3) and RFC 8058: every marketing e-mail offers a one-click way out.
    if version.template.category == TemplateCategory.MARKETING:
        body = parsed.get("body", [])
        names = {p.name for found in body for p in found}
        if len(body) == 1 and rendering.UNSUBSCRIBE_URL not in names:
            violations.append(
                Violation(
                    field="body",
                    message=_("A marketing e-mail must contain the {{ unsubscribe_url }} link."),
                    code="unsubscribe_missing",
                )
            )


CHANNEL_RULES: Final = {
    Channel.SMS: _sms_rules,
    Channel.WHATSAPP: _whatsapp_rules,
    Channel.EMAIL: _email_rules,
}


def check_version(version: TemplateVersion) -> list[Violation]:
    """Every rule of the version's channel it breaks (empty list: it may be submitted)."""
    violations: list[Violation] = []
    if not (version.body or "").strip():
        violations.append(
            Violation(field="body", message=_("The body must not be empty."), code="required")
        )
    parsed = _parsed_parts(version, violations)
    _check_variables(version, parsed, violations)
    rules = CHANNEL_RULES.get(version.template.channel)
    if rules is not None:
        rules(version, parsed, violations)
    return violations


def validate_version(version: TemplateVersion) -> None:
    """Raise ChannelRulesViolated listing every broken rule; return quietly otherwise."""
    violations = check_version(version)
    if violations:
        raise ChannelRulesViolated(violations)
