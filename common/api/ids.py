"""The API's public id field: shown and accepted instead of integer keys (``common/public_ids.py``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from common import public_ids


class PublicIdField(serializers.CharField):
    """An object's public id (``ds_0123456789abcdef``; see ``common/public_ids.py``).

    Out: the object's ``public_id`` (``source`` names it, e.g. ``"version.public_id"``).
    In: a public id of this kind, resolved to the row's integer key (0 when no row
    has it, so the caller's selector answers "not found" as it does for another
    organisation's object); anything else, an integer id included, is refused
    with a message that shows what a valid id looks like.
    """

    def __init__(self, *, prefix: str, **kwargs: Any) -> None:
        if prefix not in public_ids.PREFIXES:
            raise ValueError(f"unknown public id prefix {prefix!r}")
        self.prefix = prefix
        kwargs.setdefault("help_text", f"Public id, like '{public_ids.example(prefix)}'")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:  # type: ignore[override]
        return public_ids.pk_for(self.prefix, self.checked(data))

    def checked(self, data: Any) -> str:
        """``data`` when it is a public id of this kind. :raises ValidationError: it is not."""
        if not public_ids.is_public_id(data, self.prefix):
            raise serializers.ValidationError(
                f"Expected a public id like '{public_ids.example(self.prefix)}' "
                f"('{self.prefix}_' and 16 lowercase hex digits); integer ids are not accepted.",
                code="invalid_public_id",
            )
        return str(data)


class _PublicIdShapeField(PublicIdField):
    """A list's item: checked for shape only; the list resolves all of them in one query."""

    def to_internal_value(self, data: Any) -> str:  # type: ignore[override]
        return self.checked(data)


class PublicIdListField(serializers.ListField):
    """A list of public ids of one kind, resolved to integer keys in order (0 for an unknown id).

    A malformed item is refused with its index (``/finding_ids/3``). Which rows the
    caller may name is the service's to check (one version's findings, one
    organisation's notifications): a key of another organisation's row fails that
    check exactly as the 0 of an unknown id does.
    """

    def __init__(self, *, prefix: str, **kwargs: Any) -> None:
        self.prefix = prefix
        kwargs["child"] = _PublicIdShapeField(prefix=prefix)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[int]:
        return public_ids.pks_for(self.prefix, super().to_internal_value(data))


class PublicIdFieldSchema(OpenApiSerializerFieldExtension):
    """OpenAPI: a public id is a string with its kind's pattern and an example."""

    target_class = "common.api.ids.PublicIdField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        prefix = self.target.prefix
        schema: dict[str, Any] = {
            "type": "string",
            "pattern": f"^{public_ids.pattern(prefix)}$",
            "example": public_ids.example(prefix),
        }
        if self.target.help_text:
            schema["description"] = str(self.target.help_text)
        if self.target.allow_null:
            schema["nullable"] = True
        return schema
