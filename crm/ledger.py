"""Append-only, hash-chained ledgers (consent events, review decisions, messages).

Each entry stores the previous entry's hash and its own SHA-256 over a canonical
serialisation of its payload, so an export can be verified without the database. Rows refuse
updates and deletes in the ORM; on PostgreSQL a trigger refuses them in SQL as well.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from django.db import migrations, models
from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError

GENESIS_HASH: Final = "0" * 64


class LedgerImmutable(DomainError):
    code = "ledger_immutable"


def canonical_json(payload: dict[str, Any]) -> bytes:
    """One spelling of a payload: sorted keys, no spaces, UTF-8, datetimes as ISO strings."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def chain_hash(previous_hash: str, payload: dict[str, Any]) -> str:
    return sha256_hex(previous_hash.encode("ascii") + b"\n" + canonical_json(payload))


class LedgerQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise LedgerImmutable(_("Ledger entries cannot be changed."))

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerImmutable(_("Ledger entries cannot be deleted."))


class LedgerEntry(models.Model):
    """Abstract base: subclasses define `chain_payload()` and are written by one service."""

    previous_hash = models.CharField(_("previous hash"), max_length=64, editable=False)
    hash = models.CharField(_("hash"), max_length=64, editable=False, unique=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerImmutable(_("Ledger entries cannot be changed."))
        if not self.hash:
            raise LedgerImmutable(_("A ledger entry must be sealed before it is saved."))
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerImmutable(_("Ledger entries cannot be deleted."))

    def chain_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def compute_hash(self) -> str:
        return chain_hash(self.previous_hash, self.chain_payload())

    def seal(self, previous_hash: str) -> None:
        """Link to the chain; call under the chain's lock, just before the insert."""
        self.previous_hash = previous_hash
        self.hash = self.compute_hash()


@dataclass(frozen=True)
class ChainBreak:
    chain: Any
    entry_id: Any
    reason: str


def verify_chain(chain: Any, entries: Iterable[LedgerEntry]) -> ChainBreak | None:
    """Recompute one chain (entries in order); the first broken link, or None if intact."""
    previous = GENESIS_HASH
    for entry in entries:
        if entry.previous_hash != previous:
            return ChainBreak(chain, entry.pk, "previous_hash does not match the entry before")
        if entry.compute_hash() != entry.hash:
            return ChainBreak(chain, entry.pk, "content does not match its hash")
        previous = entry.hash
    return None


def iter_chains(
    entries: Iterable[LedgerEntry], chain_key: str
) -> Iterator[tuple[Any, list[LedgerEntry]]]:
    """Group entries that arrive ordered by (chain, position) into chains, streaming."""
    current_key: Any = object()
    bucket: list[LedgerEntry] = []
    for entry in entries:
        key = getattr(entry, chain_key)
        if key != current_key and bucket:
            yield current_key, bucket
            bucket = []
        current_key = key
        bucket.append(entry)
    if bucket:
        yield current_key, bucket


def _trigger_sql(table: str) -> tuple[str, str]:
    function = f"{table}_append_only"
    forward = f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER {function}_guard BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {function}();
    """
    backward = f"""
        DROP TRIGGER IF EXISTS {function}_guard ON {table};
        DROP FUNCTION IF EXISTS {function}();
    """
    return forward, backward


def protect_ledger_table(table: str) -> migrations.RunPython:
    """A reversible migration operation: on PostgreSQL, refuse UPDATE and DELETE in SQL.

    TRUNCATE stays possible: it needs table ownership (an operator, not the application) and
    the test runner's flush relies on it.
    """
    forward_sql, backward_sql = _trigger_sql(table)

    def forward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(forward_sql, params=None)

    def backward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(backward_sql, params=None)

    return migrations.RunPython(forward, backward)
