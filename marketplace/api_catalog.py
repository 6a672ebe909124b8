"""Catalog API: search and read listings, quotes, Croissant; providers edit listings, offers, rights.

Reads need the ``read`` scope; writes the ``provide`` scope. Another
organisation's draft listing answers 404; the provider's wrong role 403.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.fields import MinorField, MoneyField, StrictIntegerField
from common.api.idempotency import idempotent_post
from common.api.ids import PublicIdField
from common.api.views import SealroomApi, SealroomListApi, request_user
from common.exceptions import FieldError
from common.models import Organisation, Role, Scope
from common.money import major_amount
from common.numbers import parse_integer
from common.permissions import acting_organisation
from common.public_ids import example, is_public_id
from custody.selectors import version_get_for_org
from marketplace import selectors_catalog as selectors
from marketplace.croissant import croissant_document
from marketplace.exceptions import AllocationInvalid, ListingInvalid, ListingStateConflict, QuoteInvalid
from marketplace.models import (
    Listing,
    ListingState,
    Offer,
    OfferState,
    OfferTerms,
    PriceModel,
    RightsAllocation,
)
from marketplace.quotes import quote
from marketplace.services import catalog, rights
from marketplace.terms import TERMS_SCHEMA, terms_plain

# --- output --------------------------------------------------------------------------------


class TermsVersionSerializer(serializers.Serializer):
    id = PublicIdField(prefix="trm", source="public_id")
    number = serializers.IntegerField()
    terms = serializers.JSONField()
    plain = serializers.SerializerMethodField()
    price = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_plain(self, obj: OfferTerms) -> list[str]:
        return terms_plain(obj.terms)

    def get_price(self, obj: OfferTerms) -> dict[str, Any]:
        # The listing's currency: from the context when the caller has the listing at hand.
        currency = self.context.get("currency") or obj.offer.listing.currency
        return {
            "model": obj.price_model,
            "unit_price": major_amount(obj.unit_price, currency),
            "unit_price_minor": obj.unit_price,
            "currency": currency,
            "period_days": obj.period_days,
        }


class OfferSerializer(serializers.Serializer):
    id = PublicIdField(prefix="ofr", source="public_id")
    listing_id = PublicIdField(prefix="lst", source="listing.public_id")
    name = serializers.CharField()
    state = serializers.CharField()
    max_licenses = serializers.IntegerField(allow_null=True)
    current = serializers.SerializerMethodField()

    def get_current(self, obj: Offer) -> dict[str, Any]:
        context = {"currency": obj.listing.currency}
        return dict(TermsVersionSerializer(catalog.offer_terms_current(obj), context=context).data)


class ShareSerializer(serializers.Serializer):
    holder_id = PublicIdField(prefix="org", source="holder.public_id")
    holder_name = serializers.CharField(source="holder.name")
    basis_points = serializers.IntegerField()
    approved_at = serializers.DateTimeField(allow_null=True)


class AllocationSerializer(serializers.Serializer):
    id = PublicIdField(prefix="alc", source="public_id")
    version_id = PublicIdField(prefix="dsv", source="version.public_id")
    number = serializers.IntegerField()
    state = serializers.CharField()
    from_contributions = serializers.BooleanField()
    basis = serializers.CharField(help_text="What the shares were computed from, e.g. 'valuation job_…'")
    created_at = serializers.DateTimeField()
    in_force_at = serializers.DateTimeField(allow_null=True)
    shares = ShareSerializer(many=True)


class ListingSummarySerializer(serializers.Serializer):
    id = PublicIdField(prefix="lst", source="public_id")
    title = serializers.CharField()
    provider_id = PublicIdField(prefix="org", source="provider.public_id")
    provider_name = serializers.CharField(source="provider.name")
    version_id = PublicIdField(prefix="dsv", source="version.public_id")
    state = serializers.CharField()
    domain_tags = serializers.ListField(child=serializers.CharField())
    languages = serializers.ListField(child=serializers.CharField())
    currency = serializers.CharField()
    records = serializers.IntegerField(source="statistics.records", default=0)
    platform_tokens = serializers.IntegerField(source="statistics.platform_tokens", default=0)
    published_at = serializers.DateTimeField(allow_null=True)
    offers = serializers.SerializerMethodField(
        help_text="The listing's active offers, each with its current terms and price (quote or order one)"
    )

    @extend_schema_field(OfferSerializer(many=True))
    def get_offers(self, obj: Listing) -> list[dict[str, Any]]:
        # The list prefetches them (``with_active_offers``); a lone listing reads them here.
        offers = getattr(obj, "active_offers", None)
        if offers is None:
            offers = selectors.offer_list_for_listing(listing=obj)
        return [dict(OfferSerializer(o).data) for o in offers]


def with_active_offers(listings: QuerySet[Listing]) -> QuerySet[Listing]:
    """Prefetch each listing's active offers and their terms (newest first): a constant number of queries."""
    newest_first = OfferTerms.objects.order_by("-number")
    active = (
        Offer.objects.filter(state=OfferState.ACTIVE)
        .prefetch_related(Prefetch("terms_versions", queryset=newest_first, to_attr="terms_newest_first"))
        .order_by("pk")
    )
    return listings.prefetch_related(Prefetch("offers", queryset=active, to_attr="active_offers"))


class ListingSerializer(ListingSummarySerializer):
    description = serializers.CharField()
    requires_approval = serializers.BooleanField()
    statistics = serializers.JSONField()
    preview = serializers.SerializerMethodField()
    preview_approved_at = serializers.DateTimeField(allow_null=True)
    offers = serializers.SerializerMethodField()
    rights_holders = serializers.SerializerMethodField()
    croissant_url = serializers.SerializerMethodField()
    withdrawn_at = serializers.DateTimeField(allow_null=True)

    def _is_provider(self, obj: Listing) -> bool:
        return bool(self.context.get("organisation_id") == obj.provider_id)

    def get_preview(self, obj: Listing) -> list[dict[str, Any]]:
        # Trainers see only an approved preview; the provider sees its pick before approval too.
        if obj.preview_approved_at is not None or self._is_provider(obj):
            return list(obj.preview)
        return []

    def get_offers(self, obj: Listing) -> list[dict[str, Any]]:
        offers = selectors.offer_list_for_listing(listing=obj, include_retired=self._is_provider(obj))
        return [dict(OfferSerializer(o).data) for o in offers]

    def get_rights_holders(self, obj: Listing) -> list[dict[str, Any]]:
        if obj.state != ListingState.PUBLISHED and not self._is_provider(obj):
            return []
        allocation = rights.allocation_in_force(version=obj.version)
        return [dict(ShareSerializer(s).data) for s in allocation.shares.select_related("holder")]

    def get_croissant_url(self, obj: Listing) -> str:
        return reverse("api-catalog-listing-croissant", kwargs={"listing_id": obj.public_id})


def _context(request: Request) -> dict[str, Any]:
    organisation = acting_organisation(request)
    return {"organisation_id": organisation.pk if organisation else None}


def _listing_out(request: Request, listing: Listing, status: int = 200) -> Response:
    return Response(ListingSerializer(listing, context=_context(request)).data, status=status)


# --- public -------------------------------------------------------------------------------


class TermsSchemaApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The JSON Schema of license terms documents")
    def get(self, request: Request) -> Response:
        return Response(TERMS_SCHEMA)


# --- listings -------------------------------------------------------------------------------


class ListingQuerySerializer(serializers.Serializer):
    """The catalog search's query parameters: text without NUL bytes, a provider id that fits a bigint."""

    q = serializers.CharField(required=False, allow_blank=True, max_length=200)
    tag = serializers.CharField(required=False, allow_blank=True, max_length=100)
    language = serializers.CharField(required=False, allow_blank=True, max_length=35)
    price_model = serializers.ChoiceField(choices=PriceModel.choices, required=False, allow_blank=True)
    provider = PublicIdField(prefix="org", required=False)
    mine = serializers.BooleanField(required=False, default=False)


class ListingListCreateApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.PROVIDE}
    required_roles = {"POST": Role.MEMBER}
    serializer_class = ListingSummarySerializer
    # 422: a query parameter that does not parse (a provider id in other digits, a NUL byte).
    problem_statuses = (409, 422)

    class InputSerializer(serializers.Serializer):
        version_id = PublicIdField(prefix="dsv")
        title = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True)
        domain_tags = serializers.ListField(child=serializers.CharField(), required=False)
        languages = serializers.ListField(child=serializers.CharField(), required=False)
        currency = serializers.CharField(required=False)
        requires_approval = serializers.BooleanField(required=False)

    def get_queryset(self) -> QuerySet[Listing]:
        query = ListingQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        organisation = acting_organisation(self.request)
        if params["mine"]:
            if organisation is None:
                return Listing.objects.none()
            return with_active_offers(selectors.listing_list_for_provider(organisation=organisation))
        filters = selectors.CatalogFilters(
            q=params.get("q", ""),
            tag=params.get("tag", ""),
            language=params.get("language", ""),
            price_model=params.get("price_model", ""),
            provider_id=params.get("provider"),
        )
        return with_active_offers(selectors.listing_search(filters=filters))

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Full-text search (title, tags, description)"),
            OpenApiParameter("tag", str, description="A domain tag"),
            OpenApiParameter("language", str, description="A language code (ISO 639-1)"),
            OpenApiParameter("price_model", str, enum=["fixed", "metered", "period"]),
            OpenApiParameter("provider", str, description=f"A provider organisation's id ({example('org')})"),
            OpenApiParameter("mine", bool, description="Your organisation's own listings, in any state"),
        ],
        summary="Search the catalog (published listings)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses={201: ListingSerializer}, summary="Draft a listing")
    @idempotent_post("listings.create")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        organisation = acting_organisation(request)
        assert organisation is not None  # OrgRoleRequired checked the membership
        version = version_get_for_org(
            organisation=organisation, version_id=fields.pop("version_id"), owner_only=True
        )
        listing = catalog.listing_create(actor=request_user(request), version=version, **fields)
        return _listing_out(request, listing, 201)


class ListingDetailApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.PROVIDE}
    required_roles = {"PATCH": Role.MEMBER}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(required=False, allow_blank=True)
        domain_tags = serializers.ListField(child=serializers.CharField(), required=False)
        languages = serializers.ListField(child=serializers.CharField(), required=False)
        currency = serializers.CharField(required=False)
        requires_approval = serializers.BooleanField(required=False)

    @extend_schema(responses=ListingSerializer, summary="A listing: statistics, preview, offers, rights")
    def get(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_visible(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        return _listing_out(request, listing)

    @extend_schema(request=InputSerializer, responses=ListingSerializer, summary="Edit a listing")
    def patch(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_for_provider(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        unknown = (
            sorted(set(request.data) - set(self.InputSerializer().fields))
            if isinstance(request.data, dict)
            else []
        )
        if unknown:
            errors: list[FieldError] = [
                {"pointer": f"/{u}", "code": "unknown_field", "detail": "Unknown field."} for u in unknown
            ]
            raise ListingInvalid(f"Unknown field {unknown[0]!r}.", errors=errors)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        listing = catalog.listing_update(actor=request_user(request), listing=listing, **data.validated_data)
        return _listing_out(request, listing)


class _ProviderListingAction(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)

    def listing(self, request: Request, listing_id: int) -> Listing:
        return selectors.listing_get_for_provider(
            organisation=acting_organisation(request), listing_id=listing_id
        )


class ListingPublishApi(_ProviderListingAction):
    @extend_schema(request=None, responses=ListingSerializer, summary="Publish a draft listing (admin)")
    def post(self, request: Request, listing_id: int) -> Response:
        listing = catalog.listing_publish(
            actor=request_user(request), listing=self.listing(request, listing_id)
        )
        return _listing_out(request, listing)


class ListingWithdrawApi(_ProviderListingAction):
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses=ListingSerializer, summary="Withdraw a listing (admin)")
    def post(self, request: Request, listing_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        listing = catalog.listing_withdraw(
            actor=request_user(request),
            listing=self.listing(request, listing_id),
            reason=data.validated_data["reason"],
        )
        return _listing_out(request, listing)


class ListingCroissantApi(SealroomApi):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="Croissant 1.1 metadata (JSON-LD) of a listing")
    def get(self, request: Request, listing_id: int) -> HttpResponse:
        listing = selectors.listing_get_visible(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        document = croissant_document(
            listing,
            listing_url=request.build_absolute_uri(
                reverse("marketplace:listing", kwargs={"listing_id": listing.public_id})
            ),
            terms_schema_url=request.build_absolute_uri(reverse("api-catalog-terms-schema")),
        )
        response = HttpResponse(
            json.dumps(document, indent=2, ensure_ascii=False), content_type="application/ld+json"
        )
        response["Content-Disposition"] = f'attachment; filename="listing-{listing.public_id}-croissant.json"'
        return response


# --- preview --------------------------------------------------------------------------------


class PreviewCandidatesApi(SealroomApi):
    required_roles = {"GET": Role.MEMBER}
    problem_statuses = (409,)

    class OutputSerializer(serializers.Serializer):
        record_id = serializers.IntegerField()
        text = serializers.DictField(child=serializers.CharField())
        lang = serializers.CharField(allow_blank=True)

    @extend_schema(
        responses=OutputSerializer(many=True),
        summary="Your desensitized records to pick the preview from (audited)",
    )
    def get(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_for_provider(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        candidates = catalog.preview_candidates(actor=request_user(request), listing=listing)
        return Response(self.OutputSerializer(candidates, many=True).data)


class PreviewPickApi(SealroomApi):
    required_scopes = {"PUT": Scope.PROVIDE}
    required_roles = {"PUT": Role.MEMBER}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        record_ids = serializers.ListField(child=StrictIntegerField(min_value=0), max_length=50)

    @extend_schema(request=InputSerializer, responses=ListingSerializer, summary="Pick the preview records")
    def put(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_for_provider(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        listing = catalog.preview_pick(
            actor=request_user(request), listing=listing, record_ids=data.validated_data["record_ids"]
        )
        return _listing_out(request, listing)


class PreviewApproveApi(_ProviderListingAction):
    @extend_schema(request=None, responses=ListingSerializer, summary="Approve the preview (admin)")
    def post(self, request: Request, listing_id: int) -> Response:
        listing = catalog.preview_approve(
            actor=request_user(request), listing=self.listing(request, listing_id)
        )
        return _listing_out(request, listing)


# --- offers ---------------------------------------------------------------------------------


class _TermsInput(serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False)
    # Validated by the JSON Schema in marketplace.terms (pointers under /terms).
    terms = serializers.JSONField()
    price = serializers.JSONField(
        help_text='{"model": "fixed"|"metered"|"period", "unit_price": "150.00" (a decimal string in the '
        'listing currency\'s major units), "period_days"}'
    )


class OfferCreateApi(_ProviderListingAction):
    class InputSerializer(_TermsInput):
        name = serializers.CharField(max_length=120)

    @extend_schema(request=InputSerializer, responses={201: OfferSerializer}, summary="Add an offer")
    @idempotent_post("offers.create")
    def post(self, request: Request, listing_id: int) -> Response:
        listing = self.listing(request, listing_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        offer = catalog.offer_create(actor=request_user(request), listing=listing, **data.validated_data)
        return Response(OfferSerializer(offer).data, status=201)


class OfferDetailApi(SealroomApi):
    class OutputSerializer(OfferSerializer):
        versions = serializers.SerializerMethodField()

        def get_versions(self, obj: Offer) -> list[dict[str, Any]]:
            context = {"currency": obj.listing.currency}
            return [
                dict(TermsVersionSerializer(t, context=context).data)
                for t in selectors.offer_terms_history(offer=obj)
            ]

    @extend_schema(responses=OutputSerializer, summary="An offer, with every version of its terms")
    def get(self, request: Request, offer_id: int) -> Response:
        offer = selectors.offer_get_visible(organisation=acting_organisation(request), offer_id=offer_id)
        return Response(self.OutputSerializer(offer).data)


class OfferTermsApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)

    @extend_schema(
        request=_TermsInput, responses={201: TermsVersionSerializer}, summary="Publish new terms for an offer"
    )
    @idempotent_post("offers.terms")
    def post(self, request: Request, offer_id: int) -> Response:
        offer = selectors.offer_get_for_provider(organisation=acting_organisation(request), offer_id=offer_id)
        data = _TermsInput(data=request.data)
        data.is_valid(raise_exception=True)
        row = catalog.offer_terms_update(actor=request_user(request), offer=offer, **data.validated_data)
        return Response(TermsVersionSerializer(row).data, status=201)


class OfferRetireApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    required_roles = {"POST": Role.MEMBER}

    @extend_schema(request=None, responses=OfferSerializer, summary="Stop selling an offer")
    def post(self, request: Request, offer_id: int) -> Response:
        offer = selectors.offer_get_for_provider(organisation=acting_organisation(request), offer_id=offer_id)
        return Response(OfferSerializer(catalog.offer_retire(actor=request_user(request), offer=offer)).data)


def _usage_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    value = parse_integer(raw)
    if value is None:
        raise QuoteInvalid(
            f"{name} must be an integer (ASCII digits).",
            code=f"marketplace.quote_{name}_invalid",
            errors=[{"pointer": f"/{name}", "code": "invalid", "detail": "Expected an integer."}],
        )
    return value


class OfferQuoteApi(SealroomApi):
    problem_statuses = (409,)

    class OutputSerializer(serializers.Serializer):
        offer_id = PublicIdField(prefix="ofr")
        terms_number = serializers.IntegerField()
        amount = MoneyField()
        amount_minor = MinorField(source="amount")
        escrow = MoneyField(help_text="Escrowed when ordering (major units)")
        escrow_minor = MinorField(source="escrow")
        currency = serializers.CharField()
        price_model = serializers.CharField()
        breakdown = serializers.CharField()

    @extend_schema(
        parameters=[
            OpenApiParameter("tokens", int, description="Platform tokens (metered; default: the cap)"),
            OpenApiParameter("periods", int, description="Periods (per-period price; default 1)"),
        ],
        responses=OutputSerializer,
        summary="What a usage would cost under the offer's current terms",
    )
    def get(self, request: Request, offer_id: int) -> Response:
        offer = selectors.offer_get_visible(organisation=acting_organisation(request), offer_id=offer_id)
        if offer.state != OfferState.ACTIVE:
            raise ListingStateConflict(
                "This offer was retired; it is no longer sold.", code="marketplace.offer_retired"
            )
        row = catalog.offer_terms_current(offer)
        result = quote(row, tokens=_usage_param(request, "tokens"), periods=_usage_param(request, "periods"))
        data = {"offer_id": offer.public_id, "terms_number": row.number, **result.__dict__}
        return Response(self.OutputSerializer(data).data)


# --- rights ---------------------------------------------------------------------------------


class ListingRightsApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.PROVIDE}
    required_roles = {"POST": Role.ADMIN}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        shares = serializers.DictField(
            child=serializers.JSONField(),
            required=False,
            help_text=f"Organisation id ({example('org')}) -> basis points (sum 10,000)",
        )
        basis = serializers.ChoiceField(
            choices=["shares", "valuation"],
            default="shares",
            help_text="shares: the shares given; valuation: computed from the latest valuation (no shares)",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if attrs["basis"] == "valuation" and "shares" in attrs:
                raise serializers.ValidationError(
                    {"shares": "Leave shares out: the valuation computes them."}
                )
            if attrs["basis"] == "shares" and "shares" not in attrs:
                raise serializers.ValidationError({"shares": "This field is required."})
            return attrs

    class OutputSerializer(serializers.Serializer):
        in_force = AllocationSerializer()
        allocations = AllocationSerializer(many=True)

    def _data(self, listing: Listing) -> dict[str, Any]:
        in_force = rights.allocation_in_force(version=listing.version)
        return {
            "in_force": in_force,
            "allocations": selectors.allocation_list_for_version(version_id=listing.version_id),
        }

    @extend_schema(responses=OutputSerializer, summary="Rights holders of the listed version, with history")
    def get(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_visible(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        return Response(self.OutputSerializer(self._data(listing)).data)

    @extend_schema(request=InputSerializer, responses={201: AllocationSerializer}, summary="Propose shares")
    @idempotent_post("rights.propose")
    def post(self, request: Request, listing_id: int) -> Response:
        listing = selectors.listing_get_for_provider(
            organisation=acting_organisation(request), listing_id=listing_id
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["basis"] == "valuation":
            allocation = rights.allocation_propose_by_value(
                actor=request_user(request), version=listing.version
            )
            return Response(AllocationSerializer(allocation).data, status=201)
        _holders_are_public_ids(data.validated_data["shares"])
        allocation = rights.allocation_propose(
            actor=request_user(request), version=listing.version, shares=data.validated_data["shares"]
        )
        return Response(AllocationSerializer(allocation).data, status=201)


def _holders_are_public_ids(shares: dict[str, Any]) -> None:
    """:raises AllocationInvalid: a holder is not an organisation's public id (an integer key, say)."""
    for holder in shares:
        if not is_public_id(holder, "org"):
            detail = f"Expected an organisation id like '{example('org')}'."
            raise AllocationInvalid(
                "Holders are organisation ids (org_…).",
                errors=[{"pointer": f"/shares/{holder}", "code": "invalid_public_id", "detail": detail}],
            )


class _AllocationAction(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    required_roles = {"POST": Role.ADMIN}
    problem_statuses = (409,)

    def allocation(self, request: Request, allocation_id: int) -> tuple[RightsAllocation, Organisation]:
        organisation = acting_organisation(request)
        allocation = selectors.allocation_get_visible(organisation=organisation, allocation_id=allocation_id)
        assert organisation is not None
        return allocation, organisation


class AllocationApproveApi(_AllocationAction):
    @extend_schema(
        request=None, responses=AllocationSerializer, summary="Approve proposed shares (holder admin)"
    )
    def post(self, request: Request, allocation_id: int) -> Response:
        allocation, organisation = self.allocation(request, allocation_id)
        approved = rights.allocation_approve(
            actor=request_user(request), allocation=allocation, organisation=organisation
        )
        return Response(AllocationSerializer(approved).data)


class AllocationRejectApi(_AllocationAction):
    @extend_schema(
        request=None, responses=AllocationSerializer, summary="Reject proposed shares (holder admin)"
    )
    def post(self, request: Request, allocation_id: int) -> Response:
        allocation, organisation = self.allocation(request, allocation_id)
        rejected = rights.allocation_reject(
            actor=request_user(request), allocation=allocation, organisation=organisation
        )
        return Response(AllocationSerializer(rejected).data)
