"""Rights allocation: who holds the rights to a sealed version, in basis points (10,000 in all).

By default the shares follow the contributions: platform tokens contributed
(after the drops applied at sealing) per contributing organisation, split by
largest remainder so they sum to exactly 10,000. A provider admin may propose
explicit shares; every other contributing organisation's admin approves, and
then the proposal comes in force and the previous allocation is superseded.
Allocations are never edited: each change is a new numbered version, audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from math import gcd

from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from common.audit import audit_record
from common.ids import parse_id
from common.models import Organisation, Role, User
from common.public_ids import is_public_id, pk_for
from custody.models import DatasetVersion, Shard, ValuationSummary, VersionState
from custody.services.valuation_summary import contribution_values, valuation_summary_latest
from marketplace.exceptions import (
    AllocationInvalid,
    AllocationNotFound,
    AllocationStateConflict,
    VersionNotSealed,
)
from marketplace.ledger import BASIS_POINTS, split
from marketplace.models import AllocationState, RightsAllocation, RightsShare
from marketplace.services.catalog import require_role

__all__ = [
    "allocation_approve",
    "allocation_in_force",
    "allocation_parties",
    "allocation_propose",
    "allocation_propose_by_value",
    "allocation_reject",
    "allocation_shares",
    "contributed_tokens",
    "contributing_organisations",
    "default_shares",
    "value_shares",
]


def contributed_tokens(*, version: DatasetVersion) -> dict[int, int]:
    """Platform tokens each organisation contributed to the version (sealed shards, after drops)."""
    rows = (
        Shard.objects.filter(version=version)
        .values("contribution__contributor")
        .annotate(tokens=Sum("tokens"))
        .order_by()
    )
    return {row["contribution__contributor"]: int(row["tokens"] or 0) for row in rows}


def default_shares(tokens: Mapping[int, int], *, owner_id: int) -> dict[int, int]:
    """Shares in basis points proportional to ``tokens`` (largest remainder, exactly 10,000).

    Organisations whose share rounds to zero hold none; with no tokens at all the owner holds all.
    """
    weights = {org: count for org, count in tokens.items() if count > 0}
    if not weights:
        return {owner_id: BASIS_POINTS}
    parts = split(BASIS_POINTS, weights, 0).parts
    return {org: bps for org, bps in parts.items() if bps > 0}


def _next_number(version: DatasetVersion) -> int:
    latest = RightsAllocation.objects.filter(version=version).aggregate(n=Max("number"))["n"]
    return (latest or 0) + 1


def _audit(action: str, allocation: RightsAllocation, actor: User | None, **details: object) -> None:
    audit_record(
        action=action,
        actor=actor,
        organisation=allocation.version.dataset.owner,
        object_type="rights_allocation",
        object_id=allocation.pk,
        details={
            "version": allocation.version_id,
            "number": allocation.number,
            "shares": {str(k): v for k, v in allocation_shares(allocation).items()},
            **details,
        },
    )


def _locked_version(version: DatasetVersion) -> DatasetVersion:
    return (
        DatasetVersion.objects.select_for_update(of=("self",))
        .select_related("dataset__owner")
        .get(pk=version.pk)
    )


def allocation_in_force(*, version: DatasetVersion) -> RightsAllocation:
    """The allocation in force for ``version``; the default from contributions is created if none is."""
    current = RightsAllocation.objects.filter(version=version, state=AllocationState.IN_FORCE).first()
    if current is not None:
        return current
    try:
        with transaction.atomic():
            locked = _locked_version(version)
            current = RightsAllocation.objects.filter(version=locked, state=AllocationState.IN_FORCE).first()
            if current is not None:
                return current
            from marketplace.services.synthetic_rights import synthetic_default_shares

            # A model-generated version pays its source's holders and the model's trainer (issue 17).
            shares = synthetic_default_shares(locked) or default_shares(
                contributed_tokens(version=locked), owner_id=locked.dataset.owner_id
            )
            allocation = _create(locked, shares, AllocationState.IN_FORCE, None, from_contributions=True)
            _audit("marketplace.rights_default", allocation, None)
            return allocation
    except IntegrityError:
        # Another request created it between our read and our insert (SQLite has no row lock).
        return RightsAllocation.objects.get(version=version, state=AllocationState.IN_FORCE)


def _create(
    version: DatasetVersion,
    shares: Mapping[int, int],
    state: AllocationState,
    actor: User | None,
    *,
    from_contributions: bool,
    basis: str = "",
) -> RightsAllocation:
    now = timezone.now()
    allocation = RightsAllocation.objects.create(
        version=version,
        number=_next_number(version),
        state=state,
        from_contributions=from_contributions,
        basis=basis,
        proposed_by=actor,
        in_force_at=now if state == AllocationState.IN_FORCE else None,
    )
    RightsShare.objects.bulk_create(
        RightsShare(allocation=allocation, holder_id=holder, basis_points=bps)
        for holder, bps in shares.items()
    )
    return allocation


def allocation_shares(allocation: RightsAllocation) -> dict[int, int]:
    """Holder organisation id -> basis points (sums to 10,000)."""
    return dict(allocation.shares.order_by("holder_id").values_list("holder_id", "basis_points"))


def contributing_organisations(*, version: DatasetVersion) -> set[int]:
    """The owner and every organisation whose records are in the sealed version."""
    return {version.dataset.owner_id, *contributed_tokens(version=version)}


def allocation_parties(*, version: DatasetVersion) -> set[int]:
    """The organisations a proposal names, each with at least 1 basis point: the contributors, and
    for a model-generated version also its default allocation's parties, the source version's
    holders and the model's trainer (issue 17; marketplace/services/synthetic_rights.py)."""
    from marketplace.services.synthetic_rights import synthetic_parties

    return contributing_organisations(version=version) | (synthetic_parties(version) or set())


def _holder(raw: object) -> int | None:
    """An organisation's key from a share's holder: its public id (the API), or its key (pages, tests)."""
    if is_public_id(raw, "org"):
        return pk_for("org", str(raw))  # 0 when no organisation has it: "not a contributor"
    # ASCII digits only: int() would take "٣" or "1_2" as an organisation id.
    return parse_id(str(raw))


def _validated_shares(version: DatasetVersion, shares: object) -> dict[int, int]:
    if not isinstance(shares, Mapping) or not shares:
        raise AllocationInvalid(
            "Shares are an object of organisation id -> basis points.",
            errors=[{"pointer": "/shares", "code": "invalid", "detail": "Expected an object."}],
        )
    from marketplace.services.synthetic_rights import synthetic_parties

    parties = synthetic_parties(version)
    contributors = allocation_parties(version=version)
    clean: dict[int, int] = {}
    for raw_holder, raw_bps in shares.items():
        pointer = f"/shares/{raw_holder}"
        holder, bps = _holder(raw_holder), raw_bps
        if holder is None:
            raise AllocationInvalid(
                "Holders are organisation ids (org_…).",
                errors=[{"pointer": pointer, "code": "invalid", "detail": "Not an organisation id."}],
            )
        if isinstance(bps, bool) or not isinstance(bps, int) or not 1 <= bps <= BASIS_POINTS:
            raise AllocationInvalid(
                "Each share is 1 to 10,000 basis points.",
                errors=[{"pointer": pointer, "code": "out_of_range", "detail": "1 to 10,000 basis points."}],
            )
        if holder not in contributors:
            raise _not_a_party(raw_holder, pointer, synthetic=parties is not None)
        clean[holder] = bps
    missing = sorted(
        Organisation.objects.filter(pk__in=contributors - set(clean)).values_list("public_id", flat=True)
    )
    if missing:
        who = "contributor" if parties is None else "contributor, source rights holder or the model's trainer"
        raise AllocationInvalid(
            f"Every {who} holds a share (at least 1 basis point).",
            code="marketplace.allocation_contributor_missing",
            errors=[
                {"pointer": f"/shares/{m}", "code": "required", "detail": f"A {who} needs a share."}
                for m in missing
            ],
        )
    total = sum(clean.values())
    if total != BASIS_POINTS:
        raise AllocationInvalid(
            f"Shares must sum to 10,000 basis points, not {total:,}.",
            code="marketplace.allocation_sum",
            errors=[{"pointer": "/shares", "code": "sum", "detail": f"Sum is {total}, not 10000."}],
        )
    return clean


def _not_a_party(raw_holder: object, pointer: str, *, synthetic: bool) -> AllocationInvalid:
    if not synthetic:
        return AllocationInvalid(
            f"Organisation {raw_holder} did not contribute to this version.",
            code="marketplace.allocation_holder_not_contributor",
            errors=[{"pointer": pointer, "code": "not_contributor", "detail": "Not a contributor."}],
        )
    detail = "Not a contributor, a rights holder of the source version, or the model's trainer."
    return AllocationInvalid(
        f"Organisation {raw_holder} has no part in this model-generated version: its allocation names "
        "its contributors, the source version's rights holders and the model's trainer only.",
        code="marketplace.allocation_holder_not_party",
        errors=[{"pointer": pointer, "code": "not_party", "detail": detail}],
    )


@transaction.atomic
def allocation_propose(
    *, actor: User, version: DatasetVersion, shares: object, basis: str = ""
) -> RightsAllocation:
    """Propose explicit shares (a provider admin); in force at once if no one else must approve.

    A pending proposal is superseded by a newer one.
    :raises VersionNotSealed, AllocationInvalid: see the codes.
    """
    require_role(actor, version.dataset.owner, Role.ADMIN)
    locked = _locked_version(version)
    if locked.state != VersionState.SEALED:
        raise VersionNotSealed(f"Version {locked.pk} is {locked.state}, not sealed.")
    clean = _validated_shares(locked, shares)
    allocation_in_force(version=locked)  # so the history starts with the default
    for pending in RightsAllocation.objects.select_for_update().filter(
        version=locked, state=AllocationState.PROPOSED
    ):
        pending.state = AllocationState.SUPERSEDED
        pending.save(update_fields=["state"])
        _audit("marketplace.rights_withdraw", pending, actor, reason="superseded by a newer proposal")
    allocation = _create(
        locked, clean, AllocationState.PROPOSED, actor, from_contributions=False, basis=basis
    )
    RightsShare.objects.filter(allocation=allocation, holder_id=locked.dataset.owner_id).update(
        approved_at=timezone.now(), approved_by=actor
    )
    _audit("marketplace.rights_propose", allocation, actor, **({"basis": basis} if basis else {}))
    _maybe_in_force(allocation, actor)
    return allocation


def _maybe_in_force(allocation: RightsAllocation, actor: User) -> None:
    if allocation.shares.filter(approved_at__isnull=True).exists():
        return
    previous = RightsAllocation.objects.select_for_update().filter(
        version_id=allocation.version_id, state=AllocationState.IN_FORCE
    )
    for old in previous:
        old.state = AllocationState.SUPERSEDED
        old.save(update_fields=["state"])
        _audit("marketplace.rights_supersede", old, actor, by=allocation.pk)
    allocation.state = AllocationState.IN_FORCE
    allocation.in_force_at = timezone.now()
    allocation.save(update_fields=["state", "in_force_at"])
    _audit("marketplace.rights_in_force", allocation, actor)


def _locked_proposal(allocation: RightsAllocation) -> RightsAllocation:
    locked = (
        RightsAllocation.objects.select_for_update(of=("self",))
        .select_related("version__dataset__owner")
        .get(pk=allocation.pk)
    )
    if locked.state != AllocationState.PROPOSED:
        raise AllocationStateConflict(
            f"Allocation v{locked.number} is {locked.state}, not a pending proposal."
        )
    return locked


def _share_for(allocation: RightsAllocation, organisation: Organisation) -> RightsShare:
    share = allocation.shares.filter(holder=organisation).first()
    if share is None:
        raise AllocationNotFound("Your organisation holds no share in this allocation.")
    return share


@transaction.atomic
def allocation_approve(
    *, actor: User, allocation: RightsAllocation, organisation: Organisation
) -> RightsAllocation:
    """Approve a proposal for ``organisation`` (its admin); the last approval puts it in force.

    :raises AllocationStateConflict: not pending. :raises AllocationNotFound: not a holder.
    """
    require_role(actor, organisation, Role.ADMIN)
    locked = _locked_proposal(allocation)
    share = _share_for(locked, organisation)
    if share.approved_at is None:
        share.approved_at = timezone.now()
        share.approved_by = actor
        share.save(update_fields=["approved_at", "approved_by"])
        _audit("marketplace.rights_approve", locked, actor, holder=organisation.pk)
    _maybe_in_force(locked, actor)
    return locked


@transaction.atomic
def allocation_reject(
    *, actor: User, allocation: RightsAllocation, organisation: Organisation
) -> RightsAllocation:
    """Reject a pending proposal (an admin of a holder, or the proposing provider withdrawing it)."""
    require_role(actor, organisation, Role.ADMIN)
    locked = _locked_proposal(allocation)
    if organisation.pk != locked.version.dataset.owner_id:
        _share_for(locked, organisation)
    locked.state = AllocationState.REJECTED
    locked.save(update_fields=["state"])
    _audit("marketplace.rights_reject", locked, actor, holder=organisation.pk)
    return locked


# --- value-weighted shares (issue 15): from the owner's latest valuation ------------------------


def _no_value(detail: str, code: str) -> AllocationInvalid:
    return AllocationInvalid(
        detail,
        code=f"marketplace.allocation_{code}",
        errors=[{"pointer": "/basis", "code": code, "detail": detail}],
    )


def value_shares(*, version: DatasetVersion) -> tuple[dict[int, int], ValuationSummary]:
    """Shares weighted by the latest valuation's per-contribution totals (exactly 10,000).

    Each contribution's total counts, a negative total as zero, summed per contributing
    organisation. Every contributing organisation keeps 1 basis point (the rule every proposal
    follows); the other 10,000 - n are split by value, largest remainder, exactly.

    :raises AllocationInvalid: a model-generated version (``/basis`` ``synthetic``), no valuation
        since sealing (``no_valuation``), a contributor the valuation did not report by itself
        (``unreported``), or no positive value.
    """
    outside = allocation_parties(version=version) - contributing_organisations(version=version)
    if outside:
        # A model-generated version's source holders contributed no records to it: a valuation of
        # its records cannot weigh them, and a proposal must name them (issue 17).
        raise _no_value(
            "This version was generated by a model: its shares name the source version's rights holders, "
            "whom a valuation of its records cannot weigh. Propose shares instead.",
            "synthetic",
        )
    summary = valuation_summary_latest(version=version)
    if summary is None:
        raise _no_value("This version has no valuation since it was sealed; value it first.", "no_valuation")
    values = contribution_values(summary)
    contributors = contributing_organisations(version=version)
    unreported = values.unreported & contributors
    if unreported:
        names = sorted(Organisation.objects.filter(pk__in=unreported).values_list("name", flat=True))
        raise _no_value(
            f"Valuation {summary.job_ref} does not report {', '.join(names)} by itself (fewer than "
            f"{summary.min_group} records); a value-weighted split would guess.",
            "unreported",
        )
    weights_exact = {org: values.by_organisation.get(org, Fraction(0)) for org in sorted(contributors)}
    if not any(weights_exact.values()):
        raise _no_value(f"Valuation {summary.job_ref} found no positive value to weigh by.", "no_value")
    # Integer weights in the exact proportions: scale by the common denominator.
    denominator = 1
    for weight in weights_exact.values():
        denominator = denominator * weight.denominator // gcd(denominator, weight.denominator)
    weights = {org: int(w * denominator) for org, w in weights_exact.items() if w > 0}
    shares = dict.fromkeys(weights_exact, 1)
    for org, bps in split(BASIS_POINTS - len(shares), weights, 0).parts.items():
        shares[org] += bps
    return shares, summary


@transaction.atomic
def allocation_propose_by_value(*, actor: User, version: DatasetVersion) -> RightsAllocation:
    """Propose :func:`value_shares` through the usual flow: the other holders approve as always."""
    require_role(actor, version.dataset.owner, Role.ADMIN)
    shares, summary = value_shares(version=version)
    return allocation_propose(
        actor=actor, version=version, shares=shares, basis=f"valuation {summary.job_ref}"
    )
