"""Batch lookups by many values at once: `field = ANY(array)` on PostgreSQL, `IN` elsewhere.

A batch looks up thousands of addresses and ids. As `__in`, each value is its own query
parameter: Django prepares each one and, with client-side binding, psycopg splits the
statement at every placeholder to merge them in, which cost more than the matching itself.
One array parameter is one placeholder, whatever the batch size; PostgreSQL runs the same
plan (it turns an IN list into `= ANY` of an array itself). The array is sent in its text
form, built by array_literal in one join: psycopg adapts a list element by element in
Python, which for a batch's 5,000 addresses cost more than the database's lookup.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Final

from django.db import connection
from django.db.models import F, Lookup, Q


def array_literal(values: Iterable[str | int]) -> str:
    """PostgreSQL's text form of the one-dimensional array of `values`, all ints or all
    strings: each string is quoted, with backslashes and double quotes escaped, so none
    reads as NULL or splits the array."""
    values = list(values)
    if all(type(value) is int for value in values):
        return "{" + ",".join(map(str, values)) + "}"
    # Escaped in one pass over the joined text, not two replaces per value: the values are
    # joined by NUL, which no PostgreSQL text holds, and each NUL then becomes '","'.
    joined = _SEPARATOR.join(values)
    if joined.count(_SEPARATOR) != len(values) - 1:
        # A value holds a NUL itself: quoted one by one (PostgreSQL will refuse it).
        quoted = (_escape(value) for value in values)
        return '{"' + '","'.join(quoted) + '"}'
    return '{"' + _escape(joined).replace(_SEPARATOR, '","') + '"}'


_SEPARATOR: Final = "\x00"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _AnyOf(Lookup):
    """`lhs = ANY(%s::type[])` with the values as one array literal (PostgreSQL only)."""

    lookup_name = "any_of"
    prepare_rhs = False  # The list is one array value, not a value of the field's type.

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        array_type = "bigint[]" if type(self.rhs[0]) is int else "text[]"
        return f"{lhs} = ANY(%s::{array_type})", [*lhs_params, array_literal(self.rhs)]


def any_of(field: str, values: Collection[Any]) -> Q | Lookup:
    """A filter for rows whose `field` is one of `values` (a collection of ints or of
    strings)."""
    if not values:
        return Q(**{f"{field}__in": []})  # Django answers "nothing" without asking the database.
    if connection.vendor == "postgresql":
        return _AnyOf(F(field), list(values))
    return Q(**{f"{field}__in": values})
