"""Desensitization: Presidio and spaCy plus Sealroom's recognizers, under a per-dataset policy.

Public API::

    from custody.desensitize import Policy, OperatorSpec, Span, Desensitized, Desensitizer, get_desensitizer

Importing this package is cheap: Presidio and spaCy load on the first
record, once per process (``custody.desensitize.engine``).
"""

from __future__ import annotations

from custody.desensitize.core import (
    LANGUAGE_CHOICES,
    Desensitized,
    Desensitizer,
    Span,
    get_desensitizer,
)
from custody.desensitize.policy import (
    NAMED_POLICIES,
    OPERATOR_KINDS,
    SUPPORTED_ENTITIES,
    OperatorSpec,
    Policy,
    policy_named,
)

__all__ = [
    "LANGUAGE_CHOICES",
    "NAMED_POLICIES",
    "OPERATOR_KINDS",
    "SUPPORTED_ENTITIES",
    "Desensitized",
    "Desensitizer",
    "OperatorSpec",
    "Policy",
    "Span",
    "get_desensitizer",
    "policy_named",
]
