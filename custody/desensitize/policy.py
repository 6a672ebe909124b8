"""Desensitization policies: which entities, how sure, which languages, and what replaces each.

Plain data, validated on construction, with no heavy imports: the web
process builds and checks policies without loading Presidio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args

from common.exceptions import FieldError, Invalid

OperatorKind = Literal["redact", "tag", "mask", "pseudonym", "surrogate"]
OPERATOR_KINDS: Final[tuple[str, ...]] = get_args(OperatorKind)
POLICY_LANGUAGES: Final[tuple[str, ...]] = ("en", "zh")
MAX_KEEP_LAST: Final = 16

# Every entity type the engine can report. Stock Presidio's English types,
# plus ours: ORGANIZATION, BANK_CARD (any issuer, Luhn), CN_RESIDENT_ID,
# CN_USCC, PASSPORT (any country, by context), LICENSE_PLATE, ID_NUMBER
# (account, tax, licence and other identifiers named by a context word) and
# PASSWORD; Chinese mobile and landline numbers are PHONE_NUMBER, Chinese
# names PERSON, @handles PERSON.
SUPPORTED_ENTITIES: Final[tuple[str, ...]] = (
    "PERSON",
    "LOCATION",
    "ORGANIZATION",
    "NRP",
    "DATE_TIME",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "URL",
    "IP_ADDRESS",
    "CREDIT_CARD",
    "BANK_CARD",
    "IBAN_CODE",
    "CRYPTO",
    "US_SSN",
    "US_ITIN",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "US_BANK_NUMBER",
    "UK_NHS",
    "MEDICAL_LICENSE",
    "MAC_ADDRESS",
    "UUID",
    "CN_RESIDENT_ID",
    "CN_USCC",
    "PASSPORT",
    "LICENSE_PLATE",
    "ID_NUMBER",
    "PASSWORD",
)
# Reported only by a policy that names them: nationalities, religious and
# political groups (NRP) identify nobody on their own, and tagging every
# "American" or "Jewish" costs more text than it protects.
OFF_BY_DEFAULT: Final[frozenset[str]] = frozenset({"NRP"})
DEFAULT_ENTITIES: Final[tuple[str, ...]] = tuple(e for e in SUPPORTED_ENTITIES if e not in OFF_BY_DEFAULT)
_POLICY_FIELDS: Final = ("name", "entities", "threshold", "languages", "operators", "default_operator")
_OPERATOR_FIELDS: Final = ("kind", "mask_char", "keep_last")


def _error(pointer: str, code: str, detail: str) -> FieldError:
    return {"pointer": pointer, "code": code, "detail": detail}


def _operator_problems(kind: Any, mask_char: Any, keep_last: Any, pointer: str) -> list[FieldError]:
    errors = []
    if kind not in OPERATOR_KINDS:
        errors.append(
            _error(f"{pointer}/kind", "invalid_choice", f"must be one of {', '.join(OPERATOR_KINDS)}")
        )
    if not isinstance(mask_char, str) or len(mask_char) != 1 or mask_char.isspace():
        errors.append(_error(f"{pointer}/mask_char", "invalid", "must be one visible character"))
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or not 0 <= keep_last <= MAX_KEEP_LAST:
        errors.append(
            _error(f"{pointer}/keep_last", "invalid", f"must be an integer from 0 to {MAX_KEEP_LAST}")
        )
    return errors


def _raise(errors: list[FieldError]) -> None:
    if errors:
        summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors)
        raise Invalid(
            f"invalid desensitization policy: {summary}", code="custody.policy_invalid", errors=errors
        )


@dataclass(frozen=True)
class OperatorSpec:
    """What replaces a detected span: ``redact`` (remove), ``tag`` (``<PERSON>``), ``mask``,
    ``pseudonym`` (keyed HMAC, stable within a version) or ``surrogate`` (a realistic fake).

    :raises Invalid: with field pointers, on an unknown kind or a bad mask setting.
    """

    kind: OperatorKind
    mask_char: str = "*"
    keep_last: int = 0

    def __post_init__(self) -> None:
        _raise(_operator_problems(self.kind, self.mask_char, self.keep_last, ""))

    @classmethod
    def from_dict(cls, data: Any, pointer: str = "") -> OperatorSpec:
        """Build an operator from its JSON form (a kind string is accepted as shorthand).

        :raises Invalid: with field pointers under ``pointer``.
        """
        if isinstance(data, str):
            data = {"kind": data}
        if not isinstance(data, Mapping):
            _raise([_error(pointer or "/", "invalid_type", "must be an object or an operator kind")])
        errors = [
            _error(f"{pointer}/{key}", "unknown_field", "is not an operator field")
            for key in data
            if key not in _OPERATOR_FIELDS
        ]
        if "kind" not in data:
            errors.append(_error(f"{pointer}/kind", "required", "is required"))
        else:
            errors.extend(
                _operator_problems(
                    data["kind"], data.get("mask_char", "*"), data.get("keep_last", 0), pointer
                )
            )
        _raise(errors)
        return cls(
            kind=data["kind"], mask_char=data.get("mask_char", "*"), keep_last=data.get("keep_last", 0)
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"kind": self.kind, "mask_char": self.mask_char, "keep_last": self.keep_last}


@dataclass(frozen=True)
class Policy:
    """A desensitization policy: entity types (``None``: all but ``OFF_BY_DEFAULT``), score threshold,
    the languages whose recognizers run, and the operator per entity type.

    :raises Invalid: with field pointers (``/operators/PERSON/kind``) when anything is wrong.
    """

    name: str = "default"
    entities: tuple[str, ...] | None = None
    threshold: float = 0.5
    languages: tuple[str, ...] = ("en", "zh")
    operators: Mapping[str, OperatorSpec] = field(default_factory=dict)
    default_operator: OperatorSpec = OperatorSpec("tag")

    def __post_init__(self) -> None:
        if self.entities is not None and not isinstance(self.entities, tuple):
            object.__setattr__(self, "entities", tuple(self.entities))
        if not isinstance(self.languages, tuple):
            object.__setattr__(self, "languages", tuple(self.languages))
        if isinstance(self.operators, Mapping):
            object.__setattr__(self, "operators", MappingProxyType(dict(self.operators)))
        _raise(self.problems())

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:
        # The operators mapping is read-only (a mappingproxy), which pickle
        # cannot copy: travel as the JSON form.
        return (Policy.from_dict, (self.to_dict(),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self.to_dict() == other.to_dict()

    def problems(self) -> list[FieldError]:
        """Return everything wrong with the policy, each with its JSON pointer."""
        errors: list[FieldError] = []
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 64:
            errors.append(_error("/name", "invalid", "must be a non-empty string of at most 64 characters"))
        if self.entities is not None:
            if not self.entities:
                errors.append(
                    _error("/entities", "empty", "must name at least one entity type, or be null for all")
                )
            for index, entity in enumerate(self.entities):
                if entity not in SUPPORTED_ENTITIES:
                    errors.append(
                        _error(f"/entities/{index}", "unknown_entity", f"{entity!r} is not supported")
                    )
        threshold = self.threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0.0 <= threshold <= 1.0
        ) or math.isnan(threshold):
            errors.append(_error("/threshold", "invalid", "must be a number from 0 to 1"))
        if not self.languages:
            errors.append(_error("/languages", "empty", "must name at least one language"))
        for index, language in enumerate(self.languages):
            if language not in POLICY_LANGUAGES:
                errors.append(
                    _error(
                        f"/languages/{index}",
                        "invalid_choice",
                        f"must be one of {', '.join(POLICY_LANGUAGES)}",
                    )
                )
        if not isinstance(self.operators, Mapping):
            errors.append(_error("/operators", "invalid_type", "must map entity types to operators"))
        else:
            for entity, spec in self.operators.items():
                if entity not in SUPPORTED_ENTITIES:
                    errors.append(
                        _error(f"/operators/{entity}", "unknown_entity", f"{entity!r} is not supported")
                    )
                elif not isinstance(spec, OperatorSpec):
                    errors.append(_error(f"/operators/{entity}", "invalid_type", "must be an operator"))
        if not isinstance(self.default_operator, OperatorSpec):
            errors.append(_error("/default_operator", "invalid_type", "must be an operator"))
        return errors

    @property
    def entity_set(self) -> frozenset[str]:
        """Return the entity types this policy reports (``None``: every type but ``OFF_BY_DEFAULT``)."""
        return frozenset(DEFAULT_ENTITIES if self.entities is None else self.entities)

    def operator_for(self, entity_type: str) -> OperatorSpec:
        """Return the operator that replaces this entity type."""
        return self.operators.get(entity_type, self.default_operator)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        """Build a policy from its JSON form (as ``to_dict`` writes it; omitted fields take defaults).

        :raises Invalid: with a JSON pointer for each problem found.
        """
        if not isinstance(data, Mapping):
            _raise([_error("/", "invalid_type", "a policy must be a JSON object")])
        errors = [
            _error(f"/{k}", "unknown_field", "is not a policy field") for k in data if k not in _POLICY_FIELDS
        ]
        entities = data.get("entities")
        if entities is not None and not _is_str_list(entities):
            errors.append(_error("/entities", "invalid_type", "must be a list of entity types or null"))
        languages = data.get("languages", list(POLICY_LANGUAGES))
        if not _is_str_list(languages):
            errors.append(_error("/languages", "invalid_type", "must be a list of language codes"))
        operators: dict[str, OperatorSpec] = {}
        raw_operators = data.get("operators", {})
        if not isinstance(raw_operators, Mapping):
            errors.append(_error("/operators", "invalid_type", "must map entity types to operators"))
        else:
            for entity, raw in raw_operators.items():
                try:
                    operators[str(entity)] = OperatorSpec.from_dict(raw, f"/operators/{entity}")
                except Invalid as exc:
                    errors.extend(exc.errors)
        default_operator = OperatorSpec("tag")
        if "default_operator" in data:
            try:
                default_operator = OperatorSpec.from_dict(data["default_operator"], "/default_operator")
            except Invalid as exc:
                errors.extend(exc.errors)
        _raise(errors)
        return cls(
            name=data.get("name", "custom"),
            entities=None if entities is None else tuple(entities),
            threshold=data.get("threshold", 0.5),
            languages=tuple(cast(list[str], languages)),
            operators=operators,
            default_operator=default_operator,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, which ``from_dict`` reads back."""
        return {
            "name": self.name,
            "entities": None if self.entities is None else list(self.entities),
            "threshold": self.threshold,
            "languages": list(self.languages),
            "operators": {entity: spec.to_dict() for entity, spec in sorted(self.operators.items())},
            "default_operator": self.default_operator.to_dict(),
        }


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


# Named policies, for the batch command and as starting points.
NAMED_POLICIES: Final[Mapping[str, Policy]] = MappingProxyType(
    {
        "default": Policy(),
        # Lower threshold (more recall, more false positives); payment and
        # identity numbers removed outright.
        "strict": Policy(
            name="strict",
            threshold=0.35,
            operators={
                entity: OperatorSpec("redact")
                for entity in ("CREDIT_CARD", "BANK_CARD", "IBAN_CODE", "US_SSN", "CN_RESIDENT_ID", "UK_NHS")
            },
        ),
        # Keyed pseudonyms keep co-reference ("<PERSON_3f9a1c07>" is the same
        # person throughout a version) without revealing anyone.
        "pseudonym": Policy(name="pseudonym", default_operator=OperatorSpec("pseudonym")),
        # Realistic fakes of the same type: text that reads naturally for training.
        "surrogate": Policy(name="surrogate", default_operator=OperatorSpec("surrogate")),
    }
)


def policy_named(name: str) -> Policy:
    """Return a named policy.

    :raises Invalid: when there is no policy by that name.
    """
    try:
        return NAMED_POLICIES[name]
    except KeyError:
        known = ", ".join(NAMED_POLICIES)
        raise Invalid(
            f"no desensitization policy named {name!r} (known: {known})",
            code="custody.policy_unknown",
            errors=[_error("/name", "unknown", f"must be one of {known}")],
        ) from None
