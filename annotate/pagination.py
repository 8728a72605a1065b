"""Limit/offset pages for the REST API's list endpoints.

Every list answers ``{"count", "next", "previous", "results"}`` (the shape DRF clients expect):
``count`` is the total before slicing, ``next``/``previous`` are absolute URLs of the
neighbouring pages with the request's other query parameters kept, or ``null`` at the ends.
ninja's own ``LimitOffsetPagination`` answers ``{"items", "count"}`` without links, so the
envelope is built here.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Schema


class Page(Schema):
    count: int
    next: str | None
    previous: str | None


def page_url(request: HttpRequest, *, limit: int, offset: int) -> str:
    query = request.GET.copy()
    query["limit"] = str(limit)
    query["offset"] = str(offset)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def paginate(
    request: HttpRequest, rows: QuerySet, *, limit: int, offset: int, maximum: int
) -> tuple[list[Any], dict[str, Any]]:
    """The slice of ``rows`` for ``limit``/``offset`` (limit clamped to 1..``maximum``).

    ``rows`` must be ordered by a unique key, or pages may repeat or skip rows.
    Returns the sliced rows and the envelope without ``results``.
    """
    limit = max(1, min(limit, maximum))
    count = rows.count()
    # Past the end is the end (an empty page): a huge offset never reaches the database, where
    # it overflowed the integer type (a 500).
    offset = min(max(0, offset), count)
    page = list(rows[offset : offset + limit])
    following = offset + limit
    envelope = {
        "count": count,
        "next": page_url(request, limit=limit, offset=following) if following < count else None,
        "previous": page_url(request, limit=limit, offset=max(0, offset - limit))
        if offset > 0
        else None,
    }
    return page, envelope
