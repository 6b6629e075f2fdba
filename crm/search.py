"""The contact search document: what the contact search reads, one column per contact.

A search term matches a contact when its name, organisation or one of its addresses contains
the term (or the external id equals it). Asked of four columns in two tables, every search
either built a hashed set of all matching addresses (tens of thousands for a common name) or
probed the addresses once per contact walked. Kept together in `Contact.search_document`,
one condition decides a contact and one trigram index finds a rare term (migration 0008).

The document is derived data, kept current by every writer: Contact.save and
ContactPoint.save/delete (so the services, the admin and the API), the queryset updates of
the erasure (ContactQuerySet.search_documents_refresh), and the bulk writers that skip
save(), the import and the demo data, which compute it for the rows they write. Tests
compare each writer's documents with `search_document`.

Parts are joined by a line break, which a search term cannot contain, so a term matches
within one part only; first and last name form one part, so a full name ("Anna Schmidt")
is found too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

PART_SEPARATOR = "\n"
# The contact fields the document is made of (besides the addresses).
SEARCHED_FIELDS = frozenset({"first_name", "last_name", "organisation"})


class Searched(Protocol):
    """What a document is made of besides the addresses (a Contact, or its migration-time
    version)."""

    first_name: str
    last_name: str
    organisation: str


def search_document(contact: Searched, addresses: Iterable[str]) -> str:
    """The document of `contact` with these addresses."""
    full_name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    parts = [full_name, contact.organisation, *sorted(addresses)]
    return PART_SEPARATOR.join(part for part in parts if part)


# search_document() for every contact at once, in PostgreSQL (a rebuild of a million
# contacts: the migration that added the column, the benchmarks' generated data). Addresses
# sorted by code point (COLLATE "C"), as Python's sorted() does; a test compares the two.
SEARCH_DOCUMENTS_SQL = """
UPDATE crm_contact c SET search_document = concat_ws(E'\\n',
    nullif(concat_ws(' ', nullif(c.first_name, ''), nullif(c.last_name, '')), ''),
    nullif(c.organisation, ''),
    (SELECT string_agg(p.address, E'\\n' ORDER BY p.address COLLATE "C")
     FROM crm_contactpoint p WHERE p.contact_id = c.id AND p.address <> ''))
"""
