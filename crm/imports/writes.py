"""Inserting a batch's new rows with their history: COPY on PostgreSQL, bulk_create elsewhere.

Both paths write the same rows. The history rows are what simple-history's
bulk_create_with_history writes (bulk_create sends no signals, so history is written
explicitly): one "+" row per created object with the importing user, the import as change
reason and one timestamp for the batch. COPY needs the ids before it writes, so they are
taken from the table's own sequence in one query, as an INSERT would take them.

Model instances are made by copying a prototype's state (see InstanceMaker): at a million
rows, Model.__init__ alone would cost more than the whole COPY.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection, models
from django.db.models.base import ModelState
from psycopg.types.json import Jsonb
from simple_history.utils import bulk_create_with_history

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

M = TypeVar("M", bound=models.Model)


class InstanceMaker:
    """Unsaved instances of `model` with `defaults`, without running Model.__init__ per row.

    The prototype is built once the normal way (defaults, field defaults, related objects
    given as defaults are cached like a normal instance caches them); each call copies its
    attribute dictionary, with fresh copies of mutable defaults such as a JSON `{}`.
    """

    def __init__(self, model: type[M], **defaults: Any) -> None:
        self.model = model
        prototype = model(**defaults)
        self.state = {k: v for k, v in prototype.__dict__.items() if k != "_state"}
        self.mutable = [k for k, v in self.state.items() if isinstance(v, dict | list)]
        self.fields_cache = dict(prototype._state.fields_cache)

    def __call__(self, **values: Any) -> Any:
        instance = self.model.__new__(self.model)
        state = ModelState()
        state.fields_cache = dict(self.fields_cache)
        instance.__dict__.update(self.state)
        for name in self.mutable:
            instance.__dict__[name] = self.state[name].copy()
        instance.__dict__.update(values)
        instance.__dict__["_state"] = state
        return instance


def uses_copy() -> bool:
    return connection.vendor == "postgresql"


def create_with_history(
    model: type[models.Model],
    instances: Sequence[models.Model],
    *,
    actor: AbstractBaseUser | None,
    reason: str,
    now: dt.datetime,
) -> None:
    """Insert `instances` (setting their ids) and one "+" history row for each."""
    if not instances:
        return
    if not uses_copy():
        bulk_create_with_history(
            list(instances),
            model,
            default_user=actor,
            default_change_reason=reason,
            default_date=now,
        )
        return
    fields = model._meta.concrete_fields
    ids = _reserve_ids(model, len(instances))
    for instance, pk in zip(instances, ids, strict=True):
        instance.pk = pk
        instance.created_at = now
        instance.updated_at = now
        instance._state.adding = False
        instance._state.db = connection.alias
    _copy(model, [f.column for f in fields], _values(instances, fields))
    history = model.history.model  # type: ignore[attr-defined]
    extra = {
        "history_date": now,
        "history_change_reason": reason,
        "history_type": "+",
        "history_user_id": actor.pk if actor is not None else None,
    }
    history_fields = [f for f in history._meta.concrete_fields if f.attname != "history_id"]
    copied = [f for f in history_fields if f.attname not in extra]
    constant = tuple(extra[f.attname] for f in history_fields if f.attname in extra)
    columns = [f.column for f in copied] + [f.column for f in history_fields if f.attname in extra]
    _copy(history, columns, (row + constant for row in _values(instances, copied)))


def _values(instances: Sequence[models.Model], fields: Sequence[models.Field]) -> Any:
    """Each instance's values in the order of `fields`, JSON wrapped for COPY."""
    names = [f.attname for f in fields]
    json_names = {f.attname for f in fields if isinstance(f, models.JSONField)}
    for instance in instances:
        state = instance.__dict__
        yield tuple(Jsonb(state[name]) if name in json_names else state[name] for name in names)


def _reserve_ids(model: type[models.Model], count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [model._meta.db_table, model._meta.pk.column, count],
        )
        return [pk for (pk,) in cursor.fetchall()]


def _copy(model: type[models.Model], columns: list[str], rows: Any) -> None:
    quote = connection.ops.quote_name
    statement = (
        f"COPY {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    )
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
