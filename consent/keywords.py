"""Recognising consent keywords and free-text withdrawals in inbound messages.

A keyword is the whole message ("Stop!", " stopp ", "Abmelden."), compared after folding case,
punctuation and spaces; a keyword inside a sentence ("We have got to STOP this bill") is not
one. Sentences that sound like a withdrawal go to a human review queue instead.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from consent.models import Purpose

WITHDRAW_KEYWORDS: Final = frozenset(
    {
        "stop",
        "stopp",
        "abmelden",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "stopall",
        "revoke",
        "opt out",
        "optout",
        "opt-out",
        "austragen",
    }
)
GRANT_KEYWORDS: Final = frozenset({"start", "unstop", "anmelden", "yes", "ja"})
# Replies that confirm a pending SMS/WhatsApp double opt-in.
CONFIRM_KEYWORDS: Final = frozenset({"yes", "ja"})
HELP_KEYWORDS: Final = frozenset({"help", "hilfe", "info"})

# Conservative: each pattern is a request to stop receiving messages, in German or English.
WITHDRAWAL_PHRASES: Final = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\b(keine|nicht mehr)\b.{0,40}\b(nachrichten|sms|mails?|e-mails?|newsletter|werbung)\b",
        r"\b(nachrichten|sms|mails?|newsletter|werbung)\b.{0,30}\b(abbestellen|abmelden|stoppen|einstellen)\b",
        r"\b(abbestellen|austragen|abmelden)\b",
        r"\blasst mich in ruhe\b|\blassen sie mich in ruhe\b",
        r"\bdon'?t (text|message|email|e-mail|contact|write)\b",
        r"\b(stop|quit) (texting|messaging|emailing|e-mailing|contacting|sending)\b",
        r"\bno more (messages|texts|emails|e-mails|newsletters?)\b",
        r"\b(remove|delete|take) me (from|off)\b",
        r"\bunsubscribe me\b|\bplease unsubscribe\b|\bopt me out\b",
        r"\bleave me alone\b",
    )
)


def fold(text: str) -> str:
    """Case-, accent-, punctuation- and space-insensitive form of a whole message."""
    normalised = unicodedata.normalize("NFKC", text or "").casefold()
    letters = re.sub(r"[^\w\s-]", " ", normalised)
    return " ".join(letters.replace("_", " ").split())


def keyword_kind(text: str) -> str | None:
    """'withdraw', 'grant', 'help' or None for a message that is not a keyword."""
    folded = fold(text)
    if folded in WITHDRAW_KEYWORDS:
        return "withdraw"
    if folded in GRANT_KEYWORDS:
        return "grant"
    if folded in HELP_KEYWORDS:
        return "help"
    return None


def purpose_for_keyword(text: str, purposes: list[Purpose]) -> Purpose | None:
    """The purpose whose opt-in keyword (e.g. FILM) is this whole message."""
    folded = fold(text)
    for purpose in purposes:
        if folded in {fold(keyword) for keyword in purpose.opt_in_keywords or []}:
            return purpose
    return None


def withdrawal_phrase(text: str) -> str | None:
    """The phrase that makes free text look like a withdrawal, for a human to judge."""
    for pattern in WITHDRAWAL_PHRASES:
        match = pattern.search(text or "")
        if match:
            return match.group(0)
    return None
