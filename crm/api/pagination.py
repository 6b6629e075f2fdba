"""Kept apart from crm.api.base: DRF reads the default pagination class while importing
its generics, so this module must not import viewsets itself."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class DefaultCursorPagination(CursorPagination):
    """Cursor paging: constant cost on page 1 and page 10,000 (no OFFSET scans)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("-created_at", "-id")
