"""Mixed-dataset jobs (issue 17 item 3): what several licenses allow together.

A mixed job trains on records of several dataset versions, each read under its own
license, in proportions the trainer gives (weights). What the combination may do is
what every license allows, computed here from the grants' term snapshots and nothing
else (no database), so it can be tested as a property:

- purposes and templates: the intersection (the job's purpose and template must be in
  every license's list; a license with no list does not restrict);
- the weights leave custody only if every license lets them (else they stay sealed; a
  request that asks for them to leave is refused where a license keeps them);
- DP is required if any license requires it or any version has an epsilon cap; each
  version's epsilon is charged to its own budget (the caller reserves it per version);
- epochs: at most the smallest ``max_epochs``; tokens: each license's ``max_tokens``
  bounds the tokens read from its own version (checked by the caller, per grant);
- attribution: the union of the licenses' attribution duties;
- exclusivity: a license whose terms say ``exclusive_use`` is trained on alone, so it
  cannot be mixed; nor can one version be mixed with itself.

A conflict names each conflicting term of each license: one error per (license, term),
``pointer`` ``/licenses/<i>/terms/<term>``, with the license's reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Component:
    """One license of a mixed job, as the rule sees it."""

    license: str  # the license reference (lic_...) or, without one, the grant's public id
    terms: dict[str, Any]
    version: str  # the version's public id
    epsilon_cap: bool = False  # the version caps epsilon


@dataclass(frozen=True)
class MixRequest:
    """What the trainer asks of the combination."""

    template: str
    purpose: str = ""  # empty: the first purpose every license permits
    epochs: int = 1
    dp: bool = False
    weights_leave: bool = False  # the trainer asks for a downloadable model


@dataclass
class Combined:
    """What the combined terms allow, and what of the request they refuse."""

    purpose: str = ""
    purposes: list[str] = field(default_factory=list)
    templates: list[str] | None = None  # None: no license restricts templates
    weights_may_leave: bool = True
    dp_required: bool = False
    max_epochs: int | None = None
    attribution: list[str] = field(default_factory=list)
    gate_max_exposure: float | None = None
    gate_unrun_withholds: bool | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return not self.errors


def _strings(value: Any) -> list[str] | None:
    """A terms list as strings; None where the license gives no list (no restriction)."""
    if not value:
        return None
    return [str(item) for item in value]


def _conflict(index: int, component: Component, term: str, code: str, detail: str) -> dict[str, Any]:
    return {
        "pointer": f"/licenses/{index}/terms/{term}",
        "code": code,
        "license": component.license,
        "term": term,
        "detail": f"License {component.license}: {detail}",
    }


def combine(components: Sequence[Component], request: MixRequest) -> Combined:
    """The combined terms of ``components`` and the conflicts ``request`` meets (all of them)."""
    combined = Combined()
    errors = combined.errors
    purposes_of = [_strings(c.terms.get("purposes")) for c in components]
    templates_of = [_strings(c.terms.get("job_templates")) for c in components]

    # Purposes: the intersection, in the first restricting license's order.
    common: list[str] | None = None
    for listed in purposes_of:
        if listed is not None:
            common = listed if common is None else [p for p in common if p in listed]
    combined.purposes = common or []
    purpose = request.purpose or (combined.purposes[0] if combined.purposes else "")
    combined.purpose = purpose
    for index, (component, listed) in enumerate(zip(components, purposes_of, strict=True)):
        if listed is None:
            continue
        if not purpose:
            errors.append(
                _conflict(
                    index,
                    component,
                    "purposes",
                    "no_common_purpose",
                    f"permits the purposes {', '.join(listed)}; no purpose is permitted by every license.",
                )
            )
        elif purpose not in listed:
            errors.append(
                _conflict(
                    index,
                    component,
                    "purposes",
                    "not_permitted",
                    f"permits the purposes {', '.join(listed)}, not {purpose!r}.",
                )
            )

    # Templates: the intersection.
    for index, (component, listed) in enumerate(zip(components, templates_of, strict=True)):
        if listed is None:
            continue
        combined.templates = (
            listed if combined.templates is None else [t for t in combined.templates if t in listed]
        )
        if request.template not in listed:
            errors.append(
                _conflict(
                    index,
                    component,
                    "job_templates",
                    "not_permitted",
                    f"permits the templates {', '.join(listed)}, not {request.template}.",
                )
            )

    for index, component in enumerate(components):
        terms = component.terms
        # Weights leave only if every license lets them.
        may_leave = bool(terms.get("weights_may_leave"))
        combined.weights_may_leave = combined.weights_may_leave and may_leave
        if request.weights_leave and not may_leave:
            errors.append(
                _conflict(
                    index,
                    component,
                    "weights_may_leave",
                    "weights_stay",
                    "keeps the trained weights in custody; a model trained on it cannot be downloaded.",
                )
            )
        # DP if any license (or version) asks for it.
        needs_dp = (
            bool(terms.get("dp_required")) or component.epsilon_cap or terms.get("epsilon_cap") is not None
        )
        combined.dp_required = combined.dp_required or needs_dp
        if needs_dp and not request.dp:
            capped = component.epsilon_cap or terms.get("epsilon_cap") is not None
            term = "epsilon_cap" if capped else "dp_required"
            errors.append(
                _conflict(
                    index,
                    component,
                    term,
                    "dp_required",
                    "accepts only differentially private jobs (its version's epsilon is capped or its "
                    "terms require DP): enable DP and choose a target epsilon.",
                )
            )
        # Epochs: the smallest cap.
        max_epochs = terms.get("max_epochs")
        if max_epochs is not None:
            cap = int(max_epochs)
            combined.max_epochs = cap if combined.max_epochs is None else min(combined.max_epochs, cap)
            if request.epochs > cap:
                errors.append(
                    _conflict(
                        index,
                        component,
                        "max_epochs",
                        "exceeds_license",
                        f"allows at most {cap} epochs; {request.epochs} asked.",
                    )
                )
        # Exclusivity: trained on alone.
        if terms.get("exclusive_use"):
            errors.append(
                _conflict(
                    index,
                    component,
                    "exclusive_use",
                    "exclusive",
                    "is for exclusive use: its data is trained on alone, never mixed with another license's.",
                )
            )
        # Attribution: the union, in order, without repeats.
        attribution = str(terms.get("attribution") or "").strip()
        if attribution and attribution not in combined.attribution:
            combined.attribution.append(attribution)
        # The release gate: the strictest threshold; an unrun check withholds if any license says so.
        gate = terms.get("gate_max_exposure")
        if gate is not None:
            value = float(gate)
            combined.gate_max_exposure = (
                value if combined.gate_max_exposure is None else min(combined.gate_max_exposure, value)
            )
        unrun = terms.get("gate_unrun_withholds")
        if unrun is not None:
            combined.gate_unrun_withholds = bool(combined.gate_unrun_withholds) or bool(unrun)

    # One version is not mixed with itself (its budget and tokens would be counted twice).
    seen: dict[str, int] = {}
    for index, component in enumerate(components):
        if component.version in seen:
            errors.append(
                _conflict(
                    index,
                    component,
                    "version",
                    "duplicate_version",
                    f"licenses the same dataset version as license {seen[component.version]} of this job.",
                )
            )
        seen.setdefault(component.version, index)
    return combined


def license_allows(component: Component, request: MixRequest) -> bool:
    """Whether one license alone allows ``request`` as part of a mix (the rule, term by term)."""
    return combine([component], request).admitted
