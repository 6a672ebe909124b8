"""Demo data for custody: nothing yet (later issues add their step here)."""

from __future__ import annotations

from django.core.management.base import OutputWrapper


def seed(stdout: OutputWrapper) -> None:
    """Create custody's demo data that does not exist yet (idempotent)."""
    stdout.write("  nothing to seed yet")
