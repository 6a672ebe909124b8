"""One page of a list, with links that keep the rest of the query string.

A page can hold more than one paginated list (orders and licenses, say): each
list names its own query parameter, and a link to the next page of one list
keeps the other list where it was.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest


def page_of(request: HttpRequest, rows: Any, per_page: int, *, param: str = "page") -> Page[Any]:
    """The requested page of ``rows`` (a queryset or a list); a bad number gives the first or last page.

    The page gets ``previous_url`` and ``next_url`` (query strings, or ``""``)
    for ``includes/pagination.html``.
    """
    page = Paginator(rows, per_page).get_page(request.GET.get(param))
    page.previous_url = _url(request, param, page.previous_page_number()) if page.has_previous() else ""  # type: ignore[attr-defined]
    page.next_url = _url(request, param, page.next_page_number()) if page.has_next() else ""  # type: ignore[attr-defined]
    return page


def _url(request: HttpRequest, param: str, number: int) -> str:
    query = request.GET.copy()
    query[param] = str(number)
    return "?" + query.urlencode()
