"""Fuzz the REST API from its own OpenAPI schema with schemathesis, in process, as two organisations.

Every operation in ``/api/v1/schema/`` is called with generated data, valid
(positive) and invalid (negative), through the Django WSGI application against
the test database, with API tokens of a provider (Acme, all scopes) and a
trainer (Bolt, all scopes) in turn. Each response must:

- never be a server error (5xx);
- use a status the operation declares, with its declared content type, and a
  body that matches its declared schema (problem+json for errors);
- reject data that violates the schema (negative cases get a 4xx).

Quick: a few examples per operation and mode; ``proof``: hundreds. The
figures (requests, server errors, failures per operation) go to
``var/test-output/proving/fuzz-<profile>.json`` for ``chaos/assurance.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.test import Client
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable

from custody import services
from tests.conftest import make_token
from tests.proving.test_hostile_uploads import FIGURES

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import AcceptedNegativeData, Failure, FailureGroup  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

SCHEMA_PATH = "/api/v1/schema/?format=json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PROFILES = {"quick": 3, "proof": 60}  # examples per operation, mode and organisation (x4 per operation)


@pytest.fixture
def wsgi_schema(settings, db) -> Iterator[Any]:
    """The schema, loaded from the running WSGI app, whose calls go to that app in process."""
    from config.wsgi import application

    settings.ALLOWED_HOSTS = ["*"]
    # As django.test.Client does: a request must not close the test's connection
    # (the whole test runs inside one transaction that is rolled back).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi(SCHEMA_PATH, application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@dataclass(frozen=True)
class Identity:
    token: str
    path_ids: dict[str, int]  # real objects' ids by path parameter name


@pytest.fixture
def org_tokens(alice, acme, bob, bolt, dataset, version) -> dict[str, Identity]:
    """Acme's and Bolt's tokens (all scopes), each with ids of real objects.

    The objects are Acme's: Bolt gets them too, so its calls probe another
    organisation's objects (which must answer 404, never 5xx).
    """
    scopes = ["read", "provide", "order", "train", "admin"]
    contribution = services.contribution_start(
        actor=alice, organisation=acme, version=version, filename="fuzz.jsonl"
    )
    objects = {
        "dataset_id": dataset.public_id,
        "version_id": version.public_id,
        "contribution_id": contribution.public_id,
    }
    return {
        "acme": Identity(make_token(alice, acme, scopes), {"org_id": acme.public_id, **objects}),
        "bolt": Identity(make_token(bob, bolt, scopes), {"org_id": bolt.public_id, **objects}),
    }


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        # Invalid data answered 2xx for a known reason: DRF ignores query
        # parameters it cannot use (a page_size that is not a number falls back
        # to the default) and turns numbers into strings for string fields.
        self.lenient: Counter[str] = Counter()


# A string field given a number or a boolean: DRF's CharField converts it to text.
_COERCED = re.compile(r"violates `type` .*\(was string, became (integer|number|boolean)\)")


# One part or several of one location: "parameter `a` in query", "parameters `a`, `b` in query".
_VIOLATION = re.compile(r"^- violates ")
# Schemathesis also writes a body part inline: "in body - violates ...".
_PART = re.compile(
    r"^(?:- )?(?:(header|query|body|path|cookie):|parameters? `[^`]*`(?:, `[^`]*`)* in (\w+)|in (\w+))(.*)$"
)


def _leniency(message: str) -> str | None:
    """Which known leniency explains accepted invalid data, or None when none does.

    The invalid parts follow "Invalid component:", one a line (``- body:
    violates ...``) or inline (``parameter `x` in query - violates ...``);
    several parameters of one location share a line (``parameters `a`, `b`
    in query``) followed by one ``- violates ...`` line each. The
    Authorization header is ours (the generated one is replaced), so a
    header part is not what was accepted.
    """
    text = message.partition("Invalid component:")[2]
    kinds = set()
    location = None
    for line in (x.strip() for x in text.splitlines() if x.strip()):
        match = _PART.match(line)
        if match is not None:
            location, violation = match.group(1) or match.group(2) or match.group(3), match.group(4)
        elif location is not None and _VIOLATION.match(line):
            violation = line  # one more violation of the location above
        else:
            return None
        if location == "header":
            continue
        if location == "query":
            kinds.add("query ignored")
        elif location == "body" and _COERCED.search(violation):
            kinds.add("number coerced to string")
        elif location == "body" and not violation.strip():
            continue  # "- body:" alone: its violations follow
        else:
            return None
    return " + ".join(sorted(kinds)) or None


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    org: str,
    token: str,
    examples: int,
    tally: Tally,
    path_ids: dict[str, int] | None = None,
) -> list[str]:
    """Run one operation's generated cases as one organisation; return the check failures.

    With ``path_ids`` the path parameters are those real objects' ids, so the
    generated bodies and queries reach the code behind the 404.
    """
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
    headers = {"Authorization": f"Bearer {token}"}
    seen: list[str] = []
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_ids)

    @given(case=strategy)
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        cache.clear()  # rate limits would turn most of a long run into 429s
        # A savepoint per request, so one database error (a 500 the checks report)
        # cannot abort the test's transaction for every request after it on Postgres.
        try:
            with transaction.atomic():
                response = case.call(headers=headers)
        except DatabaseError:
            pass  # releasing the savepoint failed: it was rolled back; the response is the 500
        tally.requests += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Failure, FailureGroup) as exc:
            failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            for failure in failures:
                if isinstance(failure, AcceptedNegativeData):
                    kind = _leniency(failure.message)
                    if kind:
                        tally.lenient[f"{kind}: {operation.method.upper()} {operation.path}"] += 1
                        continue
                message = " | ".join(line.strip() for line in failure.message.splitlines() if line.strip())
                seen.append(f"{mode.value}/{org}: {response.status_code}: {failure.title}: {message[:400]}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (an operation without parameters or body).
        assert mode is GenerationMode.NEGATIVE, operation
    return sorted(set(seen))


def fuzz(schema: Any, identities: dict[str, Identity], examples: int) -> dict[str, Any]:
    tally = Tally()
    failures: dict[str, list[str]] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"
        names = re.findall(r"{(\w+)}", operation.path)
        for org, identity in identities.items():
            runs: list[tuple[GenerationMode, dict[str, int] | None]] = [
                (GenerationMode.POSITIVE, None),
                (GenerationMode.NEGATIVE, None),
            ]
            if names and set(names) <= set(identity.path_ids):
                runs.append((GenerationMode.POSITIVE, {n: identity.path_ids[n] for n in names}))
            for mode, path_ids in runs:
                seen = fuzz_operation(operation, mode, org, identity.token, examples, tally, path_ids)
                if seen:
                    failures.setdefault(label, []).extend(seen[:3])
    return {
        "operations": operations,
        "requests": tally.requests,
        "server_errors": sum(n for s, n in tally.statuses.items() if s >= 500),
        "statuses": {str(s): n for s, n in sorted(tally.statuses.items())},
        "accepted_invalid_known": dict(tally.lenient),
        "failures": failures,
    }


def run_profile(profile: str, schema: Any, tokens: dict[str, Identity]) -> None:
    started = time.monotonic()
    figures = fuzz(schema, tokens, PROFILES[profile])
    figures.update(profile=profile, database=connection.vendor, seconds=round(time.monotonic() - started, 1))
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"fuzz-{profile}.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    assert figures["operations"] > 0
    assert figures["requests"] >= figures["operations"] * len(tokens)
    assert not figures["failures"], json.dumps(figures["failures"], indent=1)


def test_the_api_survives_quick_fuzzing_as_two_organisations(wsgi_schema, org_tokens):
    run_profile("quick", wsgi_schema, org_tokens)


# --- hostile bodies the generators do not make: deep nesting and numbers int() would take ---------

# What int() reads as a number and a person does not (issue 13): underscores, other scripts' digits.
LAX_NUMBERS = ["3_0", "6_2", "٣", "３０", "१२"]


def _json_operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, body schema) for every operation that takes a JSON body."""
    components = schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                ref = body["schema"].get("$ref", "")
                yield method, path, components.get(ref.rsplit("/", 1)[-1], body["schema"])


def _integer_pointers(body_schema: dict[str, Any]) -> dict[str, Any]:
    """JSON pointer -> a body that puts a placeholder number there (top-level integers and integer lists)."""
    found: dict[str, Any] = {}
    for name, prop in body_schema.get("properties", {}).items():
        if prop.get("type") == "integer":
            found[f"/{name}"] = lambda lax, name=name: {name: lax}
        elif prop.get("type") == "array" and prop.get("items", {}).get("type") == "integer":
            found[f"/{name}/0"] = lambda lax, name=name: {name: [lax]}
    return found


def _hostile_client(identity: Identity) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {identity.token}")


def _url(path: str, identity: Identity) -> str:
    return re.sub(r"{(\w+)}", lambda m: str(identity.path_ids.get(m.group(1), 1)), path)


def test_every_json_operation_refuses_deep_nesting(org_tokens):
    schema = Client().get(SCHEMA_PATH).json()
    identity = org_tokens["acme"]
    client = _hostile_client(identity)
    refused_deep = []
    for method, path, _body in _json_operations(schema):
        cache.clear()
        body = "[" * 1000 + "]" * 1000  # 2 KB
        response = getattr(client, method)(_url(path, identity), body, content_type="application/json")
        assert 400 <= response.status_code < 500, f"{method} {path}: {response.status_code}"
        if response.status_code == 400:
            assert response.json()["code"] == "common.json_too_deep", f"{method} {path}"
            refused_deep.append(path)
    # Most operations get past their permission checks to the parser with Acme's all-scope token.
    print(f"{len(refused_deep)} operations refused the nesting at the parser")
    assert len(refused_deep) >= 12, refused_deep


def test_every_integer_in_a_json_body_takes_ascii_digits_only(org_tokens):
    schema = Client().get(SCHEMA_PATH).json()
    identity = org_tokens["acme"]
    client = _hostile_client(identity)
    checked: set[str] = set()
    for method, path, body_schema in _json_operations(schema):
        for pointer, make in _integer_pointers(body_schema).items():
            for lax in LAX_NUMBERS:
                cache.clear()
                response = getattr(client, method)(
                    _url(path, identity),
                    make(lax),
                    content_type="application/json",
                    HTTP_IDEMPOTENCY_KEY="lax-numbers",
                )
                where = f"{method.upper()} {path} {pointer}={lax!r}"
                assert 400 <= response.status_code < 500, f"{where}: {response.status_code}"
                problem = response.json()
                if problem["code"] == "validation_error":
                    assert pointer in {e["pointer"] for e in problem["errors"]}, (
                        f"{where} was taken as a number"
                    )
                    checked.add(f"{method} {path} {pointer}")
    # Orders, payouts, top-ups, tokens, notifications, contributors, findings, jobs...: each reached.
    print(f"{len(checked)} integer fields refused {len(LAX_NUMBERS)} lax spellings each")
    # Object references are public-id strings and amounts decimal strings now (their lax spellings
    # are refused in tests/common/test_public_ids*.py and test_money.py), lists of ids included
    # (findings, notifications); two integers remain: a token's lifetime and an upload's size.
    assert len(checked) >= 2, sorted(checked)


@pytest.mark.parametrize("resource", ["members", "webhooks", "members/1"])
def test_an_organisation_id_past_64_bits_is_a_404(alice, acme, token_for, resource):
    client = token_for(alice, acme, ["read"])
    response = client.get(f"/api/v1/organisations/{2**63}/{resource}")
    assert response.status_code == 404


def test_the_report_declares_its_409(db):
    schema = Client().get("/api/v1/schema/?format=json").json()
    responses = schema["paths"]["/api/v1/versions/{version_id}/report"]["get"]["responses"]
    assert "409" in responses


@pytest.mark.proof
@pytest.mark.timeout(3600)  # about 22,000 requests: far past the suite's 300 s default
def test_the_api_survives_proof_fuzzing_as_two_organisations(wsgi_schema, org_tokens):
    run_profile("proof", wsgi_schema, org_tokens)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Invalid component: parameter `page_size` in query - violates `type`", "query ignored"),
        (
            "Invalid data should have been rejected\nInvalid component: parameters `page`, `mine` in query\n"
            "- violates `type` at /properties/page (was integer, became object)\n"
            "- violates `type` at /properties/mine (was boolean, became integer)",
            "query ignored",
        ),
        (
            "Invalid component: body:\n- violates `type` (was string, became integer)",
            "number coerced to string",
        ),
        ("Invalid component: body:\n- violates `minLength`", None),
        ("Invalid component: path: violates `type`\n- violates `type`", None),
        ("Invalid component: parameters `page`, `page_size` in query - violates `type`", "query ignored"),
        ("Invalid component: body: violates `type` (was string, became integer)", "number coerced to string"),
        ("Invalid component: body: violates `maxLength`", None),
        (
            "Invalid component: in body - violates `type` at /properties/name (was string, became integer)",
            "number coerced to string",
        ),
        ("Invalid component: in body - violates `maxLength` at /properties/name", None),
    ],
)
def test_only_known_leniencies_excuse_accepted_invalid_data(message, kind):
    assert _leniency(message) == kind
