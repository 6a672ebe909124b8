"""The default rights allocation of a model-generated version (issue 17 item 2).

A synthetic version (custody/services/synthetic.py) was made from a model trained on a source
version, so its default allocation pays the source's holders and the model's trainer:
``model_share_bps`` (the governing license's terms state it; ``DEFAULT_MODEL_SHARE_BPS`` when they
do not) goes to the trainer, the synthetic version's owner; the rest is split among the source
version's holders in proportion to the source's allocation in force. Largest remainder, exactly
10,000 basis points, so a sale split by it pays each exactly (marketplace.ledger.split).
"""

from __future__ import annotations

from custody.models import DatasetVersion
from marketplace.ledger import BASIS_POINTS, split

# The trainer's share when the source terms name none: 30%, the source's holders 70%.
DEFAULT_MODEL_SHARE_BPS = 3_000


def model_share_bps(terms: dict[str, object]) -> int:
    """The trainer's share a license's terms state for models trained under it (the default else)."""
    value = terms.get("model_share_bps")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= BASIS_POINTS:
        return value
    return DEFAULT_MODEL_SHARE_BPS


def synthetic_default_shares(version: DatasetVersion) -> dict[int, int] | None:
    """Holder organisation id -> basis points for a model-generated version; None for any other."""
    from marketplace.services.rights import allocation_in_force, allocation_shares

    provenance = version.provenance or {}
    if not provenance.get("model_generated"):
        return None
    source = DatasetVersion.objects.filter(public_id=str(provenance.get("source_version") or "")).first()
    if source is None or source.pk == version.pk:
        return None
    trainer_bps = provenance.get("model_share_bps")
    if (
        isinstance(trainer_bps, bool)
        or not isinstance(trainer_bps, int)
        or not 0 <= trainer_bps <= BASIS_POINTS
    ):
        trainer_bps = DEFAULT_MODEL_SHARE_BPS
    weights = {
        holder: bps * (BASIS_POINTS - trainer_bps)
        for holder, bps in allocation_shares(allocation_in_force(version=source)).items()
    }
    trainer = version.dataset.owner_id
    weights[trainer] = weights.get(trainer, 0) + trainer_bps * BASIS_POINTS
    weights = {holder: weight for holder, weight in weights.items() if weight > 0}
    parts = split(BASIS_POINTS, weights, 0).parts
    return {holder: bps for holder, bps in parts.items() if bps > 0}


def synthetic_parties(version: DatasetVersion) -> set[int] | None:
    """The organisations outside the contributors a manual allocation of a model-generated version
    may name: the parties of its default allocation (the source's holders in force and the model's
    trainer). None for any other version (a manual allocation names its contributors only).

    The rights validation (marketplace/services/rights.py ``_validated_shares``) also requires each
    of them to keep at least 1 basis point, as it does every contributor: a proposal names them, so
    each approves it before it comes in force, and no owner can cut them out alone.
    """
    shares = synthetic_default_shares(version)
    return None if shares is None else set(shares)
