"""Kept apart from crm.api.base: DRF reads the default pagination class while importing
its generics, so this module must not import viewsets itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rest_framework.pagination import CursorPagination, _reverse_ordering

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from rest_framework.request import Request

# Narrows a queryset to the rows a page can be taken from (see page_window).
PageWindow = Callable[["QuerySet[Any]"], "QuerySet[Any]"]


class DefaultCursorPagination(CursorPagination):
    """Cursor paging: constant cost on page 1 and page 10,000 (no OFFSET scans)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("-created_at", "-id")

    def page_window(self, request: Request) -> PageWindow | None:
        """What paginate_queryset does to the queryset before taking the page, as a function:
        the cursor's ordering and position, then the first offset + page size + 1 rows.

        A filter whose matches are the union of several parts can apply it to each part
        (selectors.contacts_matching): the page is then found among a few rows per part
        instead of among every match. An invalid cursor is a 404, as in paginate_queryset.
        """
        page_size = self.get_page_size(request)
        if not page_size:
            return None
        cursor = self.decode_cursor(request)
        offset, reverse, position = cursor if cursor is not None else (0, False, None)
        ordering = tuple(self.ordering)
        # The same steps, in the same order, as CursorPagination.paginate_queryset.
        if reverse:
            ordering = _reverse_ordering(ordering)
        position_filter: dict[str, Any] = {}
        if position is not None:
            order = self.ordering[0]
            comparison = "lt" if reverse != order.startswith("-") else "gt"
            position_filter = {f"{order.lstrip('-')}__{comparison}": position}
        limit = offset + page_size + 1

        def window(queryset: QuerySet[Any]) -> QuerySet[Any]:
            return queryset.order_by(*ordering).filter(**position_filter)[:limit]

        return window
