"""Catalog writes: listings on sealed versions, their preview, and offers with versioned terms.

Who may do what (docs/permissions.md): members of the provider create and edit
draft listings and the offers on them; admins publish, withdraw, approve the
preview and change anything on a published listing. Every state change is
audited in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from common.audit import audit_record
from common.exceptions import FieldError
from common.models import Membership, Organisation, Role, User
from common.permissions import role_at_least
from custody.models import DatasetVersion, Grant, GrantPurpose, VersionState
from custody.services import grant_stream_open, preview_strict_hits, system_grant
from marketplace.exceptions import (
    ListingInvalid,
    ListingStateConflict,
    NotFound,
    NotPermitted,
    OfferNotFound,
    PreviewUnsafe,
    VersionNotSealed,
)
from marketplace.models import Listing, ListingState, Offer, OfferState, OfferTerms
from marketplace.quotes import Price, price_validate
from marketplace.terms import terms_validate

__all__ = [
    "listing_create",
    "listing_publish",
    "listing_statistics",
    "listing_update",
    "listing_withdraw",
    "listings_withdraw_for_version",
    "offer_create",
    "offer_retire",
    "offer_terms_current",
    "offer_terms_update",
    "preview_approve",
    "preview_candidates",
    "preview_pick",
    "require_role",
]

# How many of the provider's first sealed records are offered as preview candidates.
PREVIEW_CANDIDATES = 40
PREVIEW_MAX_RECORDS = 5
PREVIEW_MAX_CHARS = 1200
TAG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
EDITABLE = ("title", "description", "domain_tags", "languages", "currency", "requires_approval")


def require_role(actor: User, organisation: Organisation, needed: str) -> None:
    """:raises NotFound: the actor is not a member. :raises NotPermitted: the role is too low."""
    membership = Membership.objects.filter(user=actor, organisation=organisation).first()
    if membership is None:
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    if not role_at_least(membership.role, needed):
        raise NotPermitted(
            f"This needs the '{needed}' role in {organisation.name}.", code="common.role_insufficient"
        )


def _editor_role(listing: Listing) -> str:
    # Members may draft; what trainers already see is for admins to change.
    return Role.MEMBER if listing.state == ListingState.DRAFT else Role.ADMIN


def _audit(action: str, listing: Listing, actor: User | None, **details: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        organisation=listing.provider,
        object_type="listing",
        object_id=listing.pk,
        details={"version": listing.version_id, **details},
    )


def _locked(listing: Listing) -> Listing:
    locked = (
        Listing.objects.select_for_update(of=("self",))
        .select_related("version__dataset", "provider")
        .get(pk=listing.pk)
    )
    if locked.state == ListingState.WITHDRAWN:
        raise ListingStateConflict(
            f"Listing {locked.pk} was withdrawn; it can no longer change.",
            code="marketplace.listing_withdrawn",
        )
    return locked


def _require_sealed(version: DatasetVersion) -> None:
    if version.state != VersionState.SEALED:
        raise VersionNotSealed(f"Version {version.pk} is {version.state}; only a sealed version is listed.")


# --- listing fields ---------------------------------------------------------------------


def _invalid(pointer: str, code: str, detail: str) -> ListingInvalid:
    errors: list[FieldError] = [{"pointer": pointer, "code": code, "detail": detail}]
    return ListingInvalid(detail, errors=errors)


def _string_list(value: object, pointer: str, pattern: re.Pattern[str], most: int) -> list[str]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list | tuple):
        raise _invalid(pointer, "invalid", "Expected a list of strings.")
    items: list[str] = []
    for index, item in enumerate(value):
        clean = str(item).strip().lower() if pattern is TAG else str(item).strip()
        if not isinstance(item, str) or not pattern.match(clean):
            raise _invalid(f"{pointer}/{index}", "invalid", f"{str(item)[:40]!r} is not allowed here.")
        if clean not in items:
            items.append(clean)
    if len(items) > most:
        raise _invalid(pointer, "too_many", f"At most {most}.")
    return items


def _clean_fields(changes: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in EDITABLE:
            raise _invalid(f"/{name}", "unknown_field", f"Unknown field {name!r}.")
        if name == "title":
            title = str(value or "").strip()
            if not 3 <= len(title) <= 200:
                raise _invalid("/title", "invalid", "A title of 3 to 200 characters.")
            clean[name] = title
        elif name == "description":
            if len(str(value or "")) > 20_000:
                raise _invalid("/description", "too_long", "At most 20,000 characters.")
            clean[name] = str(value or "")
        elif name == "domain_tags":
            clean[name] = _string_list(value, "/domain_tags", TAG, 12)
        elif name == "languages":
            clean[name] = _string_list(value, "/languages", LANGUAGE, 20)
        elif name == "currency":
            if not isinstance(value, str) or not CURRENCY.match(value):
                raise _invalid("/currency", "invalid", "An ISO 4217 code such as EUR.")
            clean[name] = value
        else:
            clean[name] = bool(value)
    return clean


def listing_statistics(version: DatasetVersion) -> dict[str, Any]:
    """Counts only (never record text), from the sealed version and its desensitization report."""
    report = getattr(version, "report", None)
    counts: dict[str, Any] = report.counts if report is not None else {}
    contributors = version.contributions.values("contributor").distinct().count()
    return {
        "records": version.records,
        "platform_tokens": version.tokens,
        "entities": dict(sorted((counts.get("entities") or {}).items())),
        "languages": dict(sorted((counts.get("languages") or {}).items())),
        "length_distribution": _length_buckets(counts.get("lengths") or {}),
        "findings": dict(sorted((report.findings_summary if report is not None else {}).items())),
        "contributors": contributors,
        "merkle_root": version.merkle_root,
        "sealed_at": version.sealed_at.isoformat() if version.sealed_at else None,
        "epsilon_cap": str(version.epsilon_cap) if version.epsilon_cap is not None else None,
    }


def _length_buckets(lengths: dict[str, int]) -> dict[str, int]:
    # Buckets are ">=N" (characters); keep them in numeric order.
    return dict(sorted(lengths.items(), key=lambda kv: int(kv[0].lstrip(">=") or 0)))


@transaction.atomic
def listing_create(*, actor: User, version: DatasetVersion, title: str, **fields: Any) -> Listing:
    """Draft a listing on a sealed version (a provider member), with its statistics.

    :raises VersionNotSealed, ListingInvalid, ListingStateConflict (``marketplace.listing_exists``).
    """
    version = (
        DatasetVersion.objects.select_for_update(of=("self",))
        .select_related("dataset__owner")
        .get(pk=version.pk)
    )
    require_role(actor, version.dataset.owner, Role.MEMBER)
    _require_sealed(version)
    clean = _clean_fields({"title": title, **fields})
    if Listing.objects.filter(version=version, kind="dataset").exclude(state=ListingState.WITHDRAWN).exists():
        raise ListingStateConflict(
            "This version already has a listing; edit that one.", code="marketplace.listing_exists"
        )
    statistics = listing_statistics(version)
    clean.setdefault("languages", sorted(k for k in statistics["languages"] if k != "other"))
    listing = Listing.objects.create(
        version=version, provider=version.dataset.owner, statistics=statistics, created_by=actor, **clean
    )
    _audit("marketplace.listing_create", listing, actor, title=listing.title)
    return listing


@transaction.atomic
def listing_update(*, actor: User, listing: Listing, **changes: Any) -> Listing:
    """Change a listing's description fields. :raises ListingStateConflict: withdrawn."""
    locked = _locked(listing)
    require_role(actor, locked.provider, _editor_role(locked))
    clean = _clean_fields(changes)
    if "currency" in clean and clean["currency"] != locked.currency and locked.offers.exists():
        raise ListingStateConflict(
            "The currency is fixed once the listing has offers.", code="marketplace.listing_currency_fixed"
        )
    for name, value in clean.items():
        setattr(locked, name, value)
    locked.save(update_fields=[*clean])
    _audit("marketplace.listing_update", locked, actor, fields=sorted(clean))
    return locked


@transaction.atomic
def listing_publish(*, actor: User, listing: Listing) -> Listing:
    """Put a draft listing in the catalog (an admin). :raises ListingStateConflict, VersionNotSealed."""
    locked = _locked(listing)
    require_role(actor, locked.provider, Role.ADMIN)
    if locked.state == ListingState.PUBLISHED:
        return locked
    _require_sealed(locked.version)
    if not locked.offers.filter(state=OfferState.ACTIVE).exists():
        raise ListingStateConflict("Add an offer before publishing.", code="marketplace.listing_no_offers")
    locked.state = ListingState.PUBLISHED
    locked.published_at = timezone.now()
    locked.save(update_fields=["state", "published_at"])
    _audit("marketplace.listing_publish", locked, actor)
    # Trainers see the rights holders from the start: the default allocation, if none is in force.
    from marketplace.services.rights import allocation_in_force

    allocation_in_force(version=locked.version)
    return locked


@transaction.atomic
def listing_withdraw(*, actor: User | None, listing: Listing, reason: str = "") -> Listing:
    """Take a listing out of the catalog for good (no new orders); idempotent.

    ``actor`` None is the platform (a takedown). :raises NotPermitted: not an admin.
    """
    locked = Listing.objects.select_for_update(of=("self",)).select_related("provider").get(pk=listing.pk)
    if actor is not None:
        require_role(actor, locked.provider, Role.ADMIN)
    if locked.state == ListingState.WITHDRAWN:
        return locked
    locked.state = ListingState.WITHDRAWN
    locked.withdrawn_at = timezone.now()
    locked.withdraw_reason = reason[:300]
    locked.save(update_fields=["state", "withdrawn_at", "withdraw_reason"])
    _audit("marketplace.listing_withdraw", locked, actor, reason=reason[:300])
    return locked


def listings_withdraw_for_version(*, version_id: int, reason: str) -> int:
    """Withdraw every live listing of a version (a takedown, by the platform); returns how many."""
    withdrawn = 0
    for listing in Listing.objects.filter(version_id=version_id).exclude(state=ListingState.WITHDRAWN):
        listing_withdraw(actor=None, listing=listing, reason=reason)
        withdrawn += 1
    return withdrawn


# --- preview --------------------------------------------------------------------------------


def _preview_grant(version: DatasetVersion) -> Grant:
    # The platform's own grant for the preview purpose: reading through it goes through
    # custody's stream, which checks and audits the open.
    return system_grant(version, GrantPurpose.PREVIEW)


def _own_records(listing: Listing, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` desensitized records the provider itself contributed (decrypted, audited)."""
    version = listing.version
    _require_sealed(version)
    ranges = [
        (s.first_record, s.first_record + s.records)
        for s in version.shards.filter(contribution__contributor=listing.provider_id)
    ]
    if not ranges:
        return []
    stream = grant_stream_open(
        grant=_preview_grant(version), consumer_ref=f"listing-{listing.pk}", purpose=GrantPurpose.PREVIEW
    )
    found: list[dict[str, Any]] = []
    for batch in stream:
        for record in batch:
            if any(lo <= record["id"] < hi for lo, hi in ranges):
                text = {k: str(v)[:PREVIEW_MAX_CHARS] for k, v in record["text"].items()}
                found.append({"record_id": record["id"], "text": text, "lang": record.get("lang", "")})
        if len(found) >= limit:
            break
    return found[:limit]


def preview_candidates(*, actor: User, listing: Listing) -> list[dict[str, Any]]:
    """Desensitized records the provider may choose its preview from (its own view of its data)."""
    require_role(actor, listing.provider, Role.MEMBER)
    return _own_records(listing, PREVIEW_CANDIDATES)


def _preview_digest(preview: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(preview, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def preview_pick(*, actor: User, listing: Listing, record_ids: Sequence[int]) -> Listing:
    """Choose the preview records (desensitized text, read again from custody); needs a new approval.

    :raises ListingInvalid: too many, or ids outside the candidates. :raises ListingStateConflict.
    """
    ids = list(dict.fromkeys(record_ids))
    if len(ids) > PREVIEW_MAX_RECORDS:
        raise _invalid("/record_ids", "too_many", f"At most {PREVIEW_MAX_RECORDS} preview records.")
    require_role(actor, listing.provider, _editor_role(listing))
    chosen: list[dict[str, Any]] = []
    if ids:
        candidates = {c["record_id"]: c for c in _own_records(listing, PREVIEW_CANDIDATES)}
        unknown = [i for i in ids if i not in candidates]
        if unknown:
            raise _invalid(
                "/record_ids", "not_a_candidate", f"Records {unknown[:5]} are not preview candidates."
            )
        chosen = [candidates[i] for i in ids]
    with transaction.atomic():
        locked = _locked(listing)
        require_role(actor, locked.provider, _editor_role(locked))
        locked.preview = chosen
        locked.preview_approved_at = None
        locked.preview_approved_by = None
        locked.save(update_fields=["preview", "preview_approved_at", "preview_approved_by"])
        _audit("marketplace.preview_pick", locked, actor, record_ids=ids, digest=_preview_digest(chosen))
    return locked


def _preview_hits(listing: Listing) -> list[tuple[int, FieldError]]:
    """What the strict detector finds in the picked preview: a record id and field error per hit field."""
    cells = [
        (i, p, field, str(text)) for i, p in enumerate(listing.preview) for field, text in p["text"].items()
    ]
    hits = preview_strict_hits(version=listing.version, texts=[c[3] for c in cells])
    errors: list[tuple[int, FieldError]] = []
    for (i, record, field, _), found in zip(cells, hits, strict=True):
        if not found:
            continue
        kinds = sorted({h.entity_type for h in found})
        where = ", ".join(f"{h.entity_type} at characters {h.start}-{h.end}" for h in found[:5])
        detail = (
            f"Preview record {record['record_id']} (field {field}) may still hold "
            f"{' and '.join(kinds)}: {where}."
        )
        errors.append(
            (
                record["record_id"],
                {"pointer": f"/preview/{i}/text/{field}", "code": "entity_found", "detail": detail},
            )
        )
    return errors


def preview_approve(*, actor: User, listing: Listing) -> Listing:
    """Approve the picked preview for trainers to see (an admin), if the strict detector finds nothing.

    :raises PreviewUnsafe: a preview record may still hold personal data (drop it: pick again).
    :raises ListingStateConflict: no preview picked, the listing was withdrawn, or the
        preview changed while it was checked.
    """
    require_role(actor, listing.provider, Role.ADMIN)
    checked = Listing.objects.select_related("version__dataset").get(pk=listing.pk)
    if checked.preview:
        # Outside the row lock: the first scan in a process loads the detector (seconds).
        hits = _preview_hits(checked)
        if hits:
            records = sorted({record_id for record_id, _ in hits})
            raise PreviewUnsafe(
                f"The strict detector found what may be personal data in preview record"
                f"{'s' if len(records) > 1 else ''} {', '.join(map(str, records))}. "
                + " ".join(e["detail"] for _, e in hits)
                + " Drop these records from the preview (pick again without them), then approve.",
                errors=[e for _, e in hits],
            )
    with transaction.atomic():
        locked = _locked(listing)
        require_role(actor, locked.provider, Role.ADMIN)
        if not locked.preview:
            raise ListingStateConflict("Pick the preview records first.", code="marketplace.preview_empty")
        if _preview_digest(locked.preview) != _preview_digest(checked.preview):
            raise ListingStateConflict(
                "The preview changed while it was checked; approve it again.",
                code="marketplace.preview_changed",
            )
        locked.preview_approved_at = timezone.now()
        locked.preview_approved_by = actor
        locked.save(update_fields=["preview_approved_at", "preview_approved_by"])
        _audit(
            "marketplace.preview_approve",
            locked,
            actor,
            record_ids=[p["record_id"] for p in locked.preview],
            digest=_preview_digest(locked.preview),
        )
    return locked


# --- offers ---------------------------------------------------------------------------------


def offer_terms_current(offer: Offer) -> OfferTerms:
    """The offer's latest terms version. :raises OfferNotFound: the offer has no terms (never happens)."""
    prefetched: list[OfferTerms] | None = getattr(offer, "terms_newest_first", None)
    if prefetched:
        # Prefetched by ``offer_list_for_listing``: one query for every offer of a listing.
        return prefetched[0]
    terms = offer.terms_versions.select_related("offer__listing__version").order_by("-number").first()
    if terms is None:
        raise OfferNotFound(f"Offer {offer.pk} has no terms.")
    return terms


def _offer_name(name: object) -> str:
    clean = str(name or "").strip()
    if not 1 <= len(clean) <= 120:
        raise _invalid("/name", "invalid", "A name of 1 to 120 characters.")
    return clean


def _terms_row(offer: Offer, number: int, terms: dict[str, Any], price: Price, actor: User) -> OfferTerms:
    return OfferTerms.objects.create(
        offer=offer,
        number=number,
        terms=terms,
        price_model=price.model,
        unit_price=price.unit_price,
        period_days=price.period_days,
        created_by=actor,
    )


def _terms_details(row: OfferTerms) -> dict[str, Any]:
    return {
        "offer": row.offer_id,
        "terms_number": row.number,
        "terms": row.terms,
        "price": {"model": row.price_model, "unit_price": row.unit_price, "period_days": row.period_days},
    }


@transaction.atomic
def offer_create(*, actor: User, listing: Listing, name: str, terms: Any, price: Any) -> Offer:
    """Add an offer (terms v1 and price) to a listing.

    :raises TermsInvalid, PriceInvalid, ListingInvalid (422), VersionNotSealed, ListingStateConflict (409).
    """
    locked = _locked(listing)
    require_role(actor, locked.provider, _editor_role(locked))
    _require_sealed(locked.version)
    clean_name = _offer_name(name)
    clean_terms = terms_validate(terms, version=locked.version)
    clean_price = price_validate(price, currency=locked.currency)
    offer = Offer.objects.create(
        listing=locked, name=clean_name, max_licenses=clean_terms["constraint"]["max_licenses"]
    )
    row = _terms_row(offer, 1, clean_terms, clean_price, actor)
    _audit("marketplace.offer_create", locked, actor, name=clean_name, **_terms_details(row))
    return offer


@transaction.atomic
def offer_terms_update(
    *, actor: User, offer: Offer, terms: Any, price: Any, name: str | None = None
) -> OfferTerms:
    """Append a new terms version (the old one stays for the orders that bought it)."""
    locked_offer = Offer.objects.select_for_update().get(pk=offer.pk)
    listing = _locked(locked_offer.listing)
    require_role(actor, listing.provider, _editor_role(listing))
    if locked_offer.state != OfferState.ACTIVE:
        raise ListingStateConflict("A retired offer cannot change.", code="marketplace.offer_retired")
    _require_sealed(listing.version)
    clean_terms = terms_validate(terms, version=listing.version)
    clean_price = price_validate(price, currency=listing.currency)
    fields = ["max_licenses"]
    locked_offer.max_licenses = clean_terms["constraint"]["max_licenses"]
    if name is not None:
        locked_offer.name = _offer_name(name)
        fields.append("name")
    locked_offer.save(update_fields=fields)
    number = (locked_offer.terms_versions.aggregate(n=Max("number"))["n"] or 0) + 1
    row = _terms_row(locked_offer, number, clean_terms, clean_price, actor)
    _audit("marketplace.offer_terms_update", listing, actor, **_terms_details(row))
    return row


@transaction.atomic
def offer_retire(*, actor: User, offer: Offer) -> Offer:
    """Stop selling an offer; licenses already sold keep their terms. Idempotent."""
    locked_offer = Offer.objects.select_for_update().get(pk=offer.pk)
    listing = Listing.objects.select_related("provider").get(pk=locked_offer.listing_id)
    require_role(actor, listing.provider, _editor_role(listing))
    if locked_offer.state == OfferState.RETIRED:
        return locked_offer
    locked_offer.state = OfferState.RETIRED
    locked_offer.save(update_fields=["state"])
    _audit("marketplace.offer_retire", listing, actor, offer=locked_offer.pk)
    return locked_offer
