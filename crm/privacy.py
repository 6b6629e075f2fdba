"""Pseudonymisation on the crm side: a contact's fields, addresses and every history row of them.

Erasure (GDPR Art. 17, `consent.services.contact_erase`) and retention call this. The contact
row itself stays, because the consent ledger points at it as proof; afterwards it holds nothing
that identifies the person. django-simple-history keeps every earlier version of a row, so the
same fields are rewritten in all HistoricalContact / HistoricalContactPoint rows as well, and
the admin log's copies of the contact's name and addresses are scrubbed too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import phonenumbers
from django.apps import apps
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crm import selectors
from crm.errors import PermissionRefused
from crm.models import Channel, Contact, ContactPoint, ImportRejection
from crm.signals import contacts_reach_changed

if TYPE_CHECKING:
    import datetime as dt

    from django.contrib.auth.models import AbstractBaseUser

# Contact fields that describe the person, and the value each becomes.
PERSONAL_CONTACT_FIELDS: Final[dict[str, Any]] = {
    "salutation": "",
    "first_name": "",
    "last_name": "",
    "organisation": "",
    "profession": "",
    "attributes": {},
    "external_id": None,
}
# RFC 2606 reserves .invalid: a placeholder can never be delivered to anyone.
PLACEHOLDER_PREFIX: Final = "erased-"
PLACEHOLDER_EMAIL_DOMAIN: Final = "erased.invalid"
# What replaces a name or an address inside free text (admin log, import reports).
SCRUBBED: Final = "[erased]"
# Shorter terms would scrub ordinary words ("Al", "Li") out of unrelated text.
MIN_TERM_LENGTH: Final = 3


@dataclass(frozen=True)
class PseudonymisedContact:
    """What contact_pseudonymise found: the addresses it replaced and the terms it scrubbed."""

    addresses: tuple[tuple[str, str], ...]
    terms: tuple[str, ...]


def address_placeholder(point_id: int, channel: str) -> str:
    """A non-personal stand-in for an erased address, unique per team and channel (point id)."""
    if channel == Channel.EMAIL:
        return f"{PLACEHOLDER_PREFIX}{point_id}@{PLACEHOLDER_EMAIL_DOMAIN}"
    return f"{PLACEHOLDER_PREFIX}{point_id}"


def is_placeholder(address: str) -> bool:
    return address.startswith(PLACEHOLDER_PREFIX)


def phone_spellings(e164: str) -> list[str]:
    """E.164 plus the national forms people type ("01701234567", "1701234567")."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return [e164]
    national = str(number.national_number)
    return [e164, f"0{national}", national]


def contact_addresses(contact: Contact) -> list[tuple[str, str]]:
    """Every (channel, address) the contact has or had, read from its points and their history.

    Placeholders of an earlier erasure are left out: their real address is already gone.
    """
    current = ContactPoint.objects.filter(contact=contact).values_list("channel", "address")
    past = ContactPoint.history.filter(contact_id=contact.pk).values_list("channel", "address")
    found = {(channel, address) for channel, address in [*current, *past]}
    return sorted(pair for pair in found if not is_placeholder(pair[1]))


def personal_terms(contact: Contact, addresses: Iterable[tuple[str, str]]) -> list[str]:
    """Strings that identify the contact: names (current and past), external ids, addresses."""
    history = Contact.history.filter(id=contact.pk).values_list(
        "first_name", "last_name", "organisation", "external_id"
    )
    terms: set[str] = set()
    for first, last, organisation, external_id in [
        (contact.first_name, contact.last_name, contact.organisation, contact.external_id),
        *history,
    ]:
        terms.update({first, last, organisation, external_id or ""})
        terms.add(f"{first} {last}".strip())
    for channel, address in addresses:
        is_phone = channel in (Channel.SMS, Channel.WHATSAPP)
        terms.update(phone_spellings(address) if is_phone else [address])
    # Longest first, so "Erika Muster" is replaced before "Erika" splits it.
    return sorted(
        (term.strip() for term in terms if len(term.strip()) >= MIN_TERM_LENGTH),
        key=lambda term: (-len(term), term),
    )


def scrub_text(text: str, terms: Iterable[str]) -> str:
    """Replace every term (case-insensitive) in free text with a marker."""
    for term in terms:
        text = re.sub(re.escape(term), SCRUBBED, text, flags=re.IGNORECASE)
    return text


def scrub_value(value: Any, terms: Iterable[str]) -> Any:
    """scrub_text for JSON-shaped values (dicts, lists, strings), keys included."""
    terms = list(terms)
    if isinstance(value, str):
        return scrub_text(value, terms)
    if isinstance(value, list):
        return [scrub_value(item, terms) for item in value]
    if isinstance(value, dict):
        return {scrub_text(str(k), terms): scrub_value(v, terms) for k, v in value.items()}
    return value


def _pseudonymise_points(contact: Contact) -> None:
    # Queryset updates on purpose: save() would recompute address_hash from the placeholder,
    # and the hash of the real address is what suppression and proof rely on. History rows
    # are rewritten right after, so skipping simple-history loses nothing.
    point_ids = set(ContactPoint.objects.filter(contact=contact).values_list("id", "channel"))
    point_ids |= set(
        ContactPoint.history.filter(contact_id=contact.pk).values_list("id", "channel")
    )
    for point_id, channel in sorted(point_ids):
        placeholder = address_placeholder(point_id, channel)
        ContactPoint.objects.filter(pk=point_id).update(address=placeholder)
        ContactPoint.history.filter(id=point_id).update(address=placeholder)


def _scrub_change_reasons(history: Any, terms: list[str]) -> None:
    rows = history.exclude(history_change_reason__isnull=True).exclude(history_change_reason="")
    for history_id, reason in rows.values_list("history_id", "history_change_reason"):
        scrubbed = scrub_text(reason, terms)
        if scrubbed != reason:
            history.filter(history_id=history_id).update(history_change_reason=scrubbed)


def _scrub_admin_log(contact: Contact, terms: list[str]) -> None:
    """The admin log copies an object's name (and inline addresses) into its own rows."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    point_ids = [
        str(pk)
        for pk in ContactPoint.history.filter(contact_id=contact.pk)
        .values_list("id", flat=True)
        .distinct()
    ]
    entries = LogEntry.objects.filter(
        Q(content_type=ContentType.objects.get_for_model(Contact), object_id=str(contact.pk))
        | Q(content_type=ContentType.objects.get_for_model(ContactPoint), object_id__in=point_ids)
    )
    for entry in entries:
        try:
            message = json.dumps(scrub_value(json.loads(entry.change_message), terms))
        except ValueError:
            message = scrub_text(entry.change_message, terms)
        entry.object_repr = scrub_text(entry.object_repr, terms)[:200]
        entry.change_message = message
        entry.save(update_fields=["object_repr", "change_message"])


def _scrub_import_rejections(contact: Contact, terms: list[str], addresses: list[str]) -> None:
    """Rejected import rows of the contact's team that name one of its addresses.

    Matched on the normalised addresses (ASCII, so the JSON text search works on every
    database); a row naming the person only in some other spelling is not found here.
    """
    if not addresses:
        return
    match = Q()
    for address in addresses:
        match |= Q(raw__icontains=address) | Q(reason__icontains=address)
    rows = ImportRejection.objects.filter(match, contact_import__team_id=contact.team_id)
    for row in rows:
        row.raw = scrub_value(row.raw, terms)
        row.reason = scrub_text(row.reason, terms)[:500]
        row.save(update_fields=["raw", "reason"])


@transaction.atomic
def contact_pseudonymise(
    *,
    contact: Contact,
    actor: AbstractBaseUser | None = None,
    erased_at: dt.datetime | None = None,
) -> PseudonymisedContact:
    """Replace the contact's personal data, now and in its history, and mark it erased.

    Names, organisation, profession, attributes, external id and tags are cleared; addresses
    become placeholders while `address_hash` keeps the hashed identifier. Idempotent. The
    caller checks permissions (erasure and retention have different rules) and suppression.
    """
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    addresses = contact_addresses(contact)
    terms = personal_terms(contact, addresses)

    for name, value in PERSONAL_CONTACT_FIELDS.items():
        setattr(contact, name, value)
    contact.erased_at = contact.erased_at or erased_at or timezone.now()
    if actor is not None:
        contact._history_user = actor
    contact._change_reason = "pseudonymised"
    contact.save()
    contact.tags.clear()
    Contact.history.filter(id=contact.pk).update(**PERSONAL_CONTACT_FIELDS)
    _scrub_change_reasons(Contact.history.filter(id=contact.pk), terms)

    _pseudonymise_points(contact)
    Contact.objects.filter(pk=contact.pk).search_documents_refresh()
    _scrub_change_reasons(ContactPoint.history.filter(contact_id=contact.pk), terms)
    _scrub_admin_log(contact, terms)
    _scrub_import_rejections(contact, terms, [address for _channel, address in addresses])
    # An erased contact is never reached again.
    contacts_reach_changed.send(sender=Contact, contact_ids=[contact.pk])
    return PseudonymisedContact(addresses=tuple(addresses), terms=tuple(terms))


@transaction.atomic
def contact_purge(*, contact: Contact) -> None:
    """Delete a contact with its addresses and every history row of both (retention).

    A plain delete would leave simple-history's copies (including the "deleted" row it
    writes) with all personal data. Raises ProtectedError when other rows still need it.
    """
    addresses = contact_addresses(contact)
    terms = personal_terms(contact, addresses)
    _scrub_admin_log(contact, terms)
    _scrub_import_rejections(contact, terms, [address for _channel, address in addresses])
    contact_id = contact.pk
    contact.delete()
    ContactPoint.history.filter(contact_id=contact_id).delete()
    Contact.history.filter(id=contact_id).delete()


@transaction.atomic
def contact_restriction_set(
    *, contact: Contact, restricted: bool, actor: AbstractBaseUser | None, perm: str
) -> Contact:
    """GDPR Art. 18: keep the contact but stop processing it (the send gate refuses).

    `perm` is the permission the calling service demands (the consent app decides who may
    restrict); team membership is checked here as for every crm write.
    """
    if actor is not None and not selectors.user_may_write(actor, perm, contact.team_id):
        raise PermissionRefused(_("You may not do this for this team."))
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    if contact.is_restricted == restricted:
        return contact
    contact.is_restricted = restricted
    if actor is not None:
        contact._history_user = actor
    contact._change_reason = "processing restricted" if restricted else "restriction lifted"
    contact.save()
    contacts_reach_changed.send(sender=Contact, contact_ids=[contact.pk])
    return contact
