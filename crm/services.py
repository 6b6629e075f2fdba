"""The crm write API: teams, membership, contacts, addresses, tags and segments.

Every write checks the actor's role and team membership (`_ensure_may`) so the API, admin,
commands and other apps get the same answer. `actor=None` means the system itself (a
management command run by an operator, a Celery task acting on already-authorised work).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, QuerySet
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _
from guardian.shortcuts import assign_perm, remove_perm

from crm import roles, selectors
from crm.addresses import normalise_address
from crm.errors import DomainError, PermissionRefused
from crm.models import Contact, ContactPoint, Segment, Tag, Team, UserProfile
from crm.segments import validate_rules
from crm.signals import contacts_reach_changed

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class ContactInvalid(DomainError):
    code = "contact_invalid"


class ContactPointDuplicate(DomainError):
    code = "contact_point_duplicate"


class TeamMoveRefused(DomainError):
    code = "team_move_refused"


# The fields contact_create and contact_update take, in the order forms and exports list them.
CONTACT_FIELDS: Final = (
    "salutation",
    "first_name",
    "last_name",
    "language",
    "time_zone",
    "organisation",
    "profession",
    "preferred_channel",
    "attributes",
    "external_id",
)


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team: Team | int) -> None:
    if actor is not None and not selectors.user_may_write(actor, perm, team):
        raise PermissionRefused(_("You may not do this for this team."))


def _history_user(instance: Any, actor: AbstractBaseUser | None, reason: str = "") -> None:
    """Tell django-simple-history who made the next save and why (requests set it themselves)."""
    if actor is not None:
        instance._history_user = actor
    if reason:
        instance._change_reason = reason


@transaction.atomic
def team_create(*, name: str, slug: str = "", **fields: Any) -> Team:
    slug = slug or slugify(name)[:60]
    if Team.objects.filter(name=name).exists() or Team.objects.filter(slug=slug).exists():
        raise DomainError(_("A team with this name already exists."), field="name")
    return Team.objects.create(name=name, slug=slug, **fields)


def team_member_add(*, team: Team, user: AbstractBaseUser) -> None:
    """Membership is one guardian object permission on the team, never rows per contact."""
    assign_perm(selectors.TEAM_ACCESS_PERM, user, team)
    user.__dict__.pop("_crm_member_team_ids", None)


def team_member_remove(*, team: Team, user: AbstractBaseUser) -> None:
    remove_perm(selectors.TEAM_ACCESS_PERM, user, team)
    user.__dict__.pop("_crm_member_team_ids", None)


def team_members_set(*, team: Team, users: Iterable[AbstractBaseUser]) -> None:
    wanted = {user.pk: user for user in users}
    current = {user.pk: user for user in selectors.team_members(team)}
    for pk in current.keys() - wanted.keys():
        team_member_remove(team=team, user=current[pk])
    for pk in wanted.keys() - current.keys():
        team_member_add(team=team, user=wanted[pk])


def user_time_zone_set(*, user: AbstractBaseUser, time_zone: str) -> UserProfile:
    profile, _created = UserProfile.objects.update_or_create(
        user=user, defaults={"time_zone": time_zone}
    )
    return profile


def _clean_contact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields).difference(CONTACT_FIELDS)
    if unknown:
        raise ContactInvalid(
            _("Unknown contact fields: %(fields)s.") % {"fields": ", ".join(sorted(unknown))}
        )
    cleaned = dict(fields)
    if "external_id" in cleaned:
        cleaned["external_id"] = (cleaned["external_id"] or "").strip() or None
    if "attributes" in cleaned and not isinstance(cleaned["attributes"], dict):
        raise ContactInvalid(_("Custom attributes must be an object."), field="attributes")
    return cleaned


def _check_external_id_free(team: Team, external_id: str | None, exclude_pk: int | None) -> None:
    if external_id is None:
        return
    taken = Contact.objects.filter(team=team, external_id=external_id).exclude(pk=exclude_pk)
    if taken.exists():
        raise ContactInvalid(
            _("Another contact of this team already has the external id “%(id)s”.")
            % {"id": external_id},
            field="external_id",
        )


@transaction.atomic
def contact_create(
    *,
    team: Team,
    actor: AbstractBaseUser | None,
    points: Sequence[tuple[str, str]] = (),
    tags: Iterable[Tag] = (),
    **fields: Any,
) -> Contact:
    """Create a contact with its addresses and tags; all of it or nothing."""
    _ensure_may(actor, "crm.add_contact", team)
    cleaned = _clean_contact_fields(fields)
    _check_external_id_free(team, cleaned.get("external_id"), None)
    contact = Contact(team=team, **cleaned)
    contact.full_clean(exclude=["team", "tags"])
    _history_user(contact, actor)
    contact.save()
    for channel, address in points:
        _contact_point_insert(contact=contact, channel=channel, address=address)
    contact_tags_set(contact=contact, tags=tags)
    return contact


@transaction.atomic
def contact_update(
    *,
    contact: Contact,
    actor: AbstractBaseUser | None,
    reason: str = "",
    tags: Iterable[Tag] | None = None,
    **fields: Any,
) -> Contact:
    """Change a contact's fields and, when `tags` is given, replace its tags (same team only)."""
    _ensure_may(actor, "crm.change_contact", contact.team_id)
    cleaned = _clean_contact_fields(fields)
    if "external_id" in cleaned:
        _check_external_id_free(contact.team, cleaned["external_id"], contact.pk)
    for name, value in cleaned.items():
        setattr(contact, name, value)
    contact.full_clean(exclude=["team", "tags"])
    _history_user(contact, actor, reason)
    contact.save()
    if tags is not None:
        contact_tags_set(contact=contact, tags=tags)
    return contact


def contact_tags_set(*, contact: Contact, tags: Iterable[Tag]) -> None:
    tags = list(tags)
    foreign = [tag.name for tag in tags if tag.team_id != contact.team_id]
    if foreign:
        raise ContactInvalid(
            _("Tags of another team cannot be used: %(tags)s.") % {"tags": ", ".join(foreign)},
            field="tags",
        )
    contact.tags.set(tags)


def _contact_point_insert(
    *, contact: Contact, channel: str, address: str, is_primary: bool = True
) -> ContactPoint:
    normalised = normalise_address(channel, address)
    duplicate = ContactPoint.objects.filter(
        team_id=contact.team_id, channel=channel, address=normalised
    ).first()
    if duplicate is not None:
        raise ContactPointDuplicate(
            _("%(address)s already belongs to contact #%(contact)s of this team.")
            % {"address": normalised, "contact": duplicate.contact_id},
            field="address",
        )
    try:
        # A savepoint, so a race with another writer surfaces as a clear error, not a 500.
        with transaction.atomic():
            point = ContactPoint.objects.create(
                contact=contact,
                team_id=contact.team_id,
                channel=channel,
                address=normalised,
                is_primary=is_primary,
            )
    except IntegrityError as exc:
        raise ContactPointDuplicate(
            _("%(address)s already exists in this team.") % {"address": normalised},
            field="address",
        ) from exc
    contacts_reach_changed.send(sender=ContactPoint, contact_ids=[contact.pk])
    return point


@transaction.atomic
def contact_point_add(
    *,
    contact: Contact,
    channel: str,
    address: str,
    actor: AbstractBaseUser | None,
    is_primary: bool = True,
) -> ContactPoint:
    """Add a normalised address; refused if invalid or already used in the team."""
    _ensure_may(actor, "crm.add_contactpoint", contact.team_id)
    return _contact_point_insert(
        contact=contact, channel=channel, address=address, is_primary=is_primary
    )


@transaction.atomic
def contact_point_update(
    *,
    point: ContactPoint,
    actor: AbstractBaseUser | None,
    address: str | None = None,
    is_primary: bool | None = None,
) -> ContactPoint:
    _ensure_may(actor, "crm.change_contactpoint", point.team_id)
    if address is not None:
        normalised = normalise_address(point.channel, address)
        clash = ContactPoint.objects.filter(
            team_id=point.team_id, channel=point.channel, address=normalised
        ).exclude(pk=point.pk)
        if clash.exists():
            raise ContactPointDuplicate(
                _("%(address)s already exists in this team.") % {"address": normalised},
                field="address",
            )
        point.address = normalised
    if is_primary is not None:
        point.is_primary = is_primary
    _history_user(point, actor)
    point.save()
    if address is not None:
        # A new address has a new hash, which may or may not be suppressed.
        contacts_reach_changed.send(sender=ContactPoint, contact_ids=[point.contact_id])
    return point


@transaction.atomic
def contact_point_remove(*, point: ContactPoint, actor: AbstractBaseUser | None) -> None:
    _ensure_may(actor, "crm.delete_contactpoint", point.team_id)
    _history_user(point, actor)
    contact_id = point.contact_id
    point.delete()
    contacts_reach_changed.send(sender=ContactPoint, contact_ids=[contact_id])


@transaction.atomic
def contact_delete(*, contact: Contact, actor: AbstractBaseUser | None) -> None:
    """Delete a contact that has no proof attached; one with a ledger must be erased instead."""
    _ensure_may(actor, "crm.delete_contact", contact.team_id)
    _history_user(contact, actor)
    try:
        with transaction.atomic():
            contact.delete()
    except ProtectedError as exc:
        raise ContactInvalid(
            _(
                "This contact has a consent or message history that must be kept as proof. "
                "Use an erasure request to remove the personal data instead."
            )
        ) from exc


@transaction.atomic
def tag_create(*, team: Team, name: str, actor: AbstractBaseUser | None) -> Tag:
    _ensure_may(actor, "crm.add_tag", team)
    name = name.strip()
    if not name:
        raise DomainError(_("A tag needs a name."), field="name")
    if Tag.objects.filter(team=team, name__iexact=name).exists():
        raise DomainError(
            _("This team already has the tag “%(name)s”.") % {"name": name}, field="name"
        )
    return Tag.objects.create(team=team, name=name)


def tag_get_or_create(*, team: Team, name: str) -> Tag:
    tag, _created = Tag.objects.get_or_create(team=team, name=name.strip())
    return tag


@transaction.atomic
def tag_delete(*, tag: Tag, actor: AbstractBaseUser | None) -> None:
    """Delete a tag; contacts simply lose it, and segment rules naming it match nobody."""
    _ensure_may(actor, "crm.delete_tag", tag.team_id)
    tag.delete()


@transaction.atomic
def contacts_tag(*, contacts: QuerySet[Contact], tag: Tag, actor: AbstractBaseUser | None) -> int:
    """Add `tag` to every contact of its team in `contacts`; returns how many gained it."""
    _ensure_may(actor, "crm.change_contact", tag.team_id)
    through = Contact.tags.through
    contact_ids = set(contacts.filter(team_id=tag.team_id).values_list("id", flat=True))
    already = set(
        through.objects.filter(tag=tag, contact_id__in=contact_ids).values_list(
            "contact_id", flat=True
        )
    )
    rows = [through(contact_id=cid, tag_id=tag.pk) for cid in contact_ids - already]
    through.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@transaction.atomic
def contacts_assign_team(
    *, contacts: QuerySet[Contact], team: Team, actor: AbstractBaseUser | None
) -> int:
    """Move contacts (with their addresses) to `team`.

    Refused as a whole if any address already exists in the target team, so nothing is half
    moved. Tags belong to a team and are dropped on the way.
    """
    _ensure_may(actor, "crm.change_contact", team)
    moving = list(contacts.exclude(team=team).select_related("team"))
    for contact in moving:
        _ensure_may(actor, "crm.change_contact", contact.team_id)
    ids = [contact.pk for contact in moving]
    clashes = ContactPoint.objects.filter(
        team=team,
        address__in=ContactPoint.objects.filter(contact_id__in=ids).values("address"),
    ).values_list("address", flat=True)
    clashes = sorted(set(clashes))
    if clashes:
        raise TeamMoveRefused(
            _("These addresses already exist in %(team)s: %(addresses)s.")
            % {"team": team, "addresses": ", ".join(clashes[:10])}
        )
    for contact in moving:
        if (
            contact.external_id
            and Contact.objects.filter(team=team, external_id=contact.external_id).exists()
        ):
            raise TeamMoveRefused(
                _("External id “%(id)s” already exists in %(team)s.")
                % {"id": contact.external_id, "team": team}
            )
        contact.tags.clear()
        contact.team = team
        _history_user(contact, actor, "moved to another team")
        contact.save(update_fields=["team", "updated_at"])
    ContactPoint.objects.filter(contact_id__in=ids).update(team=team)
    if ids:
        contacts_reach_changed.send(sender=Contact, contact_ids=ids)
    return len(moving)


def _segment_validated(team: Team, name: str, rules: Any, exclude_pk: int | None) -> None:
    validate_rules(rules)
    if not name.strip():
        raise DomainError(_("A segment needs a name."), field="name")
    if Segment.objects.filter(team=team, name=name).exclude(pk=exclude_pk).exists():
        raise DomainError(
            _("This team already has a segment called “%(name)s”.") % {"name": name},
            field="name",
        )


@transaction.atomic
def segment_create(
    *,
    team: Team,
    name: str,
    rules: dict[str, Any],
    actor: AbstractBaseUser | None,
    description: str = "",
) -> Segment:
    _ensure_may(actor, "crm.add_segment", team)
    _segment_validated(team, name, rules, None)
    segment = Segment(team=team, name=name, rules=rules, description=description)
    segment.created_by = actor
    _history_user(segment, actor)
    segment.save()
    return segment


@transaction.atomic
def segment_update(*, segment: Segment, actor: AbstractBaseUser | None, **fields: Any) -> Segment:
    _ensure_may(actor, "crm.change_segment", segment.team_id)
    name = fields.get("name", segment.name)
    rules = fields.get("rules", segment.rules)
    _segment_validated(segment.team, name, rules, segment.pk)
    segment.name = name
    segment.rules = rules
    segment.description = fields.get("description", segment.description)
    _history_user(segment, actor)
    segment.save()
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment, actor: AbstractBaseUser | None) -> None:
    _ensure_may(actor, "crm.delete_segment", segment.team_id)
    _history_user(segment, actor)
    segment.delete()


def roles_sync(*, using: str = "default") -> dict[str, int]:
    """Create the role groups and give each exactly its permissions (idempotent).

    Permissions that do not exist yet (an app not migrated yet) are skipped; the next
    migrate adds them.
    """
    from django.contrib.auth.models import Group, Permission

    available = {
        f"{app}.{codename}": pk
        for pk, app, codename in Permission.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    result = {}
    for role in roles.ALL_ROLES:
        group, _created = Group.objects.using(using).get_or_create(name=role)
        wanted = {available[name] for name in roles.ROLE_PERMISSIONS[role] if name in available}
        if role == roles.AUDITOR:
            wanted |= {
                pk
                for name, pk in available.items()
                if name.split(".")[0] in roles.AUDITED_APPS and ".view_" in name
            }
        group.permissions.set(wanted)
        result[role] = len(wanted)
    return result
