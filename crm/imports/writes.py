"""Inserting a batch's new rows with their history: COPY on PostgreSQL, bulk_create elsewhere.

Both paths write the same rows. The history rows are what simple-history's
bulk_create_with_history writes (bulk_create sends no signals, so history is written
explicitly): one "+" row per created object with the importing user, the import as change
reason and one timestamp for the batch; on PostgreSQL the database copies them from the
rows just written. COPY needs the ids before it writes, so they are taken from the table's
own sequence in one query, as an INSERT would take them.

Model instances are made by copying a prototype's state (see InstanceMaker): at a million
rows, Model.__init__ alone would cost more than the whole COPY.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection, models
from django.db.models.base import ModelState
from psycopg.types.json import Jsonb
from simple_history.utils import bulk_create_with_history

from crm.imports.lookups import any_of, array_literal
from crm.models import ContactPoint
from crm.signals import contacts_reach_changed

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


def load(queryset: models.QuerySet[M], fields: Sequence[str]) -> Iterator[M]:
    """The queryset's objects with only `fields` loaded, made like InstanceMaker makes them.

    Values come through values_list (with the fields' database converters); the instances
    are what `queryset.only(*fields)` returns without Model.__init__ per row: any other
    field loads from the database when it is first read, as a deferred field does.
    """
    model = queryset.model
    names = [model._meta.get_field(name).attname for name in fields]
    db = queryset.db
    for values in queryset.values_list(*names):
        instance = model.__new__(model)
        state = ModelState()
        state.adding = False
        state.db = db
        instance.__dict__.update(zip(names, values, strict=True))
        instance.__dict__["_state"] = state
        yield instance


def load_deferred(instances: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Fill in `fields` of instances from load() in one query (not one refresh per object)."""
    if not instances:
        return
    model = type(instances[0])
    names = [model._meta.get_field(name).attname for name in fields]
    by_pk = {instance.pk: instance for instance in instances}
    rows = model._base_manager.filter(any_of("pk", by_pk)).order_by().values_list("pk", *names)
    for pk, *values in rows:
        by_pk[pk].__dict__.update(zip(names, values, strict=True))


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
        _announce(model, instances)
        return
    fields = model._meta.concrete_fields
    ids = reserve_ids(model, len(instances))
    pk_name = model._meta.pk.attname
    alias = connection.alias
    for instance, pk in zip(instances, ids, strict=True):
        instance.__dict__.update({pk_name: pk, "created_at": now, "updated_at": now})
        instance._state.adding = False
        instance._state.db = alias
    _copy(model, [f.column for f in fields], _values(instances, fields))
    _copy_history(model, ids, actor=actor, reason=reason, now=now)
    _announce(model, instances)


def _announce(model: type[models.Model], instances: Sequence[models.Model]) -> None:
    """New addresses of existing contacts change whether they can be reached (crm.signals)."""
    if model is ContactPoint:
        contact_ids = sorted({point.contact_id for point in instances})
        contacts_reach_changed.send(sender=model, contact_ids=contact_ids)


def _copy_history(
    model: type[models.Model],
    ids: list[int],
    *,
    actor: AbstractBaseUser | None,
    reason: str,
    now: dt.datetime,
) -> None:
    """The "+" history rows of the objects just copied in, made by the database from them:
    one INSERT … SELECT (in id order, as the objects were written) instead of every row
    going through Python a second time."""
    history = model.history.model  # type: ignore[attr-defined]
    extra = {
        "history_date": now,
        "history_change_reason": reason,
        "history_type": "+",
        "history_user_id": actor.pk if actor is not None else None,
    }
    history_fields = [f for f in history._meta.concrete_fields if f.attname != "history_id"]
    copied = [f for f in history_fields if f.attname not in extra]
    constant = [f for f in history_fields if f.attname in extra]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in [*copied, *constant])
    sources = ", ".join(quote(model._meta.get_field(f.name).column) for f in copied)
    pk = quote(model._meta.pk.column)
    statement = (
        f"INSERT INTO {quote(history._meta.db_table)} ({columns}) "  # noqa: S608 - model names
        f"SELECT {sources}, {', '.join(['%s'] * len(constant))} "
        f"FROM {quote(model._meta.db_table)} WHERE {pk} = ANY(%s::bigint[]) ORDER BY {pk}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*(extra[f.attname] for f in constant), array_literal(ids)])


def _values(instances: Sequence[models.Model], fields: Sequence[models.Field]) -> Any:
    """Each instance's values in the order of `fields`, JSON wrapped for COPY."""
    get = operator.itemgetter(*(f.attname for f in fields))
    json_positions = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    for instance in instances:
        values = get(instance.__dict__)
        if json_positions:
            values = list(values)
            for i in json_positions:
                values[i] = Jsonb(values[i])
            values = tuple(values)
        yield values


def insert_links(through: type[models.Model], pairs: Sequence[tuple[int, int]]) -> None:
    """Insert many-to-many rows (from id, to id) of `through`, skipping those that exist.

    On PostgreSQL one INSERT … SELECT FROM unnest() of two arrays: two parameters, no model
    instances (bulk_create builds and prepares one per link).
    """
    if not pairs:
        return
    source, target = (f for f in through._meta.concrete_fields if f.is_relation)
    if not uses_copy():
        through.objects.bulk_create(
            [through(**{source.attname: a, target.attname: b}) for a, b in pairs],
            ignore_conflicts=True,
        )
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(through._meta.db_table)} "  # noqa: S608 - names from the model
            f"({quote(source.column)}, {quote(target.column)}) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
            [array_literal(a for a, _b in pairs), array_literal(b for _a, b in pairs)],
        )


def reserve_ids(model: type[models.Model], count: int) -> list[int]:
    """`count` primary keys from the model's sequence (PostgreSQL), for rows written by COPY."""
    with connection.cursor() as cursor:
        # The sequence is looked up once (a sub-select, run before the rows): as an argument of
        # nextval, pg_get_serial_sequence ran once per id, ten times the cost of nextval itself.
        cursor.execute(
            "SELECT nextval((SELECT pg_get_serial_sequence(%s, %s)::regclass))"
            " FROM generate_series(1, %s)",
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
