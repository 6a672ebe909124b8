"""Rate limit for plug-in inference (issue 16, "rate limits per token"): the inference POSTs have
their own scope (``inference``, SEALROOM_THROTTLE_INFERENCE), lower than the general per-token
rate; past it a call answers 429 problem+json with Retry-After and a detail that names the limit,
and nothing is queued. Polling a call, other endpoints and other tokens are not counted."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.conf import settings as django_settings

from common.api.throttling import InferenceRateThrottle, TokenRateThrottle
from common.models import WorkItem
from tests.common.test_problems import assert_problem
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.test_models_api import dan, dyna, licensed, model  # noqa: F401
from training.models import InferenceCall

pytestmark = pytest.mark.django_db


def _rate_per_minute(rate: str) -> float:
    count, period = rate.split("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
    return int(count) * 60 / seconds


def _generate(licensed: dict[str, Any], client: Any = None) -> Any:  # noqa: F811
    return (client or licensed["client"]).post(
        f"/api/v1/models/{licensed['model'].job_ref}/generate",
        {"prompts": ["hello there"], "max_new_tokens": 4},
        format="json",
    )


def test_the_inference_scope_is_configured_below_the_general_token_rate():
    rates = cast(dict[str, str], django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    assert "inference" in rates
    assert _rate_per_minute(rates["inference"]) < _rate_per_minute(rates["token"])


def test_past_the_inference_rate_a_call_is_429_naming_the_limit(licensed, monkeypatch):  # noqa: F811
    monkeypatch.setattr(InferenceRateThrottle, "THROTTLE_RATES", {"inference": "3/min", "token": "600/min"})
    # Positive control: up to the limit, calls are accepted and queued.
    assert [_generate(licensed).status_code for _ in range(3)] == [202, 202, 202]
    response = _generate(licensed)
    body = assert_problem(response, 429, "rate_limited")
    assert "3/min" in body["detail"] and "SEALROOM_THROTTLE_INFERENCE" in body["detail"]
    assert int(response["Retry-After"]) >= 1
    # The refused call stored nothing.
    assert InferenceCall.objects.count() == 3
    assert WorkItem.objects.filter(queue="serving").count() == 3


def test_polls_and_other_endpoints_are_not_counted_by_the_inference_rate(
    licensed,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setattr(InferenceRateThrottle, "THROTTLE_RATES", {"inference": "1/min", "token": "600/min"})
    first = _generate(licensed)
    assert first.status_code == 202, first.content
    for _ in range(3):
        polled = licensed["client"].get(f"/api/v1/models/calls/{first.json()['id']}")
        assert polled.status_code == 200
        assert licensed["client"].get("/api/v1/me").status_code == 200
    assert_problem(_generate(licensed), 429, "rate_limited")


def test_each_token_has_its_own_inference_budget(licensed, dan, dyna, token_for, monkeypatch):  # noqa: F811
    monkeypatch.setattr(InferenceRateThrottle, "THROTTLE_RATES", {"inference": "1/min", "token": "600/min"})
    assert _generate(licensed).status_code == 202
    assert_problem(_generate(licensed), 429, "rate_limited")
    other = token_for(dan, dyna, ["read", "train"])
    assert _generate(licensed, other).status_code == 202


def test_the_general_token_rate_still_applies_with_its_own_message(
    licensed,  # noqa: F811
    dan,  # noqa: F811
    dyna,  # noqa: F811
    token_for,
    monkeypatch,
):
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "2/min"})
    monkeypatch.setattr(InferenceRateThrottle, "THROTTLE_RATES", {"inference": "100/min", "token": "2/min"})
    fresh = token_for(dan, dyna, ["read", "train"])
    assert [_generate(licensed, fresh).status_code for _ in range(2)] == [202, 202]
    body = assert_problem(_generate(licensed, fresh), 429, "rate_limited")
    assert "SEALROOM_THROTTLE_INFERENCE" not in body["detail"]
