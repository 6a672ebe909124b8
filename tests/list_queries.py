"""Query counts of list pages and list endpoints: they must not grow with the rows (tests only).

The tests in ``tests/<app>/test_list_queries.py`` seed N rows of what a page
lists, load it, seed up to 3N, load it again, and compare the numbers of
queries: a related lookup made per row (an N+1) shows up as a difference,
printed with the queries of both loads. Pages are also checked for a page-size
bound: the page holds at most ``PAGE`` rows and links to the next page.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from common.models import Organisation, User
from tests.helpers import login_with_otp

if TYPE_CHECKING:
    from custody.models import Grant
    from training.models import TrainingJob

N = 3
# Page size the tests set (a module's ``*_PER_PAGE``, or the API's ``?page_size=``): between N and 3N,
# so the 3N load renders more rows than the N load and still has a second page.
PAGE = 5

_NUMBERS = re.compile(r"\b\d+\b")
_NEXT_LINK = re.compile(r'href="([^"]*)" rel="next"')
_SERIAL = count(1)


def serial() -> int:
    """A number no seeded row has used yet, for unique names, slugs and references."""
    return next(_SERIAL)


@dataclass
class Load:
    """One request: the response and the SQL it ran."""

    response: Any
    queries: list[str]

    @property
    def count(self) -> int:
        return len(self.queries)


def signed_in(user: User, *, otp: bool = False) -> Client:
    """A page client signed in as ``user`` (``otp``: with a verified second factor, for staff)."""
    client = Client()
    if otp:
        login_with_otp(client, user)
    else:
        client.force_login(user)
    return client


def load(client: Any, url: str, data: dict[str, Any] | None = None) -> Load:
    """GET ``url`` and capture its queries; anything but 200 fails the test with the body."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, data or {})
    if response.status_code != 200:
        pytest.fail(f"GET {url} answered {response.status_code}: {response.content[:600]!r}")
    return Load(response, [query["sql"] for query in captured.captured_queries])


def _shape(sql: str) -> str:
    # Ids and limits differ between the two loads; the statements' shapes should not.
    return _NUMBERS.sub("#", sql)


def assert_flat(few: Load, many: Load, what: str) -> None:
    """The same number of queries at N and 3N rows; on failure, print both lists and their diff."""
    if few.count == many.count:
        return
    diff = "\n".join(
        difflib.unified_diff(
            [_shape(q) for q in few.queries], [_shape(q) for q in many.queries], "N", "3N", lineterm=""
        )
    )
    listing = "\n".join(f"  {i:3} {q[:300]}" for i, q in enumerate(many.queries, 1))
    pytest.fail(
        f"{what}: {few.count} queries with {N} rows, {many.count} with {3 * N} (an N+1).\n"
        f"Diff of the statements:\n{diff}\n\nQueries at 3N:\n{listing}"
    )


def measure(
    fetch: Callable[[], Load], seed: Callable[[int], object], what: str, *, warm: bool = True
) -> tuple[Load, Load]:
    """Seed N rows and load; seed 2N more and load; assert the query counts are equal.

    ``seed(k)`` adds ``k`` more rows of what the page lists. A first load warms
    per-process caches (content types, built-in bases) so they do not count.
    """
    seed(N)
    if warm:
        fetch()
    few = fetch()
    seed(2 * N)
    many = fetch()
    assert_flat(few, many, what)
    return few, many


def measure_page(
    client: Any,
    url: str,
    seed: Callable[[int], object],
    what: str,
    *,
    rows: int = 3 * N,
    context_key: str = "page",
) -> tuple[Load, Load]:
    """``measure`` an HTML list, then ``assert_page_bounded`` its 3N load (``rows`` rows in all)."""
    few, many = measure(lambda: load(client, url), seed, what)
    assert_page_bounded(many, rows=rows, context_key=context_key)
    return few, many


def measure_api(
    client: Any, url: str, seed: Callable[[int], object], what: str, *, rows: int = 3 * N
) -> tuple[Load, Load]:
    """``measure`` a DRF list at ``?page_size=PAGE``, then ``assert_api_bounded`` its 3N load."""
    few, many = measure(lambda: load(client, url, {"page_size": PAGE}), seed, what)
    assert_api_bounded(many, rows=rows)
    return few, many


def assert_page_bounded(loaded: Load, *, rows: int, context_key: str = "page") -> None:
    """An HTML list: the page object holds ``PAGE`` of ``rows`` rows and the page links to page 2."""
    context = loaded.response.context
    assert context is not None, "the page was not rendered from a template"
    page = context[context_key]
    assert page.paginator.per_page == PAGE
    assert page.paginator.count == rows
    assert len(page.object_list) == PAGE
    assert page.has_next()
    assert "page=2" in loaded.response.content.decode()


def next_link(client: Any, url: str, data: dict[str, Any]) -> str:
    """GET a list page with ``data``; the ``href`` of its ``rel="next"`` link, unescaped."""
    body = load(client, url, data).response.content.decode()
    found = _NEXT_LINK.search(body)
    assert found, f"no next link on {url}"
    return html.unescape(found[1])


def assert_api_bounded(loaded: Load, *, rows: int) -> None:
    """A DRF list: ``?page_size=PAGE`` gives ``PAGE`` of ``rows`` results and a ``next`` link."""
    body = loaded.response.json()
    assert body["count"] == rows, body
    assert len(body["results"]) == PAGE
    assert body["next"] and "page=2" in body["next"]


def sealed_version(owner: Any, name: str) -> Any:
    """A sealed dataset version written as rows (no records): enough for lists that show counts."""
    from django.utils import timezone
    from django.utils.text import slugify

    from custody.models import Dataset, DatasetVersion, VersionState

    dataset = Dataset.objects.create(owner=owner, name=name, slug=slugify(name)[:64])
    return DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        state=VersionState.SEALED,
        merkle_root="ab" * 32,
        sealed_at=timezone.now(),
        records=10,
        tokens=1000,
    )


def add_sealed_versions(k: int) -> None:
    """``k`` sealed versions, each of its own owner organisation (lists of keys name the owner)."""
    from tests.factories import OrganisationFactory

    for _ in range(k):
        n = serial()
        sealed_version(OrganisationFactory(name=f"Owner {n}"), f"Keyed {n}")


def add_licenses(provider: Organisation, licensee: Organisation, k: int, *, max_jobs: int = 1) -> list[Grant]:
    """``k`` license grants to ``licensee``, each on its own sealed version of ``provider``."""
    from tests.grants import grant_for_test

    return [
        grant_for_test(sealed_version(provider, f"Licensed {serial()}"), licensee, max_jobs=max_jobs)
        for _ in range(k)
    ]


def add_jobs(trainer: Organisation, provider: Organisation, k: int, *, events: int = 0) -> list[TrainingJob]:
    """``k`` training jobs of ``trainer``, each under its own license, with ``events`` events each."""
    from training.models import BaseModel, JobEvent, TrainingJob

    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    jobs = [
        TrainingJob.objects.create(organisation=trainer, grant=grant, template="causal_lm", base=tiny)
        for grant in add_licenses(provider, trainer, k, max_jobs=5)
    ]
    JobEvent.objects.bulk_create(
        JobEvent(job=job, kind="queued", detail=f"event {i}") for job in jobs for i in range(events)
    )
    return jobs
