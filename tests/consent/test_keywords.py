from __future__ import annotations

import pytest

from consent import keywords
from tests.factories import PurposeFactory

STOP_VARIANTS = [
    "STOP",
    "Stop!",
    " stopp ",
    "Abmelden.",
    "UNSUBSCRIBE",
    "cancel",
    "End",
    "quit",
    "STOPALL",
    "revoke",
    "opt out",
    "Opt-Out",
    "OPT  OUT",
    "stop.",
    "\tStopp!!\n",
    "\uff33\uff34\uff2f\uff30",  # full-width STOP from some phone keyboards
]


@pytest.mark.parametrize("text", STOP_VARIANTS)
def test_stop_variants_are_withdraw_keywords(text):
    assert keywords.keyword_kind(text) == "withdraw"


@pytest.mark.parametrize("text", ["START", "Unstop", "anmelden!", "Yes", " ja "])
def test_grant_keywords(text):
    assert keywords.keyword_kind(text) == "grant"


@pytest.mark.parametrize("text", ["HELP", "Hilfe?", "info"])
def test_help_keywords(text):
    assert keywords.keyword_kind(text) == "help"


@pytest.mark.parametrize(
    "text",
    [
        "We have got to STOP this bill",
        "stop it",
        "Please STOP",
        "STOP STOP",
        "stopping",
        "",
        "   ",
        "!!!",
        "Yes please",
        "help me with my ticket",
    ],
)
def test_a_keyword_must_be_the_whole_message(text):
    assert keywords.keyword_kind(text) is None


def test_fold_ignores_case_punctuation_and_spaces():
    assert keywords.fold("  Abmelden. ") == "abmelden"
    assert keywords.fold("Opt-Out!") == "opt-out"
    assert keywords.fold("opt   out") == "opt out"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bitte keine Nachrichten mehr", "keine Nachrichten"),
        ("please stop texting me", "stop texting"),
        ("Bitte den Newsletter abbestellen", "Newsletter abbestellen"),
        ("no more messages please", "no more messages"),
        ("Remove me from this list", "Remove me from"),
    ],
)
def test_free_text_withdrawals_are_flagged_for_review(text, expected):
    assert keywords.withdrawal_phrase(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "We have got to STOP this bill",
        "Wann läuft der neue Film?",
        "Thanks, see you on Friday",
        "keine Ahnung",
    ],
)
def test_ordinary_sentences_are_not_flagged(text):
    assert keywords.withdrawal_phrase(text) is None


@pytest.mark.django_db
def test_purpose_keyword_matches_the_whole_message_in_any_case(team):
    film = PurposeFactory(team=team, opt_in_keywords=["FILM"])
    other = PurposeFactory(team=team, opt_in_keywords=["Apotheke"])
    assert keywords.purpose_for_keyword(" film! ", [other, film]) == film
    assert keywords.purpose_for_keyword("APOTHEKE", [other, film]) == other
    assert keywords.purpose_for_keyword("Film ab", [other, film]) is None
