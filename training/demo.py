"""Demo data for training: nothing yet (later issues add their step here)."""

from __future__ import annotations

from django.core.management.base import OutputWrapper


def seed(stdout: OutputWrapper) -> None:
    """Create training's demo data that does not exist yet (idempotent)."""
    stdout.write("  nothing to seed yet")
