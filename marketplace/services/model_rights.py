"""Who is paid for a custody model (issue 16): the release weights a model license freezes.

``model_rights(listing)`` is what ``model_license_buy`` freezes into the order (integer weights
whose ratios are the shares; the existing settlement splits each ``tokens_inferred`` release by
them to the minor unit). docs/models.md "Who is paid" states the rule:

- **Data side across versions.** The versions are the model's lineage (``CustodyModel.lineage``,
  one entry per version it was trained on); each weighs the tokens its job read from it
  (custody's ``tokens_trained`` usage; else the lineage's ``tokens_trained``, then its mixing
  weights ``weight_bps``, then equal parts), and its part is split by that version's allocation.
- **Trainer.** The listing's ``model_share_bps`` of the model's own part.
- **Teacher.** A student distilled from a custody teacher owes the teacher's holders ``share_bps``
  of every release (the teacher's model license's ``distill_share_bps``, else the share the
  student's job recorded at submit, else 2,000), split as the teacher's own rights: as its model
  license's order froze them, else as the teacher's listing would pay now (recursively, its own
  teacher included). The teacher is found in the student's lineage (an entry carrying the job's
  ``teacher_settlement``), or in custody's metering of a model license for the student's job.

Exact: shares are ``Fraction``s combined in marketplace/model_terms.py and turned into integer
weights only at the end (``integer_weights``), so no rounding happens before the ledger's one
largest-remainder split.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any, TypeGuard

from django.db.models import Sum

from custody.models import CustodyModel, DatasetVersion, UsageKind, UsageRecord
from custody.services.models_custody import custody_model_get
from marketplace.exceptions import ListingNotFound
from marketplace.model_terms import BASIS_POINTS, integer_weights, mixed_data_shares, model_rights_exact
from marketplace.models import License, Listing, OfferTerms
from marketplace.services.rights import allocation_in_force, allocation_shares

MODEL_KIND = "model"
# A student's debt to its custody teacher's holders when its job recorded no share: the default of
# training/services/distillation.py (DEFAULT_TEACHER_SHARE_BPS; marketplace never imports training).
DEFAULT_TEACHER_SHARE_BPS = 2_000
# How far a chain of teachers (the teacher of a teacher ...) is followed; a cycle stops earlier.
MAX_TEACHER_DEPTH = 8


def model_listing_terms(listing: Listing) -> OfferTerms:
    """The current terms row of a model listing's offer. :raises ListingNotFound: it has none."""
    row = (
        OfferTerms.objects.filter(offer__listing=listing).order_by("-number").select_related("offer").first()
    )
    if row is None:
        raise ListingNotFound("No such model listing.")
    return row


def model_rights(listing: Listing) -> dict[int, int]:
    """The release weights a sale made now would freeze (integers; their ratios are the shares)."""
    return model_rights_basis(listing)[0]


def model_rights_basis(listing: Listing) -> tuple[dict[int, int], dict[str, Any]]:
    """The release weights a sale made now would freeze, and what they rest on (for the audit):
    the versions with their weights and allocations, and the teacher with its share."""
    model = custody_model_get(job_ref=listing.model_ref)
    share = int(model_listing_terms(listing).terms["model_share_bps"])
    exact, basis = _rights_exact(model, trainer_id=listing.provider_id, model_share_bps=share, seen=())
    return integer_weights(exact), basis


def _lineage(model: CustodyModel) -> list[Mapping[str, Any]]:
    return [entry for entry in model.lineage or [] if isinstance(entry, Mapping)]


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _version_weights(model: CustodyModel) -> tuple[list[tuple[int, DatasetVersion]], str]:
    """(weight, version) for each version the model was trained on, and what the weights are.

    Tokens read come from custody's ``tokens_trained`` usage of the job, whose consumer is the
    model's artifact name (``training-job-<pk>``); a version the usage does not cover sends the
    whole model to the lineage's ``tokens_trained``, then its mixing weights (``weight_bps``),
    then equal parts. A lineage that names no known version is the listed version alone.
    """
    entries = [entry for entry in _lineage(model) if isinstance(entry.get("version"), str)]
    found = {
        v.public_id: v for v in DatasetVersion.objects.filter(public_id__in=[e["version"] for e in entries])
    }
    versions: list[tuple[Mapping[str, Any], DatasetVersion]] = []
    for entry in entries:
        version = found.get(entry["version"])
        if version is not None and all(version.pk != v.pk for _, v in versions):
            versions.append((entry, version))
    if not versions:
        return [(1, model.version)], "listed_version"
    read = dict(
        UsageRecord.objects.filter(
            consumer_ref=model.artifact_name,
            kind=UsageKind.TOKENS_TRAINED,
            grant__version_id__in=[v.pk for _, v in versions],
        )
        .values("grant__version_id")
        .annotate(tokens=Sum("quantity"))
        .values_list("grant__version_id", "tokens")
    )
    if len(read) == len(versions) and sum(read.values()) > 0:
        return [(int(read[v.pk]), v) for _, v in versions], "tokens_read"
    for key in ("tokens_trained", "weight_bps"):
        raw = [entry.get(key) for entry, _ in versions]
        if all(_count(value) for value in raw):
            values = [int(value) for value in raw if _count(value)]
            if sum(values) > 0:
                return [(value, v) for value, (_, v) in zip(values, versions, strict=True)], key
    return [(1, v) for _, v in versions], "equal"


def _teacher_settlement(model: CustodyModel) -> Mapping[str, Any] | None:
    """What a distilled model owes its custody teacher, or None: the ``teacher_settlement`` its job
    recorded, as its lineage carries it; else, for a student distilled under a model license, what
    custody metered of that license for the job (the teacher's ``tokens_inferred`` over the
    student's tokens, ``model_license_use_record``), the license's terms naming the teacher."""
    for entry in _lineage(model):
        doc = entry.get("settlement")
        if isinstance(doc, Mapping) and isinstance(doc.get("teacher_model"), str):
            return doc
    metered = (
        UsageRecord.objects.filter(consumer_ref=model.artifact_name, kind=UsageKind.TOKENS_INFERRED)
        .select_related("grant")
        .order_by("pk")
    )
    for usage in metered:
        terms = usage.grant.terms
        if terms.get("kind") == MODEL_KIND and isinstance(terms.get("model"), str):
            return {
                "teacher_model": terms["model"],
                "licenses": [],
                "model_license": {"ref": usage.grant.external_ref, "grant": usage.grant.public_id},
            }
    return None


def _bps(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= BASIS_POINTS:
        return value
    return None


def _model_license_of(doc: Mapping[str, Any]) -> License | None:
    """The model license of the teacher the student's job ran under, if it ran under one."""
    named = doc.get("model_license")
    refs = [str(named.get("ref"))] if isinstance(named, Mapping) else []
    refs += [str(x.get("ref")) for x in doc.get("licenses") or [] if isinstance(x, Mapping)]
    return (
        License.objects.filter(
            ref__in=refs, order__listing__kind=MODEL_KIND, order__listing__model_ref=str(doc["teacher_model"])
        )
        .select_related("order", "grant")
        .order_by("pk")
        .first()
    )


def _teacher_share_bps(doc: Mapping[str, Any], sold: License | None) -> int:
    """The teacher's terms' ``distill_share_bps`` (its model license's snapshot), else the share the
    student's job recorded at submit, else the default."""
    named = _bps(sold.grant.terms.get("distill_share_bps")) if sold is not None else None
    if named is not None:
        return named
    recorded = _bps(doc.get("share_bps"))
    return DEFAULT_TEACHER_SHARE_BPS if recorded is None else recorded


def _listed_model_share(model: CustodyModel) -> int:
    """The trainer's share a model's newest listing states (0 for a model never listed)."""
    listing = Listing.objects.filter(kind=MODEL_KIND, model_ref=model.job_ref).order_by("-pk").first()
    if listing is None:
        return 0
    return int(model_listing_terms(listing).terms["model_share_bps"])


def _teacher_rights(
    doc: Mapping[str, Any], sold: License | None, seen: tuple[str, ...]
) -> tuple[dict[int, Fraction], dict[str, Any]]:
    """The teacher's own split: as frozen by the model license the student's job ran under, else
    as the teacher's rights are now (its versions, its trainer's listed share, its own teacher),
    else (no such model) its data versions' allocations."""
    if sold is not None:
        return {k: Fraction(v) for k, v in sold.order.shares.items()}, {"split_as": f"license {sold.ref}"}
    teacher = CustodyModel.objects.select_related("version").filter(job_ref=str(doc["teacher_model"])).first()
    if teacher is not None:
        exact, basis = _rights_exact(
            teacher, trainer_id=teacher.trainer_id, model_share_bps=_listed_model_share(teacher), seen=seen
        )
        return exact, {"split_as": "model", **basis}
    versions = list(DatasetVersion.objects.filter(public_id__in=list(doc.get("dataset_versions") or [])))
    data = [(1, allocation_shares(allocation_in_force(version=v))) for v in versions]
    return (mixed_data_shares(data) if data else {}), {"split_as": "dataset_versions"}


def _rights_exact(
    model: CustodyModel, *, trainer_id: int, model_share_bps: int, seen: tuple[str, ...]
) -> tuple[dict[int, Fraction], dict[str, Any]]:
    weighted, weighed_by = _version_weights(model)
    parts = []
    basis: dict[str, Any] = {"model": model.job_ref, "weighed_by": weighed_by, "versions": []}
    for weight, version in weighted:
        allocation = allocation_in_force(version=version)
        parts.append((weight, allocation_shares(allocation)))
        basis["versions"].append(
            {"version": version.public_id, "weight": weight, "allocation": allocation.pk}
        )
    doc = _teacher_settlement(model)
    teacher: dict[int, Fraction] | None = None
    share = 0
    chain = (*seen, model.job_ref)
    if doc is not None and str(doc["teacher_model"]) not in chain and len(chain) <= MAX_TEACHER_DEPTH:
        sold = _model_license_of(doc)
        teacher, teacher_basis = _teacher_rights(doc, sold, chain)
        share = _teacher_share_bps(doc, sold)
        basis["teacher"] = {"model": doc["teacher_model"], "share_bps": share, **teacher_basis}
    exact = model_rights_exact(
        data=mixed_data_shares(parts),
        trainer_id=trainer_id,
        model_share_bps=model_share_bps,
        teacher=teacher,
        teacher_share_bps=share,
    )
    return exact, basis
