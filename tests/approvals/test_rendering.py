"""The placeholder language: parsing, rendering, sample data and contact context."""

from __future__ import annotations

import pytest
from django.utils import translation

from approvals.errors import RenderError
from approvals.models import MessageTemplate, TemplateVersion
from approvals.rendering import (
    CONTACT_FIELDS,
    RenderedMessage,
    contact_context,
    placeholders,
    render,
    render_preview,
    sample_context,
)
from consent.services.unsubscribe import unsubscribe_target
from crm.models import Salutation
from tests.factories import ContactFactory, PurposeFactory, TeamFactory


def make_version(body="Hallo {{ first_name }}, bis bald.", *, variables=None, **fields):
    """An unsaved version; variables default to the placeholders used (no services)."""
    template = MessageTemplate(
        name="termin_erinnerung",
        channel=fields.pop("channel", "email"),
        category=fields.pop("category", "utility"),
        language="de",
    )
    version = TemplateVersion(template=template, body=body, **fields)
    if variables is None:
        texts = [version.subject, version.header, version.body, version.footer]
        texts += [s for b in version.buttons for s in b.values() if isinstance(s, str)]
        variables = []
        for text in texts:
            variables += [n for n in placeholders(text or "") if n not in variables]
    version.variables = variables
    return version


# Finding placeholders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("Kein Platzhalter.", []),
        ("Hallo {{ first_name }}!", ["first_name"]),
        ("Hallo {{first_name}}!", ["first_name"]),
        ("Hallo {{  first_name\t}}!", ["first_name"]),
        ("{{ a }} {{ b }} {{ a }}", ["a", "b"]),
        ("{{ contact.salutation }} {{ last_name }}", ["contact.salutation", "last_name"]),
        ("{{ unsubscribe_url }}", ["unsubscribe_url"]),
        ("Termin am {{ termin_datum_2 }}", ["termin_datum_2"]),
        # Single braces and Django template tags are plain text, never executed.
        ("Preis {5} und {% now 'Y' %}", []),
        ("Nur eine } Klammer { hier", []),
    ],
)
def test_placeholders_in_order_of_first_use(text, expected):
    assert placeholders(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hallo {{ first name }}",
        "Hallo {{ first_name",
        "Hallo {{ first_name }",
        "Hallo first_name }}",
        "{{ }}",
        "{{ First_Name }}",
        "{{ 1st }}",
        "{{ first-name }}",
        "{{ {{ first_name }} }}",
        "{{{ first_name }}}",
        "{{ first_name|upper }}",
        "{{ first_name() }}",
        "{{ 7*7 }}",
        "{{ first_name\n}}",
    ],
)
def test_malformed_braces_are_a_syntax_error(text):
    with pytest.raises(RenderError) as caught:
        placeholders(text, field="body")
    assert caught.value.code == "template_syntax"
    assert caught.value.field == "body"


@pytest.mark.parametrize(
    "text",
    [
        "{{ __class__ }}",
        "{{ _private }}",
        "{{ contact.__dict__ }}",
        "{{ contact.__class__ }}",
        "{{ contact.team.secret }}",
        "{{ contact.team }}",
        "{{ contact.attributes }}",
        "{{ contact.pk }}",
        "{{ user.password }}",
        "{{ settings.SECRET_KEY }}",
        "{{ first_name.upper }}",
    ],
)
def test_attribute_access_beyond_the_whitelist_is_refused(text):
    with pytest.raises(RenderError) as caught:
        placeholders(text)
    assert caught.value.code == "template_syntax"


@pytest.mark.parametrize("name", CONTACT_FIELDS)
def test_whitelisted_contact_fields_are_allowed_dotted(name):
    assert placeholders(f"{{{{ contact.{name} }}}}") == [f"contact.{name}"]


# Rendering


def test_render_fills_every_part_and_button_texts():
    version = make_version(
        subject="Ihr Termin, {{ first_name }}",
        header="Termin für {{ last_name }}",
        body="Hallo {{ contact.salutation }} {{ last_name }}, bis {{ datum }}.",
        footer="Praxis {{ organisation }}",
        buttons=[
            {"type": "quick_reply", "text": "Ja, {{ first_name }}"},
            {"type": "url", "text": "Details", "url": "https://example.org/t/{{ code }}"},
        ],
        channel="whatsapp",
    )
    context = {
        "first_name": "Jana",
        "last_name": "Schmidt",
        "contact.salutation": "Frau",
        "datum": "Montag",
        "organisation": "am Markt",
        "code": "A7",
    }

    rendered = render(version, context)

    assert rendered == RenderedMessage(
        subject="Ihr Termin, Jana",
        header="Termin für Schmidt",
        body="Hallo Frau Schmidt, bis Montag.",
        footer="Praxis am Markt",
        buttons=[
            {"type": "quick_reply", "text": "Ja, Jana"},
            {"type": "url", "text": "Details", "url": "https://example.org/t/A7"},
        ],
    )


def test_render_does_not_change_the_version():
    version = make_version(buttons=[{"type": "quick_reply", "text": "Hi {{ first_name }}"}])

    render(version, {"first_name": "Jana"})

    assert version.body == "Hallo {{ first_name }}, bis bald."
    assert version.buttons == [{"type": "quick_reply", "text": "Hi {{ first_name }}"}]


def test_values_are_str_converted():
    version = make_version("Noch {{ tage }} Tage bis {{ datum }}.")

    rendered = render(version, {"tage": 3, "datum": 2025.5})

    assert rendered.body == "Noch 3 Tage bis 2025.5."


@pytest.mark.parametrize(
    "value",
    ["{{ last_name }}", "{{ unsubscribe_url }}", "{% debug %}", "{{ __class__ }}", "}} {{"],
)
def test_values_are_not_expanded_again(value):
    version = make_version("Hallo {{ first_name }} {{ last_name }}")

    rendered = render(version, {"first_name": value, "last_name": "Schmidt"})

    assert rendered.body == f"Hallo {value} Schmidt"


def test_a_placeholder_not_declared_is_unknown():
    version = make_version("Hallo {{ first_name }} {{ last_name }}", variables=["first_name"])

    with pytest.raises(RenderError) as caught:
        render(version, {"first_name": "Jana", "last_name": "Schmidt"})

    assert caught.value.code == "unknown_variable"
    assert caught.value.field == "body"
    assert "last_name" in caught.value.message


def test_an_unknown_placeholder_in_a_button_names_the_buttons():
    version = make_version(
        "Hallo {{ first_name }}.",
        variables=["first_name"],
        buttons=[{"type": "quick_reply", "text": "{{ antwort }}"}],
    )

    with pytest.raises(RenderError) as caught:
        render(version, {"first_name": "Jana", "antwort": "Ja"})

    assert (caught.value.code, caught.value.field) == ("unknown_variable", "buttons")


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"last_name": "Schmidt"},
        {"first_name": None},
        {"first_name": ""},
        {"first_name": "   "},
        {"first_name": "\n"},
    ],
)
def test_a_missing_or_empty_value_is_an_error_never_an_empty_string(context):
    version = make_version("Hallo {{ first_name }}, bis bald.")

    with pytest.raises(RenderError) as caught:
        render(version, context)

    assert caught.value.code == "missing_variable"
    assert caught.value.field == "body"
    assert "first_name" in caught.value.message


def test_missing_in_subject_names_the_subject():
    version = make_version("Text ohne Platzhalter.", subject="Hallo {{ first_name }}")

    with pytest.raises(RenderError) as caught:
        render(version, {})

    assert (caught.value.code, caught.value.field) == ("missing_variable", "subject")


def test_syntax_errors_come_before_unknown_or_missing_ones():
    version = make_version("Hallo {{ first name }} {{ other }}", variables=[])

    with pytest.raises(RenderError) as caught:
        render(version, {})

    assert caught.value.code == "template_syntax"


def test_a_dotted_name_is_a_key_not_an_attribute_lookup():
    contact_like = type("Contact", (), {"first_name": "Jana"})()
    version = make_version("Hallo {{ contact.first_name }}.")

    with pytest.raises(RenderError) as caught:
        render(version, {"contact": contact_like})

    assert caught.value.code == "missing_variable"


def test_an_object_value_is_only_str_converted():
    class Secretive:
        secret = "geheim"

        def __str__(self):
            return "Jana"

    version = make_version("Hallo {{ first_name }}.")

    assert render(version, {"first_name": Secretive()}).body == "Hallo Jana."


@pytest.mark.parametrize(
    "buttons",
    ["not a list", [["type", "quick_reply"]], ["Ja"]],
)
def test_malformed_buttons_are_refused(buttons):
    version = make_version("Hallo.", variables=[])
    version.buttons = buttons

    with pytest.raises(RenderError) as caught:
        render(version, {})

    assert (caught.value.code, caught.value.field) == ("template_syntax", "buttons")


# Samples and preview


def test_sample_context_has_a_plausible_german_value_for_every_declared_variable():
    version = make_version(
        "{{ salutation }} {{ first_name }} {{ last_name }} {{ unsubscribe_url }} "
        "{{ contact.first_name }} {{ termin_datum }}"
    )

    sample = sample_context(version)

    assert sample["first_name"] == "Jana"
    assert sample["last_name"] == "Schmidt"
    assert sample["salutation"] == "Frau"
    assert sample["contact.first_name"] == "Jana"
    assert sample["termin_datum"] == "Beispiel termin_datum"
    assert sample["unsubscribe_url"].startswith("http")
    assert sample["unsubscribe_url"].endswith("/u/example/")
    assert set(sample) == set(version.variables)


def test_render_preview_renders_with_sample_data():
    version = make_version(
        "Hallo {{ contact.salutation }} {{ last_name }}. Abmelden: {{ unsubscribe_url }}",
        subject="Neuigkeiten für {{ first_name }}",
    )

    preview = render_preview(version)

    assert preview.subject == "Neuigkeiten für Jana"
    assert preview.body.startswith("Hallo Frau Schmidt. Abmelden: http")


def test_render_preview_reports_an_undeclared_placeholder():
    version = make_version("Hallo {{ first_name }}", variables=[])

    with pytest.raises(RenderError) as caught:
        render_preview(version)

    assert caught.value.code == "unknown_variable"


# Context for a real contact


@pytest.mark.django_db
def test_contact_context_has_the_whitelisted_fields_bare_and_dotted():
    contact = ContactFactory(
        first_name="Jana",
        last_name="Schmidt",
        salutation=Salutation.MS,
        organisation="Apotheke am Markt",
        profession="Apothekerin",
        attributes={"secret": "nope"},
    )

    context = contact_context(contact)

    with translation.override(contact.language):
        salutation = str(Salutation.MS.label)
    expected = {
        "first_name": "Jana",
        "last_name": "Schmidt",
        "full_name": "Jana Schmidt",
        "salutation": salutation,
        "organisation": "Apotheke am Markt",
        "profession": "Apothekerin",
    }
    assert context == {**expected, **{f"contact.{k}": v for k, v in expected.items()}}
    assert "unsubscribe_url" not in context


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "expected"), [("de", "Frau"), ("en", "Ms")])
def test_salutation_is_shown_in_the_contact_s_language(language, expected):
    contact = ContactFactory(salutation=Salutation.MS, language=language)

    with translation.override("en" if language == "de" else "de"):
        context = contact_context(contact)

    assert context["salutation"] == expected
    assert context["contact.salutation"] == expected


@pytest.mark.django_db
def test_a_contact_without_salutation_cannot_fill_a_salutation_placeholder():
    contact = ContactFactory(salutation=Salutation.NONE)
    version = make_version("Guten Tag {{ salutation }} {{ last_name }},")

    context = contact_context(contact)

    assert context["salutation"] == ""
    with pytest.raises(RenderError) as caught:
        render(version, context)
    assert caught.value.code == "missing_variable"


@pytest.mark.django_db
def test_contact_context_adds_a_working_unsubscribe_link_for_purpose_and_channel():
    contact = ContactFactory()
    purpose = PurposeFactory(team=contact.team)

    context = contact_context(contact, purpose=purpose, channel="email")

    url = context["unsubscribe_url"]
    token = url.rstrip("/").rsplit("/", 1)[1]
    target = unsubscribe_target(token)
    assert (target.contact, target.purpose, target.channel) == (contact, purpose, "email")


@pytest.mark.django_db
def test_contact_context_without_channel_has_no_unsubscribe_link():
    contact = ContactFactory()
    purpose = PurposeFactory(team=contact.team)

    assert "unsubscribe_url" not in contact_context(contact, purpose=purpose)


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["other_team", "bad_channel"])
def test_contact_context_refuses_an_unsubscribe_link_that_would_not_work(case):
    contact = ContactFactory()
    team = TeamFactory() if case == "other_team" else contact.team
    purpose = PurposeFactory(team=team)
    channel = "fax" if case == "bad_channel" else "email"

    with pytest.raises(RenderError) as caught:
        contact_context(contact, purpose=purpose, channel=channel)

    assert caught.value.code == "unsubscribe_invalid"


@pytest.mark.django_db
def test_contact_context_merges_extra_values():
    contact = ContactFactory(first_name="Jana")

    context = contact_context(contact, extra={"termin_datum": "Montag", "first_name": "J."})

    assert context["termin_datum"] == "Montag"
    assert context["first_name"] == "J."
    assert context["contact.first_name"] == "Jana"


@pytest.mark.django_db
def test_a_marketing_e_mail_renders_for_a_real_contact():
    contact = ContactFactory(first_name="Jana", last_name="Schmidt")
    purpose = PurposeFactory(team=contact.team)
    version = make_version(
        "Hallo {{ first_name }} {{ contact.last_name }}, abmelden: {{ unsubscribe_url }}",
        subject="News für {{ first_name }}",
        category="marketing",
    )

    rendered = render(version, contact_context(contact, purpose=purpose, channel="email"))

    assert rendered.subject == "News für Jana"
    assert rendered.body.startswith("Hallo Jana Schmidt, abmelden: http")
    assert "/u/" in rendered.body
