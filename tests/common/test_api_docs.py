"""The API docs guide: per operation a summary, a description of its own, a journey tag, and a
request-body example; tags in journey order; a getting-started section at the top.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from common.api.schema import ProblemAutoSchema
from common.api.schema_docs import OPERATIONS, TAG_NAMES, operation_key
from common.api.views import SealroomListApi

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def generated() -> tuple[dict[str, Any], dict[tuple[str, str], type]]:
    """The schema, and the view class behind each (path, method)."""
    generator = SchemaGenerator()
    schema = generator.get_schema(request=None, public=True)
    # drf-spectacular's endpoints are (path, path_regex, method, callback); its stubs say three.
    endpoints: list[tuple[str, str, str, Any]] = list(generator.endpoints or [])  # type: ignore[arg-type]
    views = {(path, method.lower()): callback.cls for path, _regex, method, callback in endpoints}
    return schema, views


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def inherited_docstrings(view: type) -> list[str]:
    """Docstrings of every class in the view's MRO but the view itself (DRF's and Django's too)."""
    found = []
    for cls in view.__mro__[1:]:
        doc = cls.__dict__.get("__doc__")
        if doc and doc.strip():
            found.append(inspect.cleandoc(doc))
    return found


def test_the_schema_has_operations(generated):
    schema, views = generated
    assert len(operations(schema)) >= 90
    assert all((path, method) in views for path, method, _operation in operations(schema))


def test_no_description_is_empty_or_a_base_class_docstring(generated):
    schema, views = generated
    leaks = []
    for path, method, operation in operations(schema):
        view = views[(path, method)]
        description = (operation.get("description") or "").strip()
        if not description:
            leaks.append(f"{method.upper()} {path}: no description")
            continue
        for doc in inherited_docstrings(view):
            if (
                description == doc
                or description.startswith(doc)
                or description.startswith(doc.splitlines()[0])
            ):
                leaks.append(
                    f"{method.upper()} {path}: the docstring of a base class ({doc.splitlines()[0]!r})"
                )
    assert not leaks, "\n".join(leaks)


def test_every_operation_has_a_summary_and_journey_tags(generated):
    schema, _views = generated
    problems = []
    for path, method, operation in operations(schema):
        if not (operation.get("summary") or "").strip():
            problems.append(f"{method.upper()} {path}: no summary")
        tags = operation.get("tags") or []
        if not tags or any(tag not in TAG_NAMES for tag in tags):
            problems.append(f"{method.upper()} {path}: tags {tags} not from {TAG_NAMES}")
    assert not problems, "\n".join(problems)


def test_every_request_body_has_an_example(generated):
    schema, _views = generated
    missing = [
        f"{method.upper()} {path} ({media_type})"
        for path, method, operation in operations(schema)
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items()
        if not content.get("examples")
    ]
    assert not missing, "\n".join(missing)


def test_every_catalogue_entry_names_an_operation_that_exists(generated):
    _schema, views = generated
    keys = {f"{cls.__module__}.{cls.__qualname__}.{method.upper()}" for (_path, method), cls in views.items()}
    stale = sorted(set(OPERATIONS) - keys)
    assert not stale, f"entries for operations that no longer exist: {stale}"


def test_tags_come_in_journey_order_with_descriptions(generated):
    schema, _views = generated
    assert [tag["name"] for tag in schema["tags"]] == TAG_NAMES
    assert TAG_NAMES[:6] == [
        "Getting started",
        "Catalog",
        "Quotes & orders",
        "Licenses",
        "Training jobs",
        "Artifacts & receipts",
    ]
    assert all(tag["description"] for tag in schema["tags"])


def test_the_description_opens_with_a_getting_started_guide(generated):
    schema, _views = generated
    text = schema["info"]["description"]
    steps = [
        "/me",
        "/catalog/listings",
        "/quote",
        "Idempotency-Key",
        "/orders",
        "/training/jobs",
        "/metrics",
        "/artifact",
        "/receipt",
        "/audit/keys",
        "sealroom receipts verify",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions), "the guide's calls are out of order"
    assert "docs/sdk.md" in text
    assert text.count("curl ") >= 8


def test_the_docs_page_serves_the_schema(client):
    assert client.get("/api/v1/docs/").status_code == 200
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response.json()["info"]["description"].startswith("Custody and trading")


class TestAutoSchemaNeverInherits:
    """Without an entry, a view gets its own docstring or nothing: never its base's."""

    class UndocumentedListApi(SealroomListApi):
        serializer_class = serializers.Serializer

    class DocumentedListApi(SealroomListApi):
        """What this list is, for its callers."""

        serializer_class = serializers.Serializer

    def _schema(self, view_class: type) -> ProblemAutoSchema:
        view = view_class()
        view.request = APIRequestFactory().get("/")
        schema = ProblemAutoSchema()
        schema.view = view
        schema.method = "GET"
        return schema

    def test_an_undocumented_view_has_no_description_not_its_bases(self):
        assert inspect.cleandoc(SealroomListApi.__doc__ or "")  # the base has one to leak
        assert self._schema(self.UndocumentedListApi).get_description() == ""

    def test_a_view_with_its_own_docstring_uses_it(self):
        described = self._schema(self.DocumentedListApi).get_description()
        assert described == "What this list is, for its callers."

    def test_a_catalogue_entry_wins(self):
        from common.api.views import MeApi

        schema = self._schema(MeApi)
        assert schema.get_description() == OPERATIONS[operation_key(MeApi(), "GET")].description
        assert schema.get_tags() == ["Getting started"]
