"""Opaque public ids: what the API and the portal's URLs show instead of integer keys.

Integer primary keys count rows: two sign-ups a minute apart that get
organisation 49 and 50 tell any caller how many organisations the platform
has. So every object a caller can name carries a second, random key,
``<prefix>_<16 hex digits>`` (64 bits from ``secrets``, as orders' and
licenses' ``ref`` are), and only that key leaves the platform. Foreign keys,
audit rows, tasks and blob names keep the integer key inside.

- ``PREFIXES``: one prefix per kind of object (the registry; a prefix says
  which kind an id names, so a version id pasted where a listing id belongs is
  refused by its shape).
- ``PublicIdField``: the model field (unique, filled at construction).
- URL converters ``<dsv:version_id>`` and the like (registered on import):
  a well-formed id resolves to the row's integer key, an unknown one to 0, so
  the view's selector answers "not found" exactly as it does for another
  organisation's object; a malformed one (an old integer) matches no route.
- ``pk_for``: the same resolution for request bodies (``common.api.ids``);
  ``pks_for`` for a list of ids in one query per 500.
"""

from __future__ import annotations

import argparse
import re
import secrets
from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.db import models
from django.urls import register_converter

# Prefix -> the model it names ("app_label.Model").
PREFIXES: dict[str, str] = {
    "org": "common.Organisation",
    "tok": "common.ApiToken",
    "whk": "common.WebhookEndpoint",
    "ds": "custody.Dataset",
    "dsv": "custody.DatasetVersion",
    "lst": "marketplace.Listing",
    "ofr": "marketplace.Offer",
    "base": "training.BaseModel",
    "job": "training.TrainingJob",
    # Objects named under another one (issue 13, item 9, finished): their integer keys
    # still counted rows platform-wide.
    "usr": "common.User",
    "mem": "common.Membership",
    "inv": "common.Invitation",
    "ntf": "common.Notification",
    "dlv": "common.WebhookDelivery",
    "ctb": "custody.Contribution",
    "fnd": "custody.Finding",
    "alc": "marketplace.RightsAllocation",
    "trm": "marketplace.OfferTerms",
    "stl": "marketplace.Settlement",
    # A license's custody grant (what jobs, receipts and the access log name).
    "gnt": "custody.Grant",
    # A contribution's withdrawal from a sealed version (issue 15 item 4).
    "wdr": "custody.ContributionWithdrawal",
    # A plug-in inference call on a custody model (issue 16).
    "inf": "training.InferenceCall",
}

_HEX_DIGITS = 16  # 64 bits
# Ids per query when resolving a list (SQLite allows 999 parameters in a statement before 3.32).
_LOOKUP_BATCH = 500
_SHAPE = re.compile(r"(?P<prefix>[a-z]+)_[0-9a-f]{16}")


def new_public_id(prefix: str) -> str:
    """A fresh random public id for ``prefix`` (one of ``PREFIXES``)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown public id prefix {prefix!r}")
    return f"{prefix}_{secrets.token_hex(_HEX_DIGITS // 2)}"


def example(prefix: str) -> str:
    """What an id of this kind looks like, for error messages and the API docs."""
    return f"{prefix}_{'0123456789abcdef'[:_HEX_DIGITS]}"


def is_public_id(value: object, prefix: str) -> bool:
    """Whether ``value`` has the shape of a ``prefix`` public id (it may still name no row)."""
    if not isinstance(value, str):
        return False
    match = _SHAPE.fullmatch(value)
    return match is not None and match["prefix"] == prefix


def pattern(prefix: str) -> str:
    """The regular expression (without anchors) that ids of this kind match."""
    return f"{prefix}_[0-9a-f]{{{_HEX_DIGITS}}}"


def pk_for(prefix: str, value: str) -> int:
    """The integer key of the row ``value`` names, or 0 (no row has it) when none does.

    :raises ValueError: ``value`` is not a ``prefix`` public id.
    """
    if not is_public_id(value, prefix):
        raise ValueError(f"not a {prefix} public id")
    model = apps.get_model(PREFIXES[prefix])
    pk: int | None = model._default_manager.filter(public_id=value).values_list("pk", flat=True).first()
    return pk or 0


def pks_for(prefix: str, values: Sequence[str], *, within: models.QuerySet[Any] | None = None) -> list[int]:
    """``pk_for`` for many ids at once: one integer key per value, in order (0 where none).

    ``within`` narrows the rows that may match (e.g. one version's findings), so an id
    of another organisation's row resolves to 0 just as an unknown one does.

    :raises ValueError: a value is not a ``prefix`` public id.
    """
    if any(not is_public_id(value, prefix) for value in values):
        raise ValueError(f"not a {prefix} public id")
    rows = within if within is not None else apps.get_model(PREFIXES[prefix])._default_manager.all()
    found: dict[str, int] = {}
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), _LOOKUP_BATCH):
        chunk = unique[start : start + _LOOKUP_BATCH]
        found.update(rows.filter(public_id__in=chunk).values_list("public_id", "pk"))
    return [found.get(value, 0) for value in values]


class PublicIdField(models.CharField):
    """A model's public id: unique, not editable, generated when the row is built."""

    def __init__(self, *args: Any, prefix: str, **kwargs: Any) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"unknown public id prefix {prefix!r}")
        self.prefix = prefix
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("unique", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        for key, default in (("max_length", 32), ("unique", True), ("editable", False)):
            if kwargs.get(key) == default:
                del kwargs[key]
        return name, path, args, kwargs

    def has_default(self) -> bool:
        return True

    def get_default(self) -> str:
        return new_public_id(self.prefix)


class PublicIdConverter:
    """URL converter base: ``to_python`` gives the row's integer key (0 for an unknown id)."""

    prefix = ""
    regex = ""

    def to_python(self, value: str) -> int:
        return pk_for(self.prefix, value)

    def to_url(self, value: object) -> str:
        # Only a public id reverses: an integer key passed by mistake fails loudly (NoReverseMatch).
        if not is_public_id(value, self.prefix):
            raise ValueError(f"expected a {self.prefix} public id, got {value!r}")
        return str(value)


def _register_converters() -> None:
    for prefix in PREFIXES:
        converter = type(
            f"{prefix.title()}IdConverter", (PublicIdConverter,), {"prefix": prefix, "regex": pattern(prefix)}
        )
        register_converter(converter, prefix)


_register_converters()


def backfill(app_label: str, model_name: str, prefix: str) -> Any:
    """A ``RunPython`` function that gives every row of the model without a public id a fresh one."""

    def run(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        rows = list(model._default_manager.filter(public_id__isnull=True).only("pk"))
        for row in rows:
            row.public_id = new_public_id(prefix)
        model._default_manager.bulk_update(rows, ["public_id"], batch_size=500)

    return run


def cli_argument(prefix: str) -> Any:
    """An ``argparse`` type for management commands: a ``prefix`` public id, else a clear usage error."""

    def parse(raw: str) -> str:
        if not is_public_id(raw, prefix):
            raise argparse.ArgumentTypeError(
                f"expected a public id like {example(prefix)} ('{prefix}_' and 16 lowercase hex digits), "
                f"got {raw!r}"
            )
        return raw

    parse.__name__ = f"{prefix} public id"
    return parse
