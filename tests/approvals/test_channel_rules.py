"""Channel rules checked at submission: SMS encoding/segments, WhatsApp and e-mail limits."""

from __future__ import annotations

import pytest

from approvals.channel_rules import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    SMS_MAX_SEGMENTS,
    UCS2,
    check_version,
    sms_encoding_and_segments,
    validate_version,
)
from approvals.errors import ChannelRulesViolated, Violation
from approvals.models import MessageTemplate, TemplateVersion
from approvals.rendering import placeholders

QUICK = {"type": "quick_reply", "text": "Ja"}


def make_version(
    channel,
    body="Hallo, Ihr Termin ist morgen um 10 Uhr.",
    *,
    category="utility",
    name="termin_erinnerung",
    variables=None,
    **fields,
):
    """An unsaved version; variables default to the placeholders used (no services)."""
    template = MessageTemplate(name=name, channel=channel, category=category, language="de")
    if channel == "email":
        fields.setdefault("subject", "Ihr Termin")
    version = TemplateVersion(template=template, body=body, **fields)
    if variables is None:
        texts = [version.subject, version.header, version.body, version.footer]
        texts += [
            s
            for b in version.buttons
            if isinstance(b, dict)
            for s in b.values()
            if isinstance(s, str)
        ]
        variables = []
        for text in texts:
            variables += [n for n in placeholders(text or "") if n not in variables]
    version.variables = variables
    return version


def codes(version):
    return {(v.field, v.code) for v in check_version(version)}


# GSM-7 vs UCS-2 and segments


def test_the_gsm7_tables_have_the_standard_sizes():
    # 128 positions minus the escape; ten characters in the extension table.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("", GSM7, 1),
        ("Grüße aus Köln, Ärztin Müller", GSM7, 1),  # ä ö ü Ä ß are GSM-7 basic
        ("Çà @ £ $ ¥ § ¿ ¡ Ñ ñ Ø å Δ Ω", GSM7, 1),
        ("Привет", UCS2, 1),
        ("Hallo 😀", UCS2, 1),
        ("ç", UCS2, 1),  # only the capital Ç is in GSM-7
        ("„Zitat“", UCS2, 1),  # German typographic quotes are not GSM-7
        ("á", UCS2, 1),
        ("€ {} [] ~ ^ | \\", GSM7, 1),
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),  # 160 septets: the euro counts double
        ("€" * 81, GSM7, 2),
        ("a" * 159 + "€", GSM7, 2),  # 161 septets
        ("a" * 158 + "€", GSM7, 1),
        ("ж" * 70, UCS2, 1),
        ("ж" * 71, UCS2, 2),
        ("ж" * 134, UCS2, 2),
        ("ж" * 135, UCS2, 3),
        ("😀" * 35, UCS2, 1),  # an emoji is a surrogate pair: two UCS-2 units
        ("😀" * 36, UCS2, 2),
        ("a" * 153 * SMS_MAX_SEGMENTS, GSM7, SMS_MAX_SEGMENTS),
        ("a" * (153 * SMS_MAX_SEGMENTS + 1), GSM7, SMS_MAX_SEGMENTS + 1),
    ],
)
def test_sms_encoding_and_segments(text, encoding, segments):
    assert sms_encoding_and_segments(text) == (encoding, segments)


def test_an_extension_character_is_never_split_across_parts():
    # 306 septets would fit two parts of 153, but the euro cannot straddle the boundary.
    assert sms_encoding_and_segments("a" * 152 + "€" + "a" * 152) == (GSM7, 3)


def test_an_emoji_is_never_split_across_parts():
    assert sms_encoding_and_segments("ж" * 66 + "😀" + "ж" * 66) == (UCS2, 3)


# SMS


def test_a_plain_sms_passes():
    assert (
        check_version(make_version("sms", "Hallo {{ first_name }}, Ihr Termin ist morgen.")) == []
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", "Betreff"), ("header", "Kopf"), ("footer", "Fuß"), ("buttons", [QUICK])],
)
def test_sms_has_no_subject_header_footer_or_buttons(field, value):
    version = make_version("sms", **{field: value})

    assert codes(version) == {(field, "not_supported")}


def test_sms_at_the_segment_limit_passes_and_one_more_character_fails():
    fits = make_version("sms", "a" * 153 * SMS_MAX_SEGMENTS)
    too_long = make_version("sms", "a" * (153 * SMS_MAX_SEGMENTS + 1))

    assert check_version(fits) == []
    assert codes(too_long) == {("body", "too_many_segments")}


def test_ucs2_sms_limit_and_the_message_names_the_culprits():
    limit = 67 * SMS_MAX_SEGMENTS
    fits = make_version("sms", "„" + "a" * (limit - 1))
    too_long = make_version("sms", "„" + "a" * limit)

    assert check_version(fits) == []
    [violation] = check_version(too_long)
    assert violation.code == "too_many_segments"
    assert "UCS-2" in violation.message
    assert "„" in violation.message


def test_sms_segments_are_counted_with_sample_values_not_the_placeholder_text():
    # "{{ first_name }}" is 16 characters; its sample value "Jana" is 4.
    limit = 153 * SMS_MAX_SEGMENTS
    fits = make_version("sms", "{{ first_name }}" + "a" * (limit - 4))
    too_long = make_version("sms", "{{ first_name }}" + "a" * (limit - 3))

    assert check_version(fits) == []
    assert codes(too_long) == {("body", "too_many_segments")}


def test_the_segment_limit_is_a_documented_constant():
    assert SMS_MAX_SEGMENTS == 6


# WhatsApp


def test_a_complete_whatsapp_template_passes():
    version = make_version(
        "whatsapp",
        "Hallo {{ first_name }}, Ihr Termin ist morgen um 10 Uhr. Passt das?",
        header="Terminerinnerung für {{ last_name }}",
        footer="Praxis am Markt",
        buttons=[QUICK, {"type": "quick_reply", "text": "Nein, bitte verschieben"}],
    )

    assert check_version(version) == []


@pytest.mark.parametrize(
    ("field", "limit"),
    [("body", 1024), ("header", 60), ("footer", 60)],
)
def test_whatsapp_text_limits(field, limit):
    def text(length):
        return "Hallo " + "a" * (length - 7) + "."

    fits = make_version("whatsapp", **{field: text(limit)})
    too_long = make_version("whatsapp", **{field: text(limit + 1)})

    assert check_version(fits) == []
    assert codes(too_long) == {(field, "too_long")}


def test_whatsapp_has_no_subject():
    assert codes(make_version("whatsapp", subject="Betreff")) == {("subject", "not_supported")}


def test_whatsapp_header_holds_at_most_one_placeholder():
    version = make_version("whatsapp", header="{{ first_name }} und {{ last_name }}")

    assert codes(version) == {("header", "too_many_placeholders")}


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ("{{ first_name }}, Ihr Termin ist morgen.", True),
        ("Ihr Termin ist morgen, {{ first_name }}", True),
        ("  {{ first_name }}, Ihr Termin ist morgen.", True),
        ("Ihr Termin ist morgen, {{ first_name }}\n", True),
        ("Hallo {{ first_name }}, Ihr Termin ist morgen.", False),
        ("Ihr Termin ist morgen, {{ first_name }}.", False),
    ],
)
def test_whatsapp_body_must_not_start_or_end_with_a_placeholder(body, refused):
    expected = {("body", "placeholder_at_edge")} if refused else set()

    assert codes(make_version("whatsapp", body)) == expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("termin_erinnerung", True),
        ("termin_2", True),
        ("a" * 512, True),
        ("a" * 513, False),
        ("Termin_Erinnerung", False),
        ("termin-erinnerung", False),
        ("termin erinnerung", False),
        ("termin_ä", False),
        ("", False),
    ],
)
def test_whatsapp_template_name(name, valid):
    expected = set() if valid else {("name", "invalid_name")}

    assert codes(make_version("whatsapp", name=name)) == expected


@pytest.mark.parametrize(
    ("buttons", "expected"),
    [
        ([QUICK] * 3, set()),
        ([QUICK] * 4, {("buttons", "too_many_buttons")}),
        (
            [{"type": "url", "text": "Web", "url": "https://example.org"}] * 2
            + [{"type": "phone_number", "text": "Anrufen", "phone_number": "+4930123"}],
            set(),
        ),
        (
            [{"type": "url", "text": "Web", "url": "https://example.org"}] * 3,
            {("buttons", "too_many_buttons")},
        ),
        (
            [{"type": "phone_number", "text": "Anrufen", "phone_number": "+4930123"}] * 2,
            {("buttons", "too_many_buttons")},
        ),
        ([{"type": "copy_code", "text": "Code kopieren"}] * 2, {("buttons", "too_many_buttons")}),
        ([{"type": "quick_reply", "text": "a" * 25}], set()),
        ([{"type": "quick_reply", "text": "a" * 26}], {("buttons", "too_long")}),
        ([{"type": "quick_reply"}], {("buttons", "button_text_required")}),
        ([{"type": "quick_reply", "text": "  "}], {("buttons", "button_text_required")}),
        ([{"type": "flow", "text": "Los"}], {("buttons", "invalid_button")}),
        ([{"text": "Los"}], {("buttons", "invalid_button")}),
        (
            [QUICK, {"type": "url", "text": "Web", "url": "https://example.org"}, QUICK],
            {("buttons", "buttons_not_grouped")},
        ),
        (
            [QUICK, QUICK, {"type": "url", "text": "Web", "url": "https://example.org"}],
            set(),
        ),
    ],
)
def test_whatsapp_button_rules(buttons, expected):
    assert codes(make_version("whatsapp", buttons=buttons)) == expected


def test_whatsapp_allows_at_most_ten_buttons():
    buttons = (
        [QUICK] * 3
        + [{"type": "url", "text": "Web", "url": "https://example.org"}] * 2
        + [{"type": "phone_number", "text": "Anrufen", "phone_number": "+4930123"}]
        + [{"type": "copy_code", "text": "Code"}]
        + [QUICK] * 4
    )

    found = check_version(make_version("whatsapp", buttons=buttons))

    assert {v.code for v in found} >= {"too_many_buttons"}
    assert any("10" in v.message for v in found)


# E-mail


def test_a_complete_email_passes():
    version = make_version("email", "Hallo {{ first_name }}, Ihr Termin ist morgen.")

    assert check_version(version) == []


@pytest.mark.parametrize("subject", ["", "   "])
def test_email_needs_a_subject(subject):
    assert codes(make_version("email", subject=subject)) == {("subject", "required")}


def test_email_subject_limit():
    assert check_version(make_version("email", subject="a" * 200)) == []
    assert codes(make_version("email", subject="a" * 201)) == {("subject", "too_long")}


@pytest.mark.parametrize("channel", ["email", "sms", "whatsapp"])
@pytest.mark.parametrize("body", ["", "  \n "])
def test_every_channel_needs_a_body(channel, body):
    assert ("body", "required") in codes(make_version(channel, body))


def test_marketing_email_needs_the_unsubscribe_placeholder_in_the_body():
    without = make_version("email", "Neue Angebote für Sie.", category="marketing")
    in_subject_only = make_version(
        "email",
        "Neue Angebote für Sie.",
        subject="Abmelden: {{ unsubscribe_url }}",
        category="marketing",
    )
    with_link = make_version(
        "email", "Neue Angebote. Abmelden: {{ unsubscribe_url }}", category="marketing"
    )

    assert codes(without) == {("body", "unsubscribe_missing")}
    assert codes(in_subject_only) == {("body", "unsubscribe_missing")}
    assert check_version(with_link) == []


@pytest.mark.parametrize("category", ["utility", "service", "authentication"])
def test_only_marketing_emails_need_the_unsubscribe_placeholder(category):
    assert check_version(make_version("email", "Ihre Rechnung.", category=category)) == []


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_unsubscribe_placeholder_rule_is_for_e_mail_only(channel):
    version = make_version(channel, "Neue Angebote für Sie.", category="marketing")

    assert check_version(version) == []


# Every channel: declared variables and syntax


@pytest.mark.parametrize("channel", ["email", "sms", "whatsapp"])
def test_undeclared_and_unused_variables(channel):
    version = make_version(
        channel,
        "Hallo {{ first_name }}, bis {{ datum }}.",
        variables=["first_name", "last_name"],
    )

    assert codes(version) == {("body", "undeclared_variable"), ("variables", "unused_variable")}


@pytest.mark.parametrize("channel", ["email", "sms", "whatsapp"])
@pytest.mark.parametrize(
    "body",
    [
        "Hallo {{ first name }}.",
        "Hallo {{ first_name.",
        "Hallo first_name }}.",
        "Hallo {{ __class__ }}.",
        "Hallo {{ contact.team.secret }}.",
        "Hallo {{ contact.__dict__ }}.",
    ],
)
def test_placeholder_syntax_must_parse(channel, body):
    assert codes(make_version(channel, body, variables=[])) == {("body", "template_syntax")}


def test_syntax_error_in_a_button_names_the_buttons():
    version = make_version(
        "whatsapp", buttons=[{"type": "quick_reply", "text": "Ja {{ x"}], variables=[]
    )

    assert codes(version) == {("buttons", "template_syntax")}


def test_placeholders_in_buttons_count_as_used():
    version = make_version(
        "whatsapp",
        buttons=[{"type": "url", "text": "Details", "url": "https://example.org/{{ code }}"}],
        variables=["code"],
    )

    assert check_version(version) == []


@pytest.mark.parametrize("buttons", ["Ja", [["quick_reply", "Ja"]]])
def test_buttons_that_are_not_objects_are_a_violation(buttons):
    version = make_version("whatsapp", variables=[])
    version.buttons = buttons

    assert ("buttons", "template_syntax") in codes(version)


def test_all_violations_are_reported_at_once():
    version = make_version(
        "whatsapp",
        "{{ first_name }} " + "a" * 1024,
        subject="Betreff",
        footer="f" * 61,
        buttons=[QUICK] * 4,
        name="Bad-Name",
        variables=["first_name", "unused"],
    )

    assert codes(version) == {
        ("name", "invalid_name"),
        ("subject", "not_supported"),
        ("body", "too_long"),
        ("footer", "too_long"),
        ("body", "placeholder_at_edge"),
        ("buttons", "too_many_buttons"),
        ("variables", "unused_variable"),
    }


# Raising the violations


def test_validate_version_passes_quietly():
    assert validate_version(make_version("sms")) is None


def test_validate_version_raises_with_every_violation_listed():
    version = make_version("email", "Angebote.", subject="", category="marketing")

    with pytest.raises(ChannelRulesViolated) as caught:
        validate_version(version)

    error = caught.value
    assert error.code == "channel_rules_violated"
    assert {(v.field, v.code) for v in error.violations} == {
        ("subject", "required"),
        ("body", "unsubscribe_missing"),
    }
    assert all(isinstance(v, Violation) for v in error.violations)
    assert "subject" in error.message
    assert "unsubscribe_url" in error.message
    assert error.field == "subject"
