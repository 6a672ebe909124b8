"""Test-only: issue a grant without an order (DESIGN.md: the helper lives in tests/)."""

from __future__ import annotations

import uuid
from typing import Any

from common.models import Organisation
from custody import services
from custody.models import DatasetVersion, Grant


def grant_for_test(version: DatasetVersion, licensee: Organisation, **terms: Any) -> Grant:
    """A license grant on a sealed version, as a paid order would issue it."""
    return services.grant_issue(
        version=version, licensee_org=licensee, terms=terms, external_ref=f"test-{uuid.uuid4().hex}"
    )
