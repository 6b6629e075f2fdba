"""Demo data: three teams, one user per role, realistic contacts, tags and segments.

`demo_seed` runs the ordered steps in `DEMO_STEPS` inside one transaction, so a failed run
leaves nothing behind. Every step is idempotent: teams, users, tags and segments are got or
created, and contacts are only generated while the demo teams hold none. Apps to the right of
crm (consent, approvals, messaging) add their own demo data with `register_demo_step`, so crm
never imports them.

The data is generated from a fixed seed, so every fresh demo looks the same. Addresses are
fictitious (example.* domains, random mobile numbers): never send to them through a real
provider.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils.translation import gettext as _
from faker import Faker
from simple_history.utils import bulk_create_with_history

from crm import roles
from crm.addresses import normalise_address
from crm.errors import DomainError
from crm.hashing import address_hash
from crm.models import Channel, Contact, ContactPoint, Language, Salutation, Segment, Tag, Team
from crm.search import search_document
from crm.services import (
    roles_sync,
    segment_create,
    tag_get_or_create,
    team_create,
    team_member_add,
    user_time_zone_set,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

SEED: Final = 20260101
BATCH_SIZE: Final = 250
MAX_CONTACTS: Final = 200_000
CHANGE_REASON: Final = "demo data"
SUPERUSER: Final = "superuser"
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net")
# German mobile prefixes (015x, 016x, 017x); each takes a 7-digit subscriber number.
MOBILE_PREFIXES: Final = (
    *("1511", "1512", "1514", "1515", "1516", "1517", "1520", "1522", "1523", "1525"),
    *("1573", "1575", "1577", "1578", "1590", "160", "162", "163"),
    *("170", "171", "172", "173", "174", "175", "176", "177", "178", "179"),
)
UK_CITIES: Final = ("London", "Manchester", "Bristol", "Edinburgh", "Leeds")


class DemoInvalid(DomainError):
    code = "demo_invalid"


@dataclass(frozen=True)
class DemoSegment:
    name: str
    description: str
    rules: dict[str, Any]


@dataclass(frozen=True)
class DemoTeam:
    """One demo team and how its contacts look."""

    slug: str
    name: str
    kind: str  # "cinema", "pharmacy" or "physicians": picks salutations, attributes, jobs
    share: float  # part of all generated contacts
    english_share: float
    external_prefix: str
    cities: tuple[str, ...]
    tags: tuple[str, ...]
    segments: tuple[DemoSegment, ...]


def _all(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"match": "all", "conditions": list(conditions)}


DEMO_TEAMS: Final = (
    DemoTeam(
        slug="kino-nord",
        name="Kino Nord",
        kind="cinema",
        share=0.45,
        english_share=0.2,
        external_prefix="KN",
        cities=("Hamburg", "Kiel", "Lübeck", "Bremen", "Rostock", "Hannover"),
        tags=("Stammkunde", "Familie", "Arthouse", "Sneak Preview", "Student", "VIP"),
        segments=(
            DemoSegment(
                "Stammkunden auf WhatsApp",
                "Regular guests reachable on WhatsApp.",
                _all(
                    {"field": "tag", "op": "has", "value": "Stammkunde"},
                    {"field": "channel", "op": "has", "value": "whatsapp"},
                ),
            ),
            DemoSegment(
                "English-speaking guests",
                "Guests who prefer English.",
                _all({"field": "language", "op": "eq", "value": "en"}),
            ),
            DemoSegment(
                "Hamburg",
                "Guests living in Hamburg.",
                _all({"field": "attribute", "key": "city", "op": "eq", "value": "Hamburg"}),
            ),
        ),
    ),
    DemoTeam(
        slug="apotheke-am-markt",
        name="Apotheke am Markt",
        kind="pharmacy",
        share=0.35,
        english_share=0.1,
        external_prefix="AM",
        cities=("Münster", "Greven", "Telgte", "Warendorf", "Senden", "Havixbeck"),
        tags=("Kundenkarte", "Diabetes", "Allergie", "Impfung", "Botendienst", "Senioren"),
        segments=(
            DemoSegment(
                "Kundenkarte",
                "Customers with a loyalty card.",
                _all({"field": "tag", "op": "has", "value": "Kundenkarte"}),
            ),
            DemoSegment(
                "Neukunden 2025",
                "Customers since 2025.",
                _all(
                    {
                        "field": "attribute",
                        "key": "customer_since",
                        "op": "contains",
                        "value": "2025-",
                    }
                ),
            ),
        ),
    ),
    DemoTeam(
        slug="praxis-netzwerk",
        name="Praxis Netzwerk",
        kind="physicians",
        share=0.2,
        english_share=0.15,
        external_prefix="PN",
        cities=("Berlin", "München", "Köln", "Frankfurt am Main", "Stuttgart", "Leipzig"),
        tags=("Fortbildung", "Webinar", "Key Account", "Studienzentrum", "Musterbestellung"),
        segments=(
            DemoSegment(
                "Kardiologie",
                "Cardiologists of the network.",
                _all({"field": "profession", "op": "in", "value": ["Kardiologie", "Cardiology"]}),
            ),
            DemoSegment(
                "Webinar-Interessierte mit E-Mail",
                "Physicians interested in webinars who have an e-mail address.",
                _all(
                    {"field": "tag", "op": "has", "value": "Webinar"},
                    {"field": "channel", "op": "has", "value": "email"},
                ),
            ),
        ),
    ),
)

ALL_TEAM_SLUGS: Final = tuple(team.slug for team in DEMO_TEAMS)


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str  # a role of crm.roles, or SUPERUSER
    first_name: str
    last_name: str
    team_slugs: tuple[str, ...]


DEMO_USERS: Final = (
    DemoUser("admin", SUPERUSER, "Ada", "Admin", ()),
    DemoUser("marketing", roles.MARKETING, "Miriam", "Kaufmann", ALL_TEAM_SLUGS),
    DemoUser("editor", roles.EDITOR, "Erik", "Schreiber", ALL_TEAM_SLUGS),
    DemoUser("reviewer_editorial", roles.REVIEWER_EDITORIAL, "Rita", "Lektor", ALL_TEAM_SLUGS),
    DemoUser("reviewer_legal", roles.REVIEWER_LEGAL, "Lars", "Justus", ALL_TEAM_SLUGS),
    DemoUser(
        "reviewer_medical",
        roles.REVIEWER_MEDICAL,
        "Mia",
        "Heilmann",
        ("apotheke-am-markt", "praxis-netzwerk"),
    ),
    DemoUser("agent", roles.AGENT, "Alex", "Berger", ("kino-nord", "apotheke-am-markt")),
    DemoUser("auditor", roles.AUDITOR, "Anna", "Prüfer", ()),
)

PROFESSIONS: Final = {
    "de": (
        "Allgemeinmedizin",
        "Innere Medizin",
        "Kardiologie",
        "Dermatologie",
        "Kinder- und Jugendmedizin",
        "Gynäkologie",
        "Orthopädie",
        "Neurologie",
    ),
    "en": ("General practice", "Internal medicine", "Cardiology", "Dermatology", "Paediatrics"),
}
GENRES: Final = ("Drama", "Komödie", "Thriller", "Animation", "Dokumentarfilm", "Science-Fiction")


@dataclass(frozen=True)
class DemoCredential:
    username: str
    password: str
    role: str
    teams: tuple[str, ...]


@dataclass(frozen=True)
class DemoSummary:
    teams: tuple[str, ...]
    credentials: tuple[DemoCredential, ...]
    contacts_created: int
    contacts_total: int
    contacts_skipped: bool
    segments_created: int


@dataclass
class DemoContext:
    """What the steps share: the request, generators, created objects and the counts."""

    contacts: int
    password: str
    rng: random.Random
    fakers: dict[str, Faker]
    say: Callable[[str], None]
    progress: Callable[[int], None]
    teams: dict[str, Team] = field(default_factory=dict)
    users: dict[str, AbstractBaseUser] = field(default_factory=dict)
    contacts_created: int = 0
    contacts_skipped: bool = False
    segments_created: int = 0


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[DemoContext], None]


def _teams_step(ctx: DemoContext) -> None:
    created = 0
    for spec in DEMO_TEAMS:
        team = Team.objects.filter(slug=spec.slug).first()
        if team is None:
            team = team_create(name=spec.name, slug=spec.slug, default_language=Language.GERMAN)
            created += 1
        ctx.teams[spec.slug] = team
    ctx.say(
        _("Teams: %(names)s (%(created)d new).")
        % {"names": ", ".join(team.name for team in ctx.teams.values()), "created": created}
    )


def _users_step(ctx: DemoContext) -> None:
    """One user per role, re-synced on every run so the printed credentials always work."""
    roles_sync()
    user_model = get_user_model()
    # Hashed once: PBKDF2 is slow on purpose, and every demo user has the same known password.
    password_hash = make_password(ctx.password)
    created = 0
    for spec in DEMO_USERS:
        user, is_new = user_model.objects.get_or_create(username=spec.username)
        created += is_new
        user.first_name, user.last_name = spec.first_name, spec.last_name
        user.email = user.email or f"{spec.username}@example.com"
        user.is_active = user.is_staff = True
        user.is_superuser = spec.role == SUPERUSER
        user.password = password_hash
        user.save()
        user.groups.set([] if spec.role == SUPERUSER else [Group.objects.get(name=spec.role)])
        for slug in spec.team_slugs:
            team_member_add(team=ctx.teams[slug], user=user)
        user_time_zone_set(user=user, time_zone="Europe/Berlin")
        ctx.users[spec.username] = user
    ctx.say(
        _("Users: %(count)d (%(created)d new).") % {"count": len(DEMO_USERS), "created": created}
    )


def _team_shares(total: int) -> list[int]:
    """Split `total` over the demo teams by share, summing exactly to `total`."""
    raw = [total * spec.share for spec in DEMO_TEAMS]
    counts = [int(value) for value in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _ascii(text: str) -> str:
    text = text.replace("ß", "ss")
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
        text = text.replace(umlaut, spelled).replace(umlaut.upper(), spelled.capitalize())
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@dataclass
class _Person:
    contact: Contact
    points: list[tuple[str, str]]
    tags: list[Tag]


class _ContactGenerator:
    """Realistic contacts for one team; addresses normalised and unique within the team."""

    def __init__(self, ctx: DemoContext, spec: DemoTeam, team: Team) -> None:
        self.ctx, self.spec, self.team, self.rng = ctx, spec, team, ctx.rng
        self.tags = [tag_get_or_create(team=team, name=name) for name in spec.tags]
        self.taken: dict[str, set[str]] = {channel: set() for channel in Channel.values}
        for channel, address in ContactPoint.objects.filter(team=team).values_list(
            "channel", "address"
        ):
            self.taken[channel].add(address)
        self.serial = Contact.objects.filter(team=team).count()

    def _email(self, first: str, last: str) -> str:
        base = re.sub(r"[^A-Za-z0-9.-]", "", f"{_ascii(first)}.{_ascii(last)}")
        base = re.sub(r"\.{2,}", ".", base).strip(".-") or "kontakt"
        domain = self.rng.choice(EMAIL_DOMAINS)
        for attempt in range(100):
            suffix = "" if attempt == 0 else str(self.rng.randint(1, 9999))
            address = normalise_address(Channel.EMAIL, f"{base}{suffix}@{domain}")
            if address not in self.taken[Channel.EMAIL]:
                return address
        raise DemoInvalid(_("Could not find a free demo e-mail address."))

    def _mobile(self) -> str:
        for _attempt in range(100):
            prefix = self.rng.choice(MOBILE_PREFIXES)
            subscriber = f"{self.rng.randrange(10**7):07d}"
            # Written the way people type them; normalise_address turns them into E.164.
            raw = self.rng.choice(
                (
                    f"0{prefix} {subscriber}",
                    f"+49 {prefix} {subscriber}",
                    f"0049{prefix}{subscriber}",
                )
            )
            number = normalise_address(Channel.SMS, raw)
            if number not in self.taken[Channel.SMS] and number not in self.taken[Channel.WHATSAPP]:
                return number
        raise DemoInvalid(_("Could not find a free demo mobile number."))

    def _salutation(self, female: bool) -> str:
        roll = self.rng.random()
        if self.spec.kind == "physicians":
            if roll < 0.7:
                return Salutation.DR
            if roll < 0.8:
                return Salutation.PROF
        elif roll < 0.08:
            return Salutation.NONE
        elif roll < 0.1:
            return Salutation.MX
        return Salutation.MS if female else Salutation.MR

    def _attributes(self, english_abroad: bool) -> dict[str, Any]:
        since = dt.date(2014, 1, 1) + dt.timedelta(days=self.rng.randrange(12 * 365))
        city = self.rng.choice(UK_CITIES if english_abroad else self.spec.cities)
        attributes: dict[str, Any] = {"city": city, "customer_since": since.isoformat()}
        if self.spec.kind == "cinema":
            attributes["favourite_genre"] = self.rng.choice(GENRES)
        elif self.spec.kind == "pharmacy":
            attributes["loyalty_points"] = self.rng.randrange(0, 2500, 10)
        else:
            attributes["practice_size"] = self.rng.choice(("single", "group", "mvz"))
        return attributes

    def person(self) -> _Person:
        rng = self.rng
        english = rng.random() < self.spec.english_share
        language = Language.ENGLISH if english else Language.GERMAN
        fake = self.ctx.fakers[language]
        female = rng.random() < 0.5
        first = fake.first_name_female() if female else fake.first_name_male()
        last = fake.last_name()
        # Some English speakers live in the UK; the physicians network is German only.
        abroad = english and self.spec.kind != "physicians" and rng.random() < 0.5
        if abroad:
            time_zone = "Europe/London"
        else:
            time_zone = rng.choices(
                ["Europe/Berlin", "Europe/Vienna", "Europe/Zurich"], [18, 1, 1]
            )[0]
        self.serial += 1
        salutation = self._salutation(female)
        attributes = self._attributes(abroad)
        organisation = profession = ""
        if self.spec.kind == "physicians":
            profession = rng.choice(PROFESSIONS[language])
            title = "Dr. " if salutation in (Salutation.DR, Salutation.PROF) else ""
            organisation = rng.choice(
                (
                    f"Praxis {title}{last}",
                    f"Gemeinschaftspraxis {last} & {fake.last_name()}",
                    f"MVZ {attributes['city']}",
                )
            )
        contact = Contact(
            team=self.team,
            salutation=salutation,
            first_name=first,
            last_name=last,
            language=language,
            time_zone=time_zone,
            organisation=organisation,
            profession=profession,
            attributes=attributes,
            external_id=(
                f"{self.spec.external_prefix}-{self.serial:06d}" if rng.random() < 0.8 else None
            ),
        )
        points: list[tuple[str, str]] = []
        has_mobile = rng.random() < 0.75
        if rng.random() < 0.85 or not has_mobile:
            points.append((Channel.EMAIL, self._email(first, last)))
        if has_mobile:
            mobile = self._mobile()
            sms, whatsapp = rng.random() < 0.6, rng.random() < 0.7
            if sms or not whatsapp:
                points.append((Channel.SMS, mobile))
            if whatsapp:
                points.append((Channel.WHATSAPP, mobile))
        for channel, address in points:
            self.taken[channel].add(address)
        if rng.random() < 0.8:
            contact.preferred_channel = rng.choice([channel for channel, _address in points])
        # Field validators (choices, time zone) without the per-row queries of full_clean.
        contact.clean_fields(exclude=["team", "tags"])
        tags = rng.sample(self.tags, k=rng.choices([0, 1, 2, 3], [3, 4, 2, 1])[0])
        return _Person(contact, points, tags)

    def batches(self, count: int) -> Iterator[list[_Person]]:
        for start in range(0, count, BATCH_SIZE):
            yield [self.person() for _row in range(min(BATCH_SIZE, count - start))]


def _people_save(team: Team, people: list[_Person]) -> None:
    """Bulk insert with history rows (plain bulk_create would leave no history)."""
    for person in people:
        contact = person.contact
        contact.search_document = search_document(
            contact, (address for _channel, address in person.points)
        )
    contacts = bulk_create_with_history(
        [person.contact for person in people], Contact, default_change_reason=CHANGE_REASON
    )
    points = [
        # bulk_create skips ContactPoint.save(), which is where address_hash is normally set.
        ContactPoint(
            contact=contact,
            team=team,
            channel=channel,
            address=address,
            address_hash=address_hash(address),
        )
        for contact, person in zip(contacts, people, strict=True)
        for channel, address in person.points
    ]
    bulk_create_with_history(points, ContactPoint, default_change_reason=CHANGE_REASON)
    through = Contact.tags.through
    through.objects.bulk_create(
        [
            through(contact_id=contact.pk, tag_id=tag.pk)
            for contact, person in zip(contacts, people, strict=True)
            for tag in person.tags
        ]
    )


def _contacts_step(ctx: DemoContext) -> None:
    teams = list(ctx.teams.values())
    existing = Contact.objects.filter(team__in=teams).count()
    if existing:
        ctx.contacts_skipped = True
        ctx.say(
            _("Contacts: the demo teams already hold %(count)d contacts; none generated.")
            % {"count": existing}
        )
        return
    for spec, count in zip(DEMO_TEAMS, _team_shares(ctx.contacts), strict=True):
        team = ctx.teams[spec.slug]
        generator = _ContactGenerator(ctx, spec, team)
        for people in generator.batches(count):
            _people_save(team, people)
            ctx.contacts_created += len(people)
            ctx.progress(len(people))
    ctx.say(_("Contacts: %(count)d created.") % {"count": ctx.contacts_created})


def _segments_step(ctx: DemoContext) -> None:
    author = ctx.users["marketing"]
    for spec in DEMO_TEAMS:
        team = ctx.teams[spec.slug]
        for segment in spec.segments:
            if Segment.objects.filter(team=team, name=segment.name).exists():
                continue
            segment_create(
                team=team,
                name=segment.name,
                rules=segment.rules,
                description=segment.description,
                actor=author,
            )
            ctx.segments_created += 1
    total = sum(len(spec.segments) for spec in DEMO_TEAMS)
    ctx.say(
        _("Segments: %(count)d (%(created)d new).")
        % {"count": total, "created": ctx.segments_created}
    )


DEMO_STEPS: list[DemoStep] = [
    DemoStep("teams", _teams_step),
    DemoStep("users", _users_step),
    DemoStep("contacts", _contacts_step),
    DemoStep("segments", _segments_step),
]


def register_demo_step(step: DemoStep) -> None:
    """Add (or replace, by name) a step run after crm's own; for apps to the right of crm."""
    DEMO_STEPS[:] = [existing for existing in DEMO_STEPS if existing.name != step.name]
    DEMO_STEPS.append(step)


def demo_contacts_planned(contacts: int) -> int:
    """How many contacts a run would generate (0 if the demo teams already hold contacts)."""
    if Contact.objects.filter(team__slug__in=ALL_TEAM_SLUGS).exists():
        return 0
    return contacts


def _credentials(password: str) -> tuple[DemoCredential, ...]:
    names = {spec.slug: spec.name for spec in DEMO_TEAMS}
    return tuple(
        DemoCredential(
            username=spec.username,
            password=password,
            role=spec.role,
            teams=tuple(names[slug] for slug in spec.team_slugs),
        )
        for spec in DEMO_USERS
    )


def demo_seed(
    *,
    contacts: int,
    password: str,
    stdout: IO[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Create or refresh the demo data; safe to run again (nothing is duplicated).

    All steps run in one transaction: invalid input or a failing step changes nothing.
    `progress` is called with the number of contacts written after each batch.
    """
    if not isinstance(contacts, int) or contacts < 0 or contacts > MAX_CONTACTS:
        raise DemoInvalid(
            _("The number of contacts must be between 0 and %(max)d.") % {"max": MAX_CONTACTS},
            field="contacts",
        )
    if not password or not password.strip():
        raise DemoInvalid(_("The demo password must not be empty."), field="password")

    def say(line: str) -> None:
        if stdout is not None:
            stdout.write(line + "\n")

    fakers = {Language.GERMAN: Faker("de_DE"), Language.ENGLISH: Faker("en_GB")}
    for faker in fakers.values():
        faker.seed_instance(SEED)
    ctx = DemoContext(
        contacts=contacts,
        password=password,
        # Reproducible demo data, not security: a seeded generator is what we want here.
        rng=random.Random(SEED),  # noqa: S311
        fakers=fakers,
        say=say,
        progress=progress or (lambda _count: None),
    )
    with transaction.atomic():
        for step in DEMO_STEPS:
            step.run(ctx)
    return DemoSummary(
        teams=tuple(team.name for team in ctx.teams.values()),
        credentials=_credentials(password),
        contacts_created=ctx.contacts_created,
        contacts_total=Contact.objects.filter(team__in=ctx.teams.values()).count(),
        contacts_skipped=ctx.contacts_skipped,
        segments_created=ctx.segments_created,
    )
