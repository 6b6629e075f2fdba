"""Keeps the audience columns of the Consent projection (`team`, `reachable`) true.

The audience count (consent.selectors.contacts_with_grant) reads only the projection, so the
facts it depends on are copied onto each Consent row: the contact's team, and whether the
contact can be messaged on the row's channel at all (not restricted, not erased, at least one
address on that channel whose hash is not suppressed). The rule is written once, as SQL
(audience_columns_sql). consent_reachability_refresh applies it to existing rows, and every
write that changes an input calls it inside its own transaction: suppression, and, through
crm's `contacts_reach_changed` signal, address, restriction, erasure, team and import writes
in crm. Consent recording computes the columns of the rows it inserts with the same SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from django.db import connection, transaction
from django.db.models import QuerySet

from consent.models import Consent, Suppression
from crm.models import Contact, ContactPoint

# Contacts per UPDATE: bounds the statement's parameters on SQLite (one array on PostgreSQL).
REFRESH_CHUNK_SIZE = 5000


def audience_columns_sql(contact_id: str, channel: str) -> tuple[str, str]:
    """SQL for `team` and `reachable` of a projection row, given SQL for its contact and channel.

    Plain SQL that PostgreSQL and SQLite both run, so the UPDATE below and the projection's
    bulk upsert (consent.services.ledger) share one definition of "reachable".
    """
    contact = connection.ops.quote_name(Contact._meta.db_table)
    point = connection.ops.quote_name(ContactPoint._meta.db_table)
    suppression = connection.ops.quote_name(Suppression._meta.db_table)
    # Table names and SQL expressions from this code only, never input (hence the S608 noqa).
    team = f"(SELECT c.team_id FROM {contact} c WHERE c.id = {contact_id})"  # noqa: S608
    reachable = (
        f"(EXISTS (SELECT 1 FROM {contact} c WHERE c.id = {contact_id}"  # noqa: S608
        " AND NOT c.is_restricted AND c.erased_at IS NULL)"
        f" AND EXISTS (SELECT 1 FROM {point} p WHERE p.contact_id = {contact_id}"
        f" AND p.channel = {channel} AND NOT EXISTS ("
        f"SELECT 1 FROM {suppression} x WHERE x.address_hash = p.address_hash)))"
    )
    return team, reachable


def _update(where: str, params: list, *, only_new: bool) -> int:
    table = connection.ops.quote_name(Consent._meta.db_table)
    team, reachable = audience_columns_sql(f"{table}.contact_id", f"{table}.channel")
    if only_new:
        where += " AND team_id IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET team_id = {team}, reachable = {reachable} WHERE {where}",  # noqa: S608
            params,
        )
        return cursor.rowcount


def consent_reachability_refresh(
    *, contact_ids: Collection[int] | QuerySet, only_new: bool = False
) -> int:
    """Recompute `team` and `reachable` of every Consent row of these contacts (set-based).

    `contact_ids` is a collection of ids or a queryset of `contact_id` values (e.g. the
    contacts holding a suppressed address). `only_new` limits it to rows never computed yet
    (`team` is null). Runs in the caller's transaction, so the audience count never sees the
    inputs and the projection disagree. Returns the rows written.
    """
    if isinstance(contact_ids, QuerySet):
        sql, params = contact_ids.order_by().query.sql_with_params()
        return _update(f"contact_id IN ({sql})", list(params), only_new=only_new)
    ids = sorted(set(contact_ids))
    written = 0
    for start in range(0, len(ids), REFRESH_CHUNK_SIZE):
        chunk = ids[start : start + REFRESH_CHUNK_SIZE]
        if connection.vendor == "postgresql":
            # One array parameter whatever the chunk's size (see crm.imports.lookups).
            written += _update("contact_id = ANY(%s)", [chunk], only_new=only_new)
        else:
            marks = ", ".join(["%s"] * len(chunk))
            written += _update(f"contact_id IN ({marks})", chunk, only_new=only_new)
    return written


def consent_reachability_refresh_address(*, address_hash: str) -> int:
    """Refresh the contacts (of every team) holding an address with this hash."""
    holders = ContactPoint.objects.filter(address_hash=address_hash).values("contact_id")
    return consent_reachability_refresh(contact_ids=holders)


def consent_reachability_refresh_all(
    *, on_progress: Callable[[int, int], None] | None = None
) -> int:
    """Recompute the audience columns of the whole projection, REFRESH_CHUNK_SIZE contacts per
    transaction (a repair after writes that went around the services, e.g. SQL by hand).

    `on_progress(done, total)` is called after each chunk with counts of contacts. Returns
    the rows written.
    """
    contact_ids = list(
        Consent.objects.order_by("contact_id").values_list("contact_id", flat=True).distinct()
    )
    written = 0
    for start in range(0, len(contact_ids), REFRESH_CHUNK_SIZE):
        chunk = contact_ids[start : start + REFRESH_CHUNK_SIZE]
        with transaction.atomic():
            written += consent_reachability_refresh(contact_ids=chunk)
        if on_progress is not None:
            on_progress(start + len(chunk), len(contact_ids))
    return written
