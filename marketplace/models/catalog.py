"""The catalog: listings on sealed versions, their offers (versioned terms and price) and rights.

A listing sells licenses to train on one sealed ``DatasetVersion``; it never
holds custody text except the preview excerpt its provider approved. An
offer's terms and price are versioned: editing an offer appends an
``OfferTerms`` row, and an order pins the row it bought. Rights allocations
are versioned the same way, per dataset version: the one in force at a sale
is frozen into that sale.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.models import Organisation, User
from common.public_ids import PublicIdField
from custody.models import DatasetVersion

__all__ = [
    "AllocationState",
    "Listing",
    "ListingState",
    "Offer",
    "OfferState",
    "OfferTerms",
    "PriceModel",
    "RightsAllocation",
    "RightsShare",
]


class ListingState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Listing(models.Model):
    """What a trainer sees in the catalog: one sealed version, described and priced by its offers."""

    public_id = PublicIdField(prefix="lst")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="listings")
    # The organisation that owns the dataset (the provider); only it edits the listing.
    provider = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="listings")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    domain_tags = models.JSONField(default=list)
    languages = models.JSONField(default=list)
    # ISO 4217; every offer on the listing is priced in it (one currency per listing).
    currency = models.CharField(max_length=3, default="EUR")
    # Orders wait for the provider's approval (pending -> approved / rejected).
    requires_approval = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=ListingState.choices, default=ListingState.DRAFT)
    # Statistics computed from custody's report when the listing is created (no record text).
    statistics = models.JSONField(default=dict)
    # Desensitized records the provider picked and approved; the only custody text a trainer sees.
    preview = models.JSONField(default=list)
    preview_approved_at = models.DateTimeField(null=True, blank=True)
    preview_approved_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdraw_reason = models.CharField(max_length=300, blank=True)
    # "dataset" (a license to train on ``version``) or "model" (issue 16: a license to use the
    # custody model ``model_ref``, a job_… trained on ``version``; marketplace/services/model_listings.py).
    kind = models.CharField(max_length=16, default="dataset")
    model_ref = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["state", "-published_at"])]

    def __str__(self) -> str:
        return self.title


class OfferState(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class Offer(models.Model):
    """One way to license a listing; its terms and price live in versioned ``OfferTerms`` rows."""

    public_id = PublicIdField(prefix="ofr")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="offers")
    name = models.CharField(max_length=120)
    state = models.CharField(max_length=16, choices=OfferState.choices, default=OfferState.ACTIVE)
    # Exclusivity: at most this many licenses (live or held by a pending order); None = unlimited.
    max_licenses = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} on {self.listing_id}"


class PriceModel(models.TextChoices):
    FIXED = "fixed", "Fixed per license"
    METERED = "metered", "Per million platform tokens (with a cap)"
    PERIOD = "period", "Per period"


class OfferTerms(models.Model):
    """One version of an offer's license terms and price; never edited, only superseded."""

    public_id = PublicIdField(prefix="trm")
    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="terms_versions")
    number = models.PositiveIntegerField()
    # The machine-readable license (marketplace/terms.py holds its JSON Schema).
    terms = models.JSONField()
    price_model = models.CharField(max_length=16, choices=PriceModel.choices)
    # Minor units. Fixed: per license. Metered: per million platform tokens. Period: per period.
    unit_price = models.BigIntegerField()
    # Period pricing: the period's length in days.
    period_days = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["offer", "number"], name="offerterms_unique_number"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="offerterms_price_not_negative"),
            models.CheckConstraint(
                condition=~Q(price_model="period") | Q(period_days__gte=1),
                name="offerterms_period_has_days",
            ),
        ]

    def __str__(self) -> str:
        return f"offer {self.offer_id} terms v{self.number}"


class AllocationState(models.TextChoices):
    PROPOSED = "proposed", "Proposed (awaiting approvals)"
    IN_FORCE = "in_force", "In force"
    SUPERSEDED = "superseded", "Superseded"
    REJECTED = "rejected", "Rejected"


class RightsAllocation(models.Model):
    """Who holds the rights to a sealed version, in basis points; versioned per dataset version.

    At most one allocation per version is in force; a sale freezes the one in
    force (its id and shares) into the order.
    """

    public_id = PublicIdField(prefix="alc")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="allocations")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=AllocationState.choices)
    # True when derived from the contributions (platform tokens contributed).
    from_contributions = models.BooleanField(default=False)
    # What a proposal's shares were computed from, when not typed in: "valuation job_…" (issue 15).
    basis = models.CharField(max_length=80, blank=True, default="")
    proposed_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    in_force_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "number"], name="rightsallocation_unique_number"),
            models.UniqueConstraint(
                fields=["version"], condition=Q(state="in_force"), name="rightsallocation_one_in_force"
            ),
        ]

    def __str__(self) -> str:
        return f"allocation v{self.number} of version {self.version_id}"


class RightsShare(models.Model):
    """One holder's share of an allocation, and (for a proposal) whether that holder approved it."""

    allocation = models.ForeignKey(RightsAllocation, on_delete=models.PROTECT, related_name="shares")
    holder = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="rights_shares")
    basis_points = models.PositiveIntegerField()
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["allocation", "holder"], name="rightsshare_unique_holder"),
            models.CheckConstraint(
                condition=Q(basis_points__gte=1, basis_points__lte=10_000), name="rightsshare_bps_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.holder_id}: {self.basis_points} bps"
