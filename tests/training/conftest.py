"""Training fixtures: a sealed version licensed to Bolt (a trainer), jobs submitted through the service."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from custody.models import DatasetVersion, Grant
from tests.custody.conftest import dataset, drain, jsonl, sealed_version, upload, version  # noqa: F401
from tests.grants import grant_for_test
from tests.training.pooling import cora, dana  # noqa: F401  (two contributors to one version)
from training import services, tasks  # tasks: registers the training work handlers for drain()
from training.models import BaseModel, TrainingJob

TINY_HP = {"epochs": 1, "batch_size": 4, "max_seq_len": 32, "learning_rate": 0.001, "seed": 3, "log_every": 1}


@pytest.fixture
def license_terms() -> dict[str, Any]:
    return {
        "purposes": ["research"],
        "job_templates": ["causal_lm", "causal_lm_lora", "seq_classification"],
        "max_jobs": 5,
        "max_tokens": 1_000_000,
        "max_epochs": 3,
        "weights_may_leave": True,
        "gate_max_exposure": 20.0,
    }


@pytest.fixture
def grant(sealed_version: DatasetVersion, bolt, license_terms) -> Grant:  # noqa: F811
    return grant_for_test(sealed_version, bolt, **license_terms)


@pytest.fixture
def tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)


@pytest.fixture
def submit(bob, bolt, tiny) -> Callable[..., TrainingJob]:
    """``submit(grant, **overrides)`` -> a queued job (through the service)."""

    def _submit(grant: Grant, **overrides: Any) -> TrainingJob:
        fields: dict[str, Any] = {
            "template": "causal_lm",
            "base": tiny,
            "hyperparameters": dict(TINY_HP),
        }
        fields.update(overrides)
        return services.job_submit(
            actor=bob, organisation=bolt, grant=grant, request=services.JobRequest(**fields)
        )

    return _submit


def job_body(grant: Grant, base: BaseModel, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "license": grant.external_ref,
        "template": "causal_lm",
        "base": base.public_id,
        "hyperparameters": dict(TINY_HP),
    }
    body.update(overrides)
    return body


__all__ = ["TINY_HP", "drain", "job_body", "jsonl", "tasks"]


@pytest.fixture
def listener() -> Any:
    """A TCP socket on the host's 127.0.0.1 (outside any sandbox), counting the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    accepted: list[bool] = []

    def accept() -> None:
        server.settimeout(10)
        try:
            while True:
                connection, _ = server.accept()
                accepted.append(True)
                connection.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()
