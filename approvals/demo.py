"""Demo data for approvals: review policies per team and templates in every state.

Everything goes through the approvals services with the demo users (the editor writes, the
reviewers decide), so the review ledger has real hash chains and every state change is on
the trail. Registered as a crm demo step from ApprovalsConfig.ready(); a template that exists
already is left as it is, so running the demo again duplicates nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from django.contrib.auth.models import Group
from django.utils import timezone
from django.utils.translation import gettext as _

from approvals import selectors, services
from approvals.models import (
    ApprovalPolicy,
    Decision,
    MessageTemplate,
    ProviderStatus,
    TemplateCategory,
    TemplateVersion,
)
from approvals.providers import FakeTemplateProvider, template_provider
from consent.models import Purpose
from crm import roles
from crm.demo import DemoContext, DemoStep
from crm.models import Channel, Team

# What happens to a demo version after it is written.
DRAFT: Final = "draft"
IN_REVIEW: Final = "in_review"  # submitted; `approvals` stages approved so far
APPROVED: Final = "approved"  # every stage approved (WhatsApp: the provider approves too)
REJECTED: Final = "rejected"  # rejected at stage `approvals` with `comment`
CHANGES_REQUESTED: Final = "changes_requested"  # sent back to draft with `comment`
RETIRED: Final = "retired"  # approved, then retired with `comment`

EDITORIAL: Final = ("Redaktion", roles.REVIEWER_EDITORIAL)
LEGAL: Final = ("Recht", roles.REVIEWER_LEGAL)
MEDICAL: Final = ("Medizin", roles.REVIEWER_MEDICAL)


@dataclass(frozen=True)
class DemoPolicy:
    team_slug: str
    category: str
    name: str
    stages: tuple[tuple[str, str], ...]  # (stage name, group name) in review order


DEMO_POLICIES: Final = (
    DemoPolicy("kino-nord", TemplateCategory.MARKETING, "Werbung", (EDITORIAL, LEGAL)),
    DemoPolicy("kino-nord", TemplateCategory.UTILITY, "Service-Nachrichten", (EDITORIAL,)),
    DemoPolicy("apotheke-am-markt", TemplateCategory.MARKETING, "Werbung", (EDITORIAL, LEGAL)),
    DemoPolicy("apotheke-am-markt", TemplateCategory.UTILITY, "Service-Nachrichten", (EDITORIAL,)),
    DemoPolicy(
        "praxis-netzwerk",
        TemplateCategory.MARKETING,
        "Fachkreiswerbung (HWG)",
        (EDITORIAL, LEGAL, MEDICAL),
    ),
)


@dataclass(frozen=True)
class DemoVersion:
    body: str
    outcome: str = DRAFT
    approvals: int = 0
    comment: str = ""
    subject: str = ""
    header: str = ""
    footer: str = ""
    buttons: tuple[dict[str, str], ...] = ()
    valid_for_days: int | None = None


@dataclass(frozen=True)
class DemoTemplate:
    team_slug: str
    name: str
    channel: str
    category: str
    purpose_key: str | None
    versions: tuple[DemoVersion, ...]
    language: str = "de"


NEWSLETTER_V1: Final = (
    "Hallo {{ first_name }},\n\ndiese Woche im Kino Nord: drei Premieren, eine Sneak Preview "
    "und der Familiensonntag.\n\nDas ganze Programm: https://kino-nord.example.com/programm\n\n"
    "Keine Post mehr? Abmelden: {{ unsubscribe_url }}"
)
NEWSLETTER_V2: Final = (
    "Hallo {{ first_name }},\n\ndiese Woche im Kino Nord: drei Premieren, zwei Sneak Previews "
    "und der Familiensonntag mit Kinderkino ab 3 Euro.\n\n"
    "Das ganze Programm: https://kino-nord.example.com/programm\n\n"
    "Keine Post mehr? Abmelden: {{ unsubscribe_url }}"
)

DEMO_TEMPLATES: Final = (
    DemoTemplate(
        "kino-nord",
        "filmtipp_woche",
        Channel.WHATSAPP,
        TemplateCategory.MARKETING,
        "film-tipps",
        (
            DemoVersion(
                "Hallo {{ first_name }}, unser Filmtipp der Woche: „Nordlicht“ läuft ab "
                "Donnerstag. Antworte STOPP, wenn du keine Tipps mehr möchtest.",
                APPROVED,
                header="Filmtipp der Woche",
                footer="Kino Nord",
                buttons=({"type": "quick_reply", "text": "Tickets reservieren"},),
            ),
        ),
    ),
    DemoTemplate(
        "kino-nord",
        "newsletter_woche",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "newsletter",
        (
            DemoVersion(NEWSLETTER_V1, APPROVED, subject="Das Kinoprogramm der Woche"),
            DemoVersion(NEWSLETTER_V2, IN_REVIEW, subject="Das Kinoprogramm der Woche"),
        ),
    ),
    DemoTemplate(
        "kino-nord",
        "sneak_preview",
        Channel.SMS,
        TemplateCategory.MARKETING,
        "film-tipps",
        (
            DemoVersion(
                "Kino Nord: Sneak Preview am Montag, 20:30 Uhr, nur 5 Euro. Abmelden: STOPP",
                APPROVED,
            ),
            DemoVersion(
                "Kino Nord: Sneak Preview am Montag, 20:30 Uhr, jetzt 6 Euro. Abmelden: STOPP"
            ),
        ),
    ),
    DemoTemplate(
        "kino-nord",
        "sommerkino_aktion",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "newsletter",
        (
            DemoVersion(
                "Hallo {{ first_name }}, das Sommerkino unter freiem Himmel startet! "
                "Abmelden: {{ unsubscribe_url }}",
                RETIRED,
                subject="Sommerkino 2025",
                comment="Die Saison ist vorbei.",
            ),
        ),
    ),
    DemoTemplate(
        "kino-nord",
        "kinderkino_gewinnspiel",
        Channel.WHATSAPP,
        TemplateCategory.MARKETING,
        "film-tipps",
        (
            DemoVersion(
                "Hallo {{ first_name }}, gewinne 4 Freikarten für das Kinderkino! "
                "Antworte einfach mit JA.",
                REJECTED,
                approvals=1,
                comment="Teilnahmebedingungen und Altersgrenze fehlen; so nicht zulässig.",
            ),
        ),
    ),
    DemoTemplate(
        "kino-nord",
        "reservierung_bestaetigt",
        Channel.SMS,
        TemplateCategory.UTILITY,
        None,
        (
            DemoVersion(
                "Kino Nord: Ihre Reservierung für {{ first_name }} {{ last_name }} ist "
                "bestätigt. Bitte 15 Minuten vor Beginn abholen.",
                APPROVED,
                valid_for_days=12,
            ),
        ),
    ),
    DemoTemplate(
        "apotheke-am-markt",
        "abholbereit",
        Channel.SMS,
        TemplateCategory.UTILITY,
        "abholbereit",
        (
            DemoVersion(
                "Apotheke am Markt: Ihre Bestellung liegt zur Abholung bereit. "
                "Öffnungszeiten Mo-Sa 8-19 Uhr.",
                APPROVED,
            ),
        ),
    ),
    DemoTemplate(
        "apotheke-am-markt",
        "angebote_monat",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "angebote",
        (
            DemoVersion(
                "Guten Tag {{ contact.salutation }} {{ last_name }},\n\nim Oktober 20 % auf "
                "alle Erkältungsmittel mit Kundenkarte.\n\nAbmelden: {{ unsubscribe_url }}",
                IN_REVIEW,
                approvals=1,
                subject="Unsere Angebote im Oktober",
            ),
        ),
    ),
    DemoTemplate(
        "apotheke-am-markt",
        "grippeimpfung",
        Channel.SMS,
        TemplateCategory.MARKETING,
        "angebote",
        (
            DemoVersion(
                "Apotheke am Markt: Jetzt gegen Grippe impfen lassen, ganz ohne Termin! "
                "Abmelden: STOPP",
                CHANGES_REQUESTED,
                approvals=1,
                comment="„ganz ohne Termin“ stimmt nur vormittags; bitte präzisieren.",
            ),
        ),
    ),
    DemoTemplate(
        "praxis-netzwerk",
        "fachinfo_kardiologie",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "fachinformation",
        (
            DemoVersion(
                "Sehr geehrte/r {{ contact.salutation }} {{ last_name }},\n\ndie aktualisierte "
                "Fachinformation zur Herzinsuffizienz-Therapie steht bereit.\n\n"
                "Abmelden: {{ unsubscribe_url }}",
                APPROVED,
                subject="Aktualisierte Fachinformation Kardiologie",
                valid_for_days=20,
            ),
        ),
    ),
    DemoTemplate(
        "praxis-netzwerk",
        "webinar_einladung",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "fachinformation",
        (
            DemoVersion(
                "Sehr geehrte/r {{ contact.salutation }} {{ last_name }},\n\nwir laden Sie "
                "herzlich zu unserem CME-zertifizierten Webinar ein.\n\n"
                "Abmelden: {{ unsubscribe_url }}",
                IN_REVIEW,
                approvals=2,
                subject="Einladung: Webinar Hypertonie",
                valid_for_days=90,
            ),
        ),
    ),
    DemoTemplate(
        "praxis-netzwerk",
        "fachinfo_kurz",
        Channel.WHATSAPP,
        TemplateCategory.MARKETING,
        "fachinformation",
        (
            DemoVersion(
                "Guten Tag {{ contact.salutation }} {{ last_name }}, neue Fachinformation "
                "verfügbar. Antworten Sie STOPP zum Abmelden.",
                IN_REVIEW,
            ),
        ),
    ),
    DemoTemplate(
        "praxis-netzwerk",
        "studien_update",
        Channel.EMAIL,
        TemplateCategory.MARKETING,
        "fachinformation",
        (
            DemoVersion(
                "Sehr geehrte/r {{ contact.salutation }} {{ last_name }},\n\nErgebnisse der "
                "Studie folgen in Kürze.\n\nAbmelden: {{ unsubscribe_url }}",
                subject="Studien-Update",
            ),
        ),
    ),
)


def _policies(ctx: DemoContext) -> int:
    admin = ctx.users.get("admin")
    created = 0
    for spec in DEMO_POLICIES:
        team = ctx.teams[spec.team_slug]
        if ApprovalPolicy.objects.filter(team=team, category=spec.category).exists():
            continue
        services.policy_create(
            team=team,
            category=spec.category,
            name=spec.name,
            stages=[(name, Group.objects.get(name=group), 1) for name, group in spec.stages],
            actor=admin,
        )
        created += 1
    return created


def _decide(ctx: DemoContext, version: TemplateVersion, decision: str, comment: str = "") -> None:
    """The current stage decided by the demo reviewer of its group (usernames are roles)."""
    version.refresh_from_db()
    stage = selectors.current_stage(version)
    services.review_decide(
        version=version,
        reviewer=ctx.users[stage.group.name],
        decision=decision,
        content_hash=version.content_hash,
        comment=comment,
    )


def _provider_approves(version: TemplateVersion) -> None:
    """WhatsApp: hand the version to the provider now and play its approval webhook.

    The real submission task also runs on commit; the service is idempotent, so it finds the
    answer recorded here. Only the fake provider is answered for: a real one decides itself.
    """
    provider = template_provider()
    version = services.template_version_provider_submit(version_id=version.pk)
    if isinstance(provider, FakeTemplateProvider) and version.provider_status in (
        ProviderStatus.PENDING,
        ProviderStatus.NOT_SUBMITTED,
    ):
        FakeTemplateProvider.decide(version, "APPROVED")


def _version(ctx: DemoContext, template: MessageTemplate, spec: DemoVersion) -> TemplateVersion:
    editor = ctx.users["editor"]
    valid_until = None
    if spec.valid_for_days is not None:
        valid_until = timezone.now() + dt.timedelta(days=spec.valid_for_days)
    version = services.template_version_create(
        template=template,
        actor=editor,
        subject=spec.subject,
        header=spec.header,
        body=spec.body,
        footer=spec.footer,
        buttons=[dict(button) for button in spec.buttons],
        valid_until=valid_until,
    )
    if spec.outcome == DRAFT:
        return version
    services.template_version_submit(version=version, actor=editor)
    stages = selectors.policy_stages(team_id=template.team_id, category=template.category)
    approvals = len(stages) if spec.outcome in (APPROVED, RETIRED) else spec.approvals
    for _stage in stages[:approvals]:
        _decide(ctx, version, Decision.APPROVE, _("Approved."))
    if spec.outcome == REJECTED:
        _decide(ctx, version, Decision.REJECT, spec.comment)
    elif spec.outcome == CHANGES_REQUESTED:
        _decide(ctx, version, Decision.REQUEST_CHANGES, spec.comment)
    elif spec.outcome == RETIRED:
        services.template_version_retire(version=version, actor=editor, comment=spec.comment)
    elif spec.outcome == APPROVED and template.channel == Channel.WHATSAPP:
        _provider_approves(version)
    version.refresh_from_db()
    return version


def _template(ctx: DemoContext, spec: DemoTemplate, team: Team) -> bool:
    """Create the template with its versions unless it exists; True if it was created."""
    exists = MessageTemplate.objects.filter(
        team=team, channel=spec.channel, name=spec.name, language=spec.language
    ).exists()
    if exists:
        return False
    purpose = None
    if spec.purpose_key:
        purpose = Purpose.objects.get(team=team, key=spec.purpose_key)
    template = services.template_create(
        team=team,
        name=spec.name,
        channel=spec.channel,
        category=spec.category,
        language=spec.language,
        purpose=purpose,
        actor=ctx.users["editor"],
    )
    for version in spec.versions:
        _version(ctx, template, version)
    return True


def approvals_demo_step(ctx: DemoContext) -> None:
    policies = _policies(ctx)
    created = sum(_template(ctx, spec, ctx.teams[spec.team_slug]) for spec in DEMO_TEMPLATES)
    ctx.say(
        _("Approvals: %(policies)d policies and %(templates)d templates new (of %(total)d).")
        % {"policies": policies, "templates": created, "total": len(DEMO_TEMPLATES)}
    )


DEMO_STEP: Final = DemoStep("approvals", approvals_demo_step)
