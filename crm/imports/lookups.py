"""Batch lookups by many values at once: `field = ANY(array)` on PostgreSQL, `IN` elsewhere.

A batch looks up thousands of addresses and ids. As `__in`, each value is its own query
parameter: Django prepares each one and, with client-side binding, psycopg splits the
statement at every placeholder to merge them in, which cost more than the matching itself.
One array parameter is one placeholder, whatever the batch size; PostgreSQL runs the same
plan (it turns an IN list into `= ANY` of an array itself).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.db import connection
from django.db.models import F, Lookup, Q


class _AnyOf(Lookup):
    """`lhs = ANY(%s)` with the values as one array parameter (PostgreSQL only)."""

    lookup_name = "any_of"
    prepare_rhs = False  # The list is one array value, not a value of the field's type.

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} = ANY({rhs})", [*lhs_params, *rhs_params]


def any_of(field: str, values: Collection[Any]) -> Q | Lookup:
    """A filter for rows whose `field` is one of `values` (a non-empty collection)."""
    if connection.vendor == "postgresql":
        return _AnyOf(F(field), list(values))
    return Q(**{f"{field}__in": values})
