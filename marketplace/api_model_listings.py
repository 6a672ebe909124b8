"""Model listings API (issue 16 item 1): list a custody model, browse model listings, buy a license.

``POST /models/listings`` (the trainer's admin), ``GET /models/listings`` and
``GET /models/listings/{id}`` (any signed-in caller: published listings only),
``POST /models/listings/{id}/licenses`` (a trainer; moves money: Idempotency-Key required).
The services are marketplace/services/model_listings.py.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.fields import StrictIntegerField
from common.api.idempotency import OPTIONAL_HEADER, idempotent_response
from common.api.ids import PublicIdField
from common.api.views import SealroomApi, request_user
from common.idempotency import idempotent
from common.models import Organisation, Role, Scope
from common.money import major_amount
from common.permissions import acting_organisation_required as acting_org
from marketplace.api_orders import IDEMPOTENCY_HEADER
from marketplace.exceptions import NotATrainer
from marketplace.models import License, Listing, ListingState
from marketplace.services.model_listings import (
    MODEL_KIND,
    model_license_buy,
    model_listing_create,
    model_listing_get,
    model_listing_terms,
    model_rights,
)


def _public_terms(terms: dict[str, Any]) -> dict[str, Any]:
    inference = {k: v for k, v in terms["inference"].items() if k != "price_minor"}
    return {**{k: v for k, v in terms.items() if k not in ("inference", "kind")}, "inference": inference}


def _holders(listing: Listing) -> list[dict[str, Any]]:
    weights = model_rights(listing)
    total = sum(weights.values())
    names = {o.pk: o for o in Organisation.objects.filter(pk__in=list(weights))}
    return [
        {
            "organisation": names[holder].public_id,
            "name": names[holder].name,
            "role": "trainer" if holder == listing.provider_id else "data",
            # Exact: the share as a fraction of every release after the platform fee.
            "share": f"{Fraction(weight, total).numerator}/{Fraction(weight, total).denominator}",
            "share_decimal": f"{float(Fraction(weight, total)):.6f}",
        }
        for holder, weight in sorted(weights.items())
    ]


class ModelListingSerializer(serializers.Serializer):
    id = PublicIdField(prefix="lst", source="public_id")
    model = serializers.CharField(
        source="model_ref", help_text="The custody model (its training job, job_...)"
    )
    title = serializers.CharField()
    description = serializers.CharField()
    currency = serializers.CharField()
    state = serializers.CharField()
    published_at = serializers.DateTimeField(allow_null=True)
    trainer = serializers.SerializerMethodField()
    terms = serializers.SerializerMethodField()
    facts = serializers.SerializerMethodField(help_text="Receipt hash, validation metrics, data lineage")
    rights_holders = serializers.SerializerMethodField()

    def get_trainer(self, listing: Listing) -> dict[str, str]:
        return {"id": listing.provider.public_id, "name": listing.provider.name}

    def get_terms(self, listing: Listing) -> dict[str, Any]:
        return _public_terms(model_listing_terms(listing).terms)

    def get_facts(self, listing: Listing) -> dict[str, Any]:
        return dict(listing.statistics)

    def get_rights_holders(self, listing: Listing) -> list[dict[str, Any]]:
        return _holders(listing)


class ModelLicenseSerializer(serializers.Serializer):
    license = serializers.CharField(source="ref")
    order = serializers.CharField(source="order.ref")
    model = serializers.CharField(source="order.listing.model_ref")
    tokens = serializers.IntegerField(source="order.tokens_cap")
    escrow = serializers.SerializerMethodField()
    escrow_minor = serializers.IntegerField(source="escrowed")
    currency = serializers.CharField(source="order.currency")
    expires_at = serializers.DateTimeField(allow_null=True)

    def get_escrow(self, license_: License) -> str:
        return major_amount(license_.escrowed, license_.order.currency)


class ModelListingListCreateApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "POST": (Scope.PROVIDE, Scope.TRAIN)}
    required_roles = {"POST": Role.ADMIN}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(max_length=64, help_text="A custody model you trained (job_...)")
        title = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
        currency = serializers.CharField(required=False, default="EUR", min_length=3, max_length=3)
        terms = serializers.JSONField(help_text="Model terms (docs/models.md)")

    @extend_schema(responses=ModelListingSerializer(many=True), summary="Published model listings")
    def get(self, request: Request) -> Response:
        listings = (
            Listing.objects.filter(kind=MODEL_KIND, state=ListingState.PUBLISHED)
            .select_related("provider")
            .order_by("-published_at", "-pk")[:200]
        )
        return Response(ModelListingSerializer(listings, many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={201: ModelListingSerializer},
        parameters=[OPTIONAL_HEADER],
        summary="List a model your organisation trained and keeps in custody (published at once)",
    )
    def post(self, request: Request) -> Response:
        organisation = acting_org(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data

        def create(_key: str) -> tuple[int, Any]:
            listing = model_listing_create(
                actor=request_user(request),
                organisation=organisation,
                model_ref=v["model"],
                title=v["title"],
                terms=v["terms"],
                currency=v["currency"],
                description=v["description"],
            )
            return 201, dict(ModelListingSerializer(listing).data)

        return idempotent_response(request, endpoint="models.listings.create", body=request.data, run=create)


class ModelListingDetailApi(SealroomApi):
    @extend_schema(responses=ModelListingSerializer, summary="One published model listing")
    def get(self, request: Request, listing_id: int) -> Response:
        listing = model_listing_get(listing_id=listing_id)
        return Response(ModelListingSerializer(listing).data)


class ModelLicenseBuyApi(SealroomApi):
    required_scopes = {"POST": Scope.ORDER}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        tokens = StrictIntegerField(min_value=1, help_text="Platform tokens of inference this license buys")

    @extend_schema(
        request=InputSerializer,
        responses={201: ModelLicenseSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Buy a model license: the tokens' price is escrowed from your balance",
    )
    def post(self, request: Request, listing_id: int) -> Response:
        buyer = acting_org(request)
        if not buyer.is_trainer:
            raise NotATrainer(f"{buyer.name} is not a trainer organisation; only trainers buy licenses.")
        listing = model_listing_get(listing_id=listing_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def buy(key: str) -> tuple[int, Any]:
            license_ = model_license_buy(
                actor=request_user(request),
                buyer=buyer,
                listing=listing,
                tokens=data.validated_data["tokens"],
                idempotency_key=key,
            )
            return 201, dict(ModelLicenseSerializer(license_).data)

        result = idempotent(
            organisation=buyer,
            endpoint="models.licenses.buy",
            key=request.headers.get("Idempotency-Key"),
            body=data.validated_data,
            run=buy,
        )
        return Response(result.body, status=result.status)
