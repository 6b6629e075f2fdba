"""The German catalogue is complete, compiled and actually used.

When new strings are marked, `make messages` regenerates locale/*/django.po and these tests fail
until the German entries are translated and compiled again. That is intended.
"""

from __future__ import annotations

import gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation

from consent.services.inbound import _reply
from crm.addresses import AddressInvalid, normalise_address
from crm.errors import DomainError
from crm.models import Contact

LOCALE = Path(settings.BASE_DIR) / "locale"
DE_PO = LOCALE / "de" / "LC_MESSAGES" / "django.po"
DE_MO = LOCALE / "de" / "LC_MESSAGES" / "django.mo"

# %(name)s, %s, %d, ... and {name}; "%%" is a literal percent sign, not a placeholder.
PLACEHOLDER = re.compile(
    r"%%|%\([A-Za-z_]\w*\)[-#0 +]*\d*(?:\.\d+)?[sdifrxXeEgGc]|%[sdifr]|\{\w*\}"
)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b"}


@dataclass
class PoEntry:
    msgid: str | None = None
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: str = ""
    msgstr_plural: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    line: int = 0

    @property
    def translations(self) -> list[str]:
        if self.msgid_plural is None:
            return [self.msgstr]
        return [self.msgstr_plural[index] for index in sorted(self.msgstr_plural)]


def _unquote(text: str) -> str:
    text = text.strip()
    assert len(text) >= 2, text
    assert text[0] == text[-1] == '"', text
    return re.sub(r"\\(.)", lambda match: ESCAPES.get(match[1], match[1]), text[1:-1])


def parse_po(path: Path) -> list[PoEntry]:
    """A small PO reader: entries with flags, context, plural forms; obsolete ones skipped."""
    entries: list[PoEntry] = []
    entry: PoEntry | None = None
    target: tuple[str, int | None] | None = None

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        starts_entry = line.startswith(("#", "msgctxt ", "msgid "))
        if not line or (starts_entry and entry is not None and entry.msgid is not None):
            if entry is not None:
                entries.append(entry)
            entry, target = None, None
        if not line or line.startswith("#~"):
            continue
        if entry is None:
            entry = PoEntry(line=number)
        if line.startswith("#,"):
            entry.flags.update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            assert target is not None, f"{path}:{number}: continuation without a keyword"
            name, index = target
            if index is None:
                setattr(entry, name, getattr(entry, name) + _unquote(line))
            else:
                entry.msgstr_plural[index] += _unquote(line)
        else:
            keyword, _space, value = line.partition(" ")
            plural = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
            if plural:
                target = ("msgstr_plural", int(plural[1]))
                entry.msgstr_plural[int(plural[1])] = _unquote(value)
            elif keyword in {"msgid", "msgid_plural", "msgctxt", "msgstr"}:
                target = (keyword, None)
                setattr(entry, keyword, _unquote(value))
            else:
                raise AssertionError(f"{path}:{number}: cannot read {raw!r}")
    if entry is not None:
        entries.append(entry)
    return [entry for entry in entries if entry.msgid is not None]


@pytest.fixture(scope="module")
def de_entries() -> list[PoEntry]:
    entries = parse_po(DE_PO)
    assert entries[0].msgid == "", "the catalogue starts with its header"
    return entries


@pytest.fixture(scope="module")
def messages(de_entries) -> list[PoEntry]:
    return [entry for entry in de_entries if entry.msgid != ""]


@pytest.fixture(scope="module")
def compiled() -> gettext.GNUTranslations:
    with DE_MO.open("rb") as handle:
        return gettext.GNUTranslations(handle)


@pytest.fixture(autouse=True)
def _language_reset():
    """Requests below activate a language through LocaleMiddleware; do not leak it."""
    yield
    translation.deactivate()


def _where(entry: PoEntry) -> str:
    return f"{DE_PO.name}:{entry.line} {entry.msgid!r}"


# --- (a) complete: nothing untranslated, nothing fuzzy ----------------------------------------


def test_the_parser_reads_the_catalogue(messages):
    assert len(messages) > 300
    assert any(entry.msgid_plural for entry in messages)
    assert all(len(entry.translations) == 2 for entry in messages if entry.msgid_plural)


def test_header_is_german_with_two_plural_forms(de_entries):
    header = de_entries[0].msgstr
    assert "Language: de\n" in header
    assert "Plural-Forms: nplurals=2; plural=(n != 1);" in header
    assert "charset=UTF-8" in header
    assert "fuzzy" not in de_entries[0].flags


def test_every_entry_is_translated(messages):
    untranslated = [
        _where(entry) for entry in messages if not all(text for text in entry.translations)
    ]
    assert untranslated == [], "translate these (make messages added them):\n" + "\n".join(
        untranslated
    )


def test_no_entry_is_fuzzy(messages):
    fuzzy = [_where(entry) for entry in messages if "fuzzy" in entry.flags]
    assert fuzzy == [], "check these and remove the fuzzy flag:\n" + "\n".join(fuzzy)


def test_translations_keep_the_shape_of_the_source(messages):
    """Trailing newlines, surrounding spaces and HTML tags survive translation."""
    problems = []
    for entry in messages:
        for text in entry.translations:
            if text.endswith("\n") != entry.msgid.endswith("\n"):
                problems.append(_where(entry))
            if text != text.strip() and entry.msgid == entry.msgid.strip():
                problems.append(_where(entry))
            if sorted(re.findall(r"</?\w+", text)) != sorted(re.findall(r"</?\w+", entry.msgid)):
                problems.append(_where(entry))
    assert problems == []


# --- (b) the compiled .mo matches the .po -----------------------------------------------------


def test_mo_exists():
    assert DE_MO.exists(), "run `make messages` (compilemessages)"
    assert DE_MO.stat().st_size > 0


def test_mo_translates_every_msgid_like_the_po(messages, compiled):
    stale = []
    for entry in messages:
        if entry.msgid_plural is None:
            got = (
                compiled.pgettext(entry.msgctxt, entry.msgid)
                if entry.msgctxt is not None
                else compiled.gettext(entry.msgid)
            )
            if got != entry.msgstr:
                stale.append(_where(entry))
        else:
            one = compiled.ngettext(entry.msgid, entry.msgid_plural, 1)
            many = compiled.ngettext(entry.msgid, entry.msgid_plural, 5)
            if (one, many) != (entry.msgstr_plural[0], entry.msgstr_plural[1]):
                stale.append(_where(entry))
    assert stale == [], "the .mo is out of date; run compilemessages:\n" + "\n".join(stale)


def test_mo_holds_nothing_the_po_does_not(messages, compiled):
    known = set()
    for entry in messages:
        key = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        known.add(key)
    catalog_ids = {key[0] if isinstance(key, tuple) else key for key in compiled._catalog}
    assert catalog_ids - {""} == known


# --- (c) key strings come out German ----------------------------------------------------------


def test_model_names_are_german():
    with translation.override("de"):
        assert str(Contact._meta.verbose_name_plural) == "Kontakte"
        assert str(Contact._meta.get_field("first_name").verbose_name) == "Vorname"
        assert str(Contact._meta.get_field("preferred_channel").verbose_name) == "bevorzugter Kanal"


def test_keyword_replies_follow_the_contacts_language():
    german = _reply(Contact(language="de"), "withdraw", [])
    english = _reply(Contact(language="en"), "withdraw", [])
    assert german.startswith("Sie wurden abgemeldet")
    assert "START" in german
    assert english.startswith("You have been unsubscribed")


def test_domain_errors_speak_german():
    with translation.override("de"):
        assert DomainError().message == "Der Vorgang wurde abgelehnt."
        with pytest.raises(AddressInvalid) as error:
            normalise_address("email", "kein-at-zeichen")
    assert error.value.message == "„kein-at-zeichen“ ist keine gültige E-Mail-Adresse."


def test_english_stays_the_source_text():
    with translation.override("en"):
        assert str(Contact._meta.verbose_name_plural) == "contacts"
        assert DomainError().message == "The operation was refused."


# --- (d) the admin answers in German ----------------------------------------------------------


def test_admin_login_page_is_german(client):
    response = client.get("/admin/login/", headers={"accept-language": "de"})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'lang="de"' in page
    assert "Benutzername" in page
    assert "Anmelden" in page


def test_admin_index_shows_the_apps_in_german(client, superuser):
    client.force_login(superuser)
    response = client.get("/admin/", headers={"accept-language": "de"})
    assert response.status_code == 200
    page = response.content.decode()
    for label in ("Einwilligungen", "Kontakte", "Sperrliste", "Betroffenenanfragen"):
        assert label in page


# --- (e) placeholders survive translation -----------------------------------------------------


def _placeholders(text: str) -> set[str]:
    return {match for match in PLACEHOLDER.findall(text) if match != "%%"}


def test_placeholders_match(messages):
    mismatched = []
    for entry in messages:
        sources = [entry.msgid] if entry.msgid_plural is None else [entry.msgid, entry.msgid_plural]
        for index, text in enumerate(entry.translations):
            source = sources[min(index, len(sources) - 1)]
            if _placeholders(text) != _placeholders(source):
                mismatched.append(f"{_where(entry)}: {sorted(_placeholders(text))}")
    assert mismatched == [], "\n".join(mismatched)


def test_placeholder_pattern_recognises_every_style():
    assert _placeholders("%(count)d of %(total)s, %s, %d, {name}, 100%%") == {
        "%(count)d",
        "%(total)s",
        "%s",
        "%d",
        "{name}",
    }
