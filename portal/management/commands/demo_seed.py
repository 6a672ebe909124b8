"""``manage.py demo_seed``: demo organisations, people and data, one step per app, idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, OutputWrapper

import common.demo
import custody.demo
import marketplace.demo
import marketplace.demo_orders
import portal.demo
import training.demo

# In dependency order: each app's step may use what the steps before it made.
STEPS: list[tuple[str, Callable[[OutputWrapper], None]]] = [
    ("common", common.demo.seed),
    ("custody", custody.demo.seed),
    ("marketplace", marketplace.demo.seed),
    ("marketplace orders", marketplace.demo_orders.seed),
    ("training", training.demo.seed),
    ("portal", portal.demo.seed),
]


class Command(BaseCommand):
    help = "Seed the demo organisations, people and data (safe to run again: it changes nothing then)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--quiet-logins", action="store_true", help="Do not print the demo logins.")

    def handle(self, *args: Any, **options: Any) -> None:
        for name, seed in STEPS:
            self.stdout.write(f"demo seed: {name}")
            seed(self.stdout)
        if not options["quiet_logins"]:
            self.stdout.write("")
            for line in common.demo.demo_logins():
                self.stdout.write(line)
