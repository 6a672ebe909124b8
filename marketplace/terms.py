"""Machine-readable license terms: the JSON Schema, validation, plain language and grant snapshots.

A terms document is an ODRL-inspired subset: what the licensee is permitted
to do (``permission``), the limits on it (``constraint``) and what it must do
in return (``duty``). The schema is published at ``/api/v1/catalog/terms-schema``
and in ``docs/terms.schema.json``; ``docs/terms.md`` explains each field.

Terms rows (``OfferTerms``) are never edited: a change appends a new row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from common.exceptions import FieldError
from marketplace.exceptions import TermsInvalid

if TYPE_CHECKING:
    from custody.models import DatasetVersion
    from marketplace.models import OfferTerms

TERMS_SCHEMA_ID = "https://sealroom.example/schemas/license-terms/v1.json"
PURPOSES = ("research", "commercial", "internal_evaluation")
# valuation: KNN-Shapley values of the records, aggregates only (docs/training.md "Data valuation");
# a license that requires DP admits it only when it names it.
JOB_TEMPLATES = (
    "causal_lm",
    "causal_lm_lora",
    "seq_classification",
    "valuation",
    "fine_tune",
    "generate",
    "distill_causal_lm",
    "distill_classification",
)
# distill_*: a student trained on the data with a teacher's soft labels; named in a custody model's
# license, they also let that model teach (training/services/distillation.py).
# fine_tune and generate govern a model held in custody that was trained under these terms: starting a
# later job from it, generating a synthetic corpus with it (training/services/custody_models.py).
# The release gate's default threshold on canary exposure (bits), used when the terms name none.
# 4.0 refused about one ordinary model in five (the worst of 4 canaries among 256 texts is over
# 4 bits with probability 1 - (15/16)^4); at 7.0 only a canary ranked first (8 bits) is over:
# 4/256 = 1.6 % of ordinary models, and a memorised canary is still caught.
DEFAULT_GATE_MAX_EXPOSURE = 7.0
MAX_COUNT = 1_000_000
MAX_TOKENS = 10**15

PURPOSE_WORDS = {
    "research": "non-commercial research",
    "commercial": "commercial products and services",
    "internal_evaluation": "internal evaluation only",
}
TEMPLATE_WORDS = {
    "causal_lm": "full fine-tuning of a causal language model",
    "causal_lm_lora": "LoRA fine-tuning of a causal language model",
    "seq_classification": "training a sequence classifier",
    "valuation": "valuing the records (aggregates only)",
    "fine_tune": "fine-tuning further a model held in custody that was trained on the data",
    "generate": "generating a synthetic corpus (held in custody) with a model trained on the data",
    "distill_causal_lm": "distilling a teacher model into a smaller causal language model",
    "distill_classification": "distilling a teacher model into a smaller sequence classifier",
}


def _count(maximum: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": maximum, "description": description}


TERMS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": TERMS_SCHEMA_ID,
    "title": "Sealroom license terms",
    "description": (
        "What a license on a sealed dataset version permits (permission), within which limits "
        "(constraint), and what the licensee must do (duty). Unknown fields are rejected."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "permission", "constraint"],
    "properties": {
        "version": {"const": 1, "description": "The version of this terms format."},
        "permission": {
            "type": "object",
            "additionalProperties": False,
            "required": ["purposes", "job_templates", "weights_may_leave"],
            "properties": {
                "purposes": {
                    "type": "array",
                    "items": {"enum": list(PURPOSES)},
                    "minItems": 1,
                    "uniqueItems": True,
                    "description": "What the trained model may be used for.",
                },
                "job_templates": {
                    "type": "array",
                    "items": {"enum": list(JOB_TEMPLATES)},
                    "minItems": 1,
                    "uniqueItems": True,
                    "description": "The training job templates the licensee may run.",
                },
                "weights_may_leave": {
                    "type": "boolean",
                    "description": "Whether trained weights may be downloaded (after the release gate).",
                },
            },
        },
        "constraint": {
            "type": "object",
            "additionalProperties": False,
            "required": ["max_jobs", "max_epochs", "max_tokens", "term_days"],
            "properties": {
                "max_jobs": _count(MAX_COUNT, "Training jobs the license allows."),
                "max_epochs": _count(1000, "Epochs one job may run over the data."),
                "max_tokens": _count(
                    MAX_TOKENS, "Platform tokens the license may train on in all (tokens x epochs)."
                ),
                "term_days": _count(36_500, "Days from the license's start until it expires."),
                "max_licenses": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_COUNT,
                    "description": "Exclusivity: at most this many licenses on the offer (null: unlimited).",
                },
                "exclusive_use": {
                    "type": "boolean",
                    "description": (
                        "Exclusive use of the dataset version: while this license is live (or its order "
                        "awaits approval), no other license on the version is sold, by any offer; it is "
                        "sold only while no other is live; and its data is trained on alone, never mixed "
                        "with another license's. Needs max_licenses 1. Default false."
                    ),
                },
            },
        },
        "duty": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "attribution": {
                    "type": "string",
                    "maxLength": 500,
                    "description": "Attribution text the licensee must publish with the model.",
                },
                "differential_privacy": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["required"],
                    "properties": {
                        "required": {"type": "boolean"},
                        "epsilon_cap": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 100000,
                            "description": "Per-license epsilon cap; at most the version's cap.",
                        },
                    },
                    "if": {"properties": {"required": {"const": True}}},
                    "then": {"required": ["required", "epsilon_cap"]},
                },
                "release_gate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["max_exposure"],
                    "properties": {
                        "max_exposure": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 64,
                            "description": "Largest canary exposure (bits) a released model may show.",
                        }
                    },
                },
            },
        },
    },
}

_VALIDATOR = Draft202012Validator(TERMS_SCHEMA)


def _pointer(prefix: str, path: Any) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return prefix + "".join(f"/{p}" for p in parts)


def _field_errors(error: ValidationError, prefix: str) -> list[FieldError]:
    """One field error per problem; an unknown field is pointed at by its own name."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        return [
            {
                "pointer": _pointer(prefix, [*error.absolute_path, name]),
                "code": "unknown_field",
                "detail": f"Unknown field {name!r}.",
            }
            for name in sorted(set(error.instance) - known)
        ]
    if error.validator == "required":
        return [
            {
                "pointer": _pointer(prefix, [*error.absolute_path, name]),
                "code": "required",
                "detail": f"{name!r} is required.",
            }
            for name in error.validator_value
            if isinstance(error.instance, dict) and name not in error.instance
        ]
    return [{"pointer": _pointer(prefix, error.absolute_path), "code": "invalid", "detail": error.message}]


def terms_validate(
    document: Any, *, version: DatasetVersion | None = None, pointer: str = "/terms"
) -> dict[str, Any]:
    """Check a terms document against the schema (and the version's epsilon cap); return it normalised.

    Normalised: optional parts filled with their defaults, so stored rows are explicit.
    :raises TermsInvalid: schema errors (each with a JSON pointer), or an epsilon cap above the version's.
    """
    if isinstance(document, bool) or not isinstance(document, dict):
        raise TermsInvalid(
            "License terms must be a JSON object.",
            errors=[{"pointer": pointer, "code": "invalid", "detail": "Expected an object."}],
        )
    errors: list[FieldError] = []
    for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        errors += _field_errors(error, pointer)
    if errors:
        unknown = any(e["code"] == "unknown_field" for e in errors)
        raise TermsInvalid(
            f"The license terms are not valid: {errors[0]['pointer']}: {errors[0]['detail']}",
            code="marketplace.terms_unknown_field" if unknown else "marketplace.terms_invalid",
            errors=errors,
        )
    normalised = _normalised(document)
    _check_exclusive_use(normalised, pointer)
    if version is not None:
        _check_against_version(normalised, version, pointer)
    return normalised


def _normalised(document: dict[str, Any]) -> dict[str, Any]:
    duty = dict(document.get("duty") or {})
    duty.setdefault("attribution", "")
    duty.setdefault("differential_privacy", {"required": False})
    duty.setdefault("release_gate", {"max_exposure": DEFAULT_GATE_MAX_EXPOSURE})
    constraint = dict(document["constraint"])
    constraint.setdefault("max_licenses", None)
    constraint.setdefault("exclusive_use", False)
    return {
        "version": 1,
        "permission": dict(document["permission"]),
        "constraint": constraint,
        "duty": duty,
    }


def _check_exclusive_use(terms: dict[str, Any], pointer: str) -> None:
    """An exclusive-use license is the only one on its version: its offer sells one license."""
    constraint = terms["constraint"]
    if constraint["exclusive_use"] and constraint["max_licenses"] != 1:
        raise TermsInvalid(
            "An exclusive-use license is the only license on its version: its offer sells one license.",
            code="marketplace.exclusive_use_needs_one_license",
            errors=[
                {
                    "pointer": f"{pointer}/constraint/max_licenses",
                    "code": "exclusive_use_needs_one_license",
                    "detail": "Must be 1 when constraint.exclusive_use is true.",
                }
            ],
        )


def _check_against_version(terms: dict[str, Any], version: DatasetVersion, pointer: str) -> None:
    dp = terms["duty"]["differential_privacy"]
    cap = version.epsilon_cap
    if cap is None:
        return
    if not dp["required"]:
        raise TermsInvalid(
            f"This version accepts only differentially private training (epsilon cap {cap}).",
            code="marketplace.dp_required",
            errors=[
                {
                    "pointer": f"{pointer}/duty/differential_privacy/required",
                    "code": "dp_required",
                    "detail": f"Must be true: the version's epsilon cap is {cap}.",
                }
            ],
        )
    if Decimal(str(dp["epsilon_cap"])) > cap:
        raise TermsInvalid(
            f"The license's epsilon cap {dp['epsilon_cap']} is above the version's cap {cap}.",
            code="marketplace.epsilon_above_cap",
            errors=[
                {
                    "pointer": f"{pointer}/duty/differential_privacy/epsilon_cap",
                    "code": "above_version_cap",
                    "detail": f"At most {cap}.",
                }
            ],
        )


def terms_epsilon_cap(terms: dict[str, Any], version: DatasetVersion) -> Decimal | None:
    """The effective per-license epsilon cap: the license's, else the version's, else none."""
    dp = terms.get("duty", {}).get("differential_privacy", {})
    if dp.get("required") and dp.get("epsilon_cap") is not None:
        return Decimal(str(dp["epsilon_cap"]))
    return version.epsilon_cap


def grant_snapshot(terms_row: OfferTerms, *, starts_at: datetime) -> dict[str, Any]:
    """The terms as custody's ``grant_issue`` takes them (training reads them from the grant).

    ``epsilon_cap`` is present (a decimal string) only when the license or the
    version caps epsilon; ``expires_at`` is ``starts_at`` plus the term, in ISO 8601.
    """
    terms = terms_row.terms
    version = terms_row.offer.listing.version
    permission, constraint, duty = terms["permission"], terms["constraint"], terms.get("duty", {})
    cap = terms_epsilon_cap(terms, version)
    gate = duty.get("release_gate", {}).get("max_exposure", DEFAULT_GATE_MAX_EXPOSURE)
    snapshot: dict[str, Any] = {
        "purposes": list(permission["purposes"]),
        "job_templates": list(permission["job_templates"]),
        "max_jobs": int(constraint["max_jobs"]),
        "max_tokens": int(constraint["max_tokens"]),
        "max_epochs": int(constraint["max_epochs"]),
        "dp_required": bool(duty.get("differential_privacy", {}).get("required")) or cap is not None,
        "weights_may_leave": bool(permission["weights_may_leave"]),
        "expires_at": (starts_at + timedelta(days=int(constraint["term_days"]))).isoformat(),
        "attribution": str(duty.get("attribution", "")),
        "gate_max_exposure": float(gate),
        "offer_terms": terms_row.pk,
    }
    if cap is not None:
        snapshot["epsilon_cap"] = str(cap)
    if constraint.get("exclusive_use"):
        # Trained on alone: training/services/mixing.py refuses it in a mixed job.
        snapshot["exclusive_use"] = True
    return snapshot


def _words(items: list[str], names: dict[str, str]) -> str:
    spelled = [names.get(i, i) for i in items]
    return spelled[0] if len(spelled) == 1 else ", ".join(spelled[:-1]) + " and " + spelled[-1]


def terms_plain(terms: dict[str, Any]) -> list[str]:
    """The terms in plain sentences, in the order a reader needs them."""
    permission, constraint, duty = terms["permission"], terms["constraint"], terms.get("duty", {})
    lines = [
        f"You may use models trained on this data for {_words(permission['purposes'], PURPOSE_WORDS)}.",
        f"Allowed training: {_words(permission['job_templates'], TEMPLATE_WORDS)}.",
        (
            f"Up to {constraint['max_jobs']:,} training job{'s' if constraint['max_jobs'] != 1 else ''}, "
            f"each at most {constraint['max_epochs']} epoch{'s' if constraint['max_epochs'] != 1 else ''}, "
            f"and {constraint['max_tokens']:,} platform tokens in all."
        ),
        f"The license runs for {constraint['term_days']} days from its start.",
    ]
    if permission["weights_may_leave"]:
        lines.append("You may download the trained weights once they pass the release gate.")
    else:
        lines.append("Trained weights stay in custody: you get metrics, not a download.")
    dp = duty.get("differential_privacy", {"required": False})
    if dp.get("required"):
        lines.append(f"Training must be differentially private, with epsilon at most {dp['epsilon_cap']}.")
    else:
        lines.append("Differential privacy is not required by the license.")
    gate = duty.get("release_gate", {}).get("max_exposure", DEFAULT_GATE_MAX_EXPOSURE)
    lines.append(f"The release gate refuses a model whose canary exposure exceeds {gate} bits.")
    if duty.get("attribution"):
        lines.append(f"You must credit the data as: “{duty['attribution']}”.")
    limit = constraint.get("max_licenses")
    if constraint.get("exclusive_use"):
        lines.append(
            "Exclusive use: while this license is active no one else is licensed this dataset version, "
            "and its data is trained on alone, never mixed with another license's data."
        )
    elif limit is not None:
        lines.append(f"Exclusive: at most {limit} license{'s' if limit != 1 else ''} on this offer.")
    return lines
