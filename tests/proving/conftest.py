"""Proving-ground fixtures: a provider's dataset and an open version (as in tests/custody)."""

from __future__ import annotations

import pytest

from custody import services
from custody.models import Dataset, DatasetVersion


@pytest.fixture
def dataset(alice, acme) -> Dataset:
    return services.dataset_create(actor=alice, organisation=acme, name="Proving ground")


@pytest.fixture
def version(alice, dataset) -> DatasetVersion:
    return services.version_create(actor=alice, dataset=dataset)
