"""Demo data for consent: purposes, wordings and a realistic consent history per team.

Everything goes through the consent services, so the demo ledger has real hash chains and
the projection agrees with it. Registered as a crm demo step from ConsentConfig.ready().
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from django.utils import timezone
from django.utils.translation import gettext as _

from consent.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    DataSubjectRequest,
    Purpose,
    WithdrawalReview,
)
from consent.services.ledger import Evidence, consent_record
from consent.services.subjects import dsr_open
from consent.services.texts import consent_text_publish, purpose_create
from crm.demo import DemoContext, DemoStep
from crm.models import Contact

# Enough contacts per team for a believable history without slowing `make demo` down.
CONTACTS_WITH_HISTORY: Final = 250


@dataclass(frozen=True)
class DemoPurpose:
    team_slug: str
    key: str
    name: str
    fields: dict[str, Any]
    wording_de: str
    wording_en: str


DEMO_PURPOSES: Final = (
    DemoPurpose(
        "kino-nord",
        "newsletter",
        "Kino-Newsletter",
        {
            "allowed_channels": ["email"],
            "double_opt_in_channels": ["email"],
            "validity_months": 24,
        },
        "Ja, ich möchte den wöchentlichen Kino-Newsletter per E-Mail erhalten. "
        "Die Einwilligung kann ich jederzeit widerrufen.",
        "Yes, I would like to receive the weekly cinema newsletter by e-mail. "
        "I can withdraw at any time.",
    ),
    DemoPurpose(
        "kino-nord",
        "film-tipps",
        "Filmtipps",
        {
            "allowed_channels": ["whatsapp", "sms"],
            "opt_in_keywords": ["FILM"],
            "frequency_cap": 1,
            "frequency_period_hours": 24,
        },
        "Ja, schickt mir Filmtipps per WhatsApp oder SMS. Abmeldung mit STOPP.",
        "Yes, send me film tips by WhatsApp or SMS. Reply STOP to end.",
    ),
    DemoPurpose(
        "apotheke-am-markt",
        "angebote",
        "Angebote und Aktionen",
        {"allowed_channels": ["email", "sms"], "double_opt_in_channels": ["email"]},
        "Ja, ich möchte über Angebote der Apotheke am Markt informiert werden.",
        "Yes, tell me about offers of Apotheke am Markt.",
    ),
    DemoPurpose(
        "apotheke-am-markt",
        "abholbereit",
        "Abholbenachrichtigung",
        {
            "allowed_channels": ["sms", "whatsapp"],
            "is_marketing": False,
            "legal_basis": "contract",
        },
        "Benachrichtigung, sobald meine Bestellung abholbereit ist.",
        "Notify me when my order is ready for pick-up.",
    ),
    DemoPurpose(
        "praxis-netzwerk",
        "fachinformation",
        "Fachinformationen",
        {
            "allowed_channels": ["email", "whatsapp"],
            "double_opt_in_channels": ["email"],
            "validity_months": 12,
        },
        "Ja, ich möchte als Fachkreis-Angehörige/r Fachinformationen erhalten.",
        "Yes, as a healthcare professional I want to receive product information.",
    ),
)


def _purposes(ctx: DemoContext) -> list[Purpose]:
    purposes = []
    for spec in DEMO_PURPOSES:
        team = ctx.teams[spec.team_slug]
        purpose = Purpose.objects.filter(team=team, key=spec.key).first()
        if purpose is None:
            purpose = purpose_create(
                team=team, key=spec.key, name=spec.name, actor=None, **spec.fields
            )
            consent_text_publish(purpose=purpose, language="de", body=spec.wording_de, actor=None)
            consent_text_publish(purpose=purpose, language="en", body=spec.wording_en, actor=None)
        purposes.append(purpose)
    return purposes


def _history(ctx: DemoContext, purpose: Purpose) -> int:
    """Grants for most contacts with an address on the channel, some withdrawn later."""
    channel = purpose.allowed_channels[0]
    contacts = list(
        Contact.objects.filter(team=purpose.team, points__channel=channel)
        .order_by("id")
        .distinct()[:CONTACTS_WITH_HISTORY]
    )
    texts = {text.language: text for text in purpose.texts.all()}
    now = timezone.now()
    recorded = 0
    for contact in contacts:
        roll = ctx.rng.random()
        if roll > 0.8:
            continue
        granted_at = now - dt.timedelta(days=ctx.rng.randint(20, 300))
        evidence = Evidence(
            consent_text=texts.get(contact.language) or texts["de"],
            ip_address=f"198.51.100.{ctx.rng.randint(1, 254)}",
            user_agent="Mozilla/5.0 (demo)",
            source_url=f"https://{purpose.team.slug}.example.com/anmeldung",
        )
        if purpose.needs_double_opt_in(channel):
            consent_record(
                contact=contact,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.REQUESTED,
                source=ConsentSource.WEB_FORM,
                evidence=evidence,
                occurred_at=granted_at,
            )
            consent_record(
                contact=contact,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.CONFIRMED,
                source=ConsentSource.DOUBLE_OPT_IN,
                evidence=evidence,
                occurred_at=granted_at + dt.timedelta(minutes=7),
            )
        else:
            consent_record(
                contact=contact,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.GRANTED,
                source=ConsentSource.WEB_FORM,
                evidence=evidence,
                occurred_at=granted_at,
            )
        recorded += 1
        if roll < 0.08:
            consent_record(
                contact=contact,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.WITHDRAWN,
                source=ConsentSource.KEYWORD,
                evidence=Evidence(message_text="STOP", inbound_message_ref=f"demo-{contact.pk}"),
                occurred_at=granted_at + dt.timedelta(days=10),
            )
    return recorded


def _cases(ctx: DemoContext) -> None:
    team = ctx.teams["kino-nord"]
    contacts = list(Contact.objects.filter(team=team).order_by("-id")[:3])
    if len(contacts) < 3:
        return
    first, second, third = contacts
    dsr_open(contact=first, kind=DataSubjectRequest.Kind.ACCESS, actor=None)
    dsr_open(
        contact=second,
        kind=DataSubjectRequest.Kind.OBJECTION,
        actor=None,
        received_at=timezone.now() - dt.timedelta(days=40),
    )
    WithdrawalReview.objects.create(
        contact=third,
        team=team,
        channel="whatsapp",
        text="Bitte keine Nachrichten mehr, danke.",
        inbound_message_ref="demo-review-1",
        matched="keine Nachrichten",
    )


def consent_demo_step(ctx: DemoContext) -> None:
    purposes = _purposes(ctx)
    team_ids = [team.pk for team in ctx.teams.values()]
    if ConsentEvent.objects.filter(team_id__in=team_ids).exists():
        ctx.say(_("Consent history exists already; left as it is."))
        return
    recorded = sum(_history(ctx, purpose) for purpose in purposes)
    _cases(ctx)
    ctx.say(
        _("Consent: %(purposes)d purposes, %(contacts)d contacts with a consent history.")
        % {"purposes": len(purposes), "contacts": recorded}
    )


DEMO_STEP: Final = DemoStep("consent", consent_demo_step)
