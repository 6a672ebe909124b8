"""Orders API: place (with Idempotency-Key), decide, licenses, balances, payouts, top-ups, statements."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.fields import MinorField, MoneyField, StrictIntegerField
from common.api.ids import PublicIdField
from common.api.views import SealroomApi, SealroomListApi, request_user
from common.exports import csv_response
from common.idempotency import idempotent
from common.models import Organisation, Role, Scope
from common.permissions import PlatformStaffRequired, ScopeRequired
from common.permissions import acting_organisation_required as acting_org
from marketplace import selectors_orders as selectors
from marketplace.exceptions import LicenseNotFound, NotAProvider, NotATrainer, OfferNotFound
from marketplace.models import (
    License,
    ListingState,
    Offer,
    Order,
    OrderState,
    Payout,
    RightsAllocation,
    TopUp,
)
from marketplace.services import statements
from marketplace.services.funding import MAX_TOPUP, topup_record
from marketplace.services.orders import order_approve, order_place, order_reject
from marketplace.services.payouts import payout_request
from marketplace.services.settlement import license_job_refund, license_refund

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="A unique key per request (8-200 characters), kept 24 hours per organisation and endpoint.",
)


class OrderSerializer(serializers.Serializer):
    ref = serializers.CharField()
    state = serializers.CharField()
    buyer_id = PublicIdField(prefix="org", source="buyer.public_id")
    listing_id = PublicIdField(prefix="lst", source="listing.public_id")
    offer_id = PublicIdField(prefix="ofr", source="offer.public_id")
    terms_id = PublicIdField(prefix="trm", source="terms.public_id")
    price_model = serializers.CharField()
    currency = serializers.CharField()
    unit_price = MoneyField()
    unit_price_minor = MinorField(source="unit_price")
    escrow_amount = MoneyField()
    escrow_amount_minor = MinorField(source="escrow_amount")
    periods = serializers.IntegerField(allow_null=True)
    fee_bps = serializers.IntegerField()
    allocation_id = serializers.SerializerMethodField()
    allocation_shares = serializers.SerializerMethodField()
    reject_reason = serializers.CharField()
    approval_deadline = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    license_ref = serializers.SerializerMethodField()

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_allocation_shares(self, order: Order) -> dict[str, int]:
        """Holder organisation's public id -> basis points (the order keeps integer keys inside)."""
        shares: dict[str, int] = order.allocation_shares or {}
        names = self._holder_public_ids()
        return {names.get(int(k), str(k)): bps for k, bps in shares.items()}

    @extend_schema_field(PublicIdField(prefix="alc"))
    def get_allocation_id(self, order: Order) -> str:
        """The frozen allocation's public id (the order keeps its integer key inside)."""
        cached = self._allocation_public_ids()
        if order.allocation_id not in cached:  # an order outside the root's page (a nested use)
            cached.update(
                RightsAllocation.objects.filter(pk=order.allocation_id).values_list("pk", "public_id")
            )
        return cached[order.allocation_id]

    def _allocation_public_ids(self) -> dict[int, str]:
        # One query for the whole page of orders, as for the holders below.
        root = self.root
        cached: dict[int, str] | None = getattr(root, "_allocation_public_id_cache", None)
        if cached is None:
            instance = root.instance
            orders = list(instance) if isinstance(instance, list | tuple | QuerySet) else [instance]
            pks = {order.allocation_id for order in orders if isinstance(order, Order)}
            cached = dict(RightsAllocation.objects.filter(pk__in=pks).values_list("pk", "public_id"))
            setattr(root, "_allocation_public_id_cache", cached)  # noqa: B010 - per-response cache
        return cached

    def _holder_public_ids(self) -> dict[int, str]:
        # One query for the whole page of orders (the root holds them all), not one per order.
        root = self.root
        cached: dict[int, str] | None = getattr(root, "_holder_public_id_cache", None)
        if cached is None:
            instance = root.instance
            orders = list(instance) if isinstance(instance, list | tuple | QuerySet) else [instance]
            pks = {int(k) for order in orders for k in (getattr(order, "allocation_shares", None) or {})}
            cached = dict(Organisation.objects.filter(pk__in=pks).values_list("pk", "public_id"))
            setattr(root, "_holder_public_id_cache", cached)  # noqa: B010 - per-response cache
        return cached

    def get_license_ref(self, order: Order) -> str | None:
        # The list selectors join the license (select_related): no query per order.
        try:
            return order.license.ref
        except License.DoesNotExist:
            return None


class LicenseSerializer(serializers.Serializer):
    ref = serializers.CharField()
    order_ref = serializers.CharField(source="order.ref")
    licensee_id = PublicIdField(prefix="org", source="licensee.public_id")
    version_id = PublicIdField(prefix="dsv", source="version.public_id")
    grant_id = PublicIdField(prefix="gnt", source="grant.public_id")
    state = serializers.CharField()
    starts_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    escrowed = MoneyField(currency_field="order.currency")
    escrowed_minor = MinorField(source="escrowed")
    released = MoneyField(currency_field="order.currency")
    released_minor = MinorField(source="released")
    refunded = MoneyField(currency_field="order.currency")
    refunded_minor = MinorField(source="refunded")
    currency = serializers.CharField(source="order.currency")
    remaining = serializers.SerializerMethodField()

    def get_remaining(self, license_: License) -> dict[str, Any]:
        return selectors.license_remaining(license_).as_dict()


class PayoutSerializer(serializers.Serializer):
    ref = serializers.CharField()
    organisation_id = PublicIdField(prefix="org", source="organisation.public_id")
    currency = serializers.CharField()
    amount = MoneyField()
    amount_minor = MinorField(source="amount")
    state = serializers.CharField()
    gateway = serializers.CharField()
    gateway_ref = serializers.CharField()
    failure_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)


class TopUpSerializer(serializers.Serializer):
    ref = serializers.CharField()
    organisation_id = PublicIdField(prefix="org", source="organisation.public_id")
    currency = serializers.CharField()
    amount = MoneyField()
    amount_minor = MinorField(source="amount")
    gateway = serializers.CharField()
    external_ref = serializers.CharField()
    created_at = serializers.DateTimeField()


def _trainer(request: Request) -> Organisation:
    organisation = acting_org(request)
    if not organisation.is_trainer:
        raise NotATrainer(f"{organisation.name} is not a trainer organisation; only trainers place orders.")
    return organisation


def _provider(request: Request) -> Organisation:
    organisation = acting_org(request)
    if not organisation.is_provider:
        raise NotAProvider(f"{organisation.name} is not a provider organisation.")
    return organisation


def _orderable_offer(offer_id: int) -> Offer:
    # Drafts are invisible to buyers; withdrawn listings answer with their own 409.
    offer = Offer.objects.select_related("listing").filter(pk=offer_id).first()
    if offer is None or offer.listing.state == ListingState.DRAFT:
        raise OfferNotFound("No such offer.")
    return offer


class OrderListCreateApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.ORDER}
    required_roles = {"POST": Role.MEMBER}
    serializer_class = OrderSerializer
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        offer_id = PublicIdField(prefix="ofr")
        periods = StrictIntegerField(min_value=1, max_value=10_000, required=False)

    def get_queryset(self) -> QuerySet[Order]:
        return selectors.order_list_for_buyer(organisation=acting_org(self.request))

    @extend_schema(summary="Orders your organisation placed")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InputSerializer,
        responses={201: OrderSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Place an order (escrowed from your balance); replays with the same Idempotency-Key",
    )
    def post(self, request: Request) -> Response:
        buyer = _trainer(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        offer = _orderable_offer(data.validated_data["offer_id"])

        def place(key: str) -> tuple[int, Any]:
            order = order_place(
                buyer=buyer,
                offer=offer,
                actor=request_user(request),
                periods=data.validated_data.get("periods"),
                idempotency_key=key,
            )
            return 201, dict(OrderSerializer(order).data)

        result = idempotent(
            organisation=buyer,
            endpoint="orders.place",
            key=request.headers.get("Idempotency-Key"),
            body=data.validated_data,
            run=place,
        )
        return Response(result.body, status=result.status)


class OrderReceivedQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=OrderState.choices, required=False, allow_blank=True)


class OrderReceivedListApi(SealroomListApi):
    serializer_class = OrderSerializer
    problem_statuses = (422,)  # an unknown state

    def get_queryset(self) -> QuerySet[Order]:
        query = OrderReceivedQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        state = query.validated_data.get("state") or None
        return selectors.order_list_for_provider(organisation=acting_org(self.request), state=state)

    @extend_schema(
        summary="Orders on your organisation's listings",
        parameters=[OpenApiParameter("state", str, enum=[value for value, _ in OrderState.choices])],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class OrderDetailApi(SealroomApi):
    @extend_schema(responses=OrderSerializer, summary="One order (its buyer or its provider)")
    def get(self, request: Request, order_ref: str) -> Response:
        order = selectors.order_get_for_org(organisation=acting_org(request), ref=order_ref)
        return Response(OrderSerializer(order).data)


class OrderApproveApi(SealroomApi):
    required_scope = Scope.PROVIDE
    required_role = Role.ADMIN
    problem_statuses = (409,)

    @extend_schema(request=None, responses=OrderSerializer, summary="Approve a pending order (pays it)")
    def post(self, request: Request, order_ref: str) -> Response:
        organisation = acting_org(request)
        order = selectors.order_get_for_org(organisation=organisation, ref=order_ref)
        approved = order_approve(order=order, provider=organisation, actor=request_user(request))
        return Response(OrderSerializer(approved).data)


class OrderRejectApi(SealroomApi):
    required_scope = Scope.PROVIDE
    required_role = Role.ADMIN
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300)

    @extend_schema(
        request=InputSerializer, responses=OrderSerializer, summary="Reject a pending order (refunds it)"
    )
    def post(self, request: Request, order_ref: str) -> Response:
        organisation = acting_org(request)
        order = selectors.order_get_for_org(organisation=organisation, ref=order_ref)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rejected = order_reject(
            order=order,
            provider=organisation,
            actor=request_user(request),
            reason=data.validated_data["reason"],
        )
        return Response(OrderSerializer(rejected).data)


class LicenseListApi(SealroomListApi):
    serializer_class = LicenseSerializer

    def get_queryset(self) -> QuerySet[License]:
        return selectors.license_list_for_org(organisation=acting_org(self.request))

    @extend_schema(summary="Your organisation's licenses and what each has left")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class LicenseDetailApi(SealroomApi):
    @extend_schema(responses=LicenseSerializer, summary="One license: jobs, tokens, epsilon and expiry left")
    def get(self, request: Request, license_ref: str) -> Response:
        license_ = selectors.license_get_for_org(organisation=acting_org(request), ref=license_ref)
        return Response(LicenseSerializer(license_).data)


class BalanceApi(SealroomApi):
    class OutputSerializer(serializers.Serializer):
        kind = serializers.CharField()
        currency = serializers.CharField()
        amount = MoneyField()
        amount_minor = MinorField(source="amount")

    @extend_schema(responses=OutputSerializer(many=True), summary="Your balances and what you are owed")
    def get(self, request: Request) -> Response:
        rows = selectors.balances_for_org(organisation=acting_org(request))
        return Response(self.OutputSerializer(rows, many=True).data)


class PayoutListCreateApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.PROVIDE}
    required_roles = {"POST": Role.ADMIN}
    serializer_class = PayoutSerializer
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        amount = MoneyField(max_minor=MAX_TOPUP)
        currency = serializers.RegexField(r"^[A-Z]{3}$")

    def get_queryset(self) -> QuerySet[Payout]:
        return selectors.payout_list_for_org(organisation=acting_org(self.request))

    @extend_schema(summary="Your organisation's payouts")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InputSerializer,
        responses={201: PayoutSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Request a payout of what you are owed",
    )
    def post(self, request: Request) -> Response:
        organisation = _provider(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def pay(key: str) -> tuple[int, Any]:
            payout = payout_request(
                organisation=organisation,
                actor=request_user(request),
                idempotency_key=key,
                **data.validated_data,
            )
            return 201, dict(PayoutSerializer(payout).data)

        result = idempotent(
            organisation=organisation,
            endpoint="payouts.request",
            key=request.headers.get("Idempotency-Key"),
            body=data.validated_data,
            run=pay,
        )
        return Response(result.body, status=result.status)


class OpsTopUpListCreateApi(SealroomListApi):
    # ScopeRequired: tokens may read here, never act (platform powers take a session).
    permission_classes = [IsAuthenticated, PlatformStaffRequired, ScopeRequired]
    serializer_class = TopUpSerializer
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        organisation_id = PublicIdField(prefix="org")
        amount = MoneyField(max_minor=MAX_TOPUP)
        currency = serializers.RegexField(r"^[A-Z]{3}$")
        external_ref = serializers.CharField(max_length=120)

    def get_queryset(self) -> QuerySet[TopUp]:
        return selectors.topup_list()

    @extend_schema(summary="Recorded top-ups (operators and auditors)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InputSerializer,
        responses={201: TopUpSerializer},
        summary="Record a received transfer as a top-up (once per external reference)",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        organisation = Organisation.objects.filter(pk=values.pop("organisation_id")).first()
        if organisation is None:
            raise serializers.ValidationError({"organisation_id": ["No such organisation."]})
        topup = topup_record(organisation=organisation, actor=request_user(request), **values)
        return Response(TopUpSerializer(topup).data, status=201)


EXPORT_PARAMETER = OpenApiParameter(
    "export", str, description="csv: a CSV file instead of JSON", enum=["csv"]
)


class StatementQuerySerializer(serializers.Serializer):
    export = serializers.ChoiceField(choices=["csv"], required=False)
    bucket = serializers.ChoiceField(choices=["day", "month"], default="month")


def statement_query(request: Request) -> dict[str, Any]:
    """The statement's query parameters; an unknown export or bucket is a field error."""
    query = StatementQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return dict(query.validated_data)


def statement_responses(serializer: serializers.Serializer) -> dict[Any, Any]:
    return {(200, "application/json"): serializer, (200, "text/csv"): OpenApiTypes.STR}


class EarningsApi(SealroomApi):
    problem_statuses = (422,)  # an unknown export or bucket

    class OutputSerializer(serializers.Serializer):
        period = serializers.DateField()
        listing_id = PublicIdField(prefix="lst")
        listing = serializers.CharField()
        currency = serializers.CharField()
        amount = MoneyField()
        amount_minor = MinorField(source="amount")

    @extend_schema(
        responses=statement_responses(OutputSerializer(many=True)),
        parameters=[EXPORT_PARAMETER, OpenApiParameter("bucket", str, enum=["day", "month"])],
        summary="What your organisation earned, per period and listing (as a rights holder)",
    )
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        query = statement_query(request)
        rows = statements.earnings_over_time(holder=acting_org(request), bucket=query["bucket"])
        if query.get("export") == "csv":
            return csv_response(
                filename="earnings.csv", header=statements.EARNINGS_HEADER, rows=(r.as_list() for r in rows)
            )
        return Response(self.OutputSerializer(rows, many=True).data)


class SpendApi(SealroomApi):
    problem_statuses = (422,)  # an unknown export or bucket

    class OutputSerializer(serializers.Serializer):
        order = serializers.CharField()
        placed_at = serializers.CharField()
        listing = serializers.CharField()
        state = serializers.CharField()
        currency = serializers.CharField()
        escrowed = MoneyField(source="escrowed_minor")
        escrowed_minor = MinorField()
        released = MoneyField(source="released_minor")
        released_minor = MinorField()
        refunded = MoneyField(source="refunded_minor")
        refunded_minor = MinorField()

    @extend_schema(
        responses=statement_responses(OutputSerializer(many=True)),
        parameters=[EXPORT_PARAMETER],
        summary="What your organisation spent, per order",
    )
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        query = statement_query(request)
        rows = statements.spend_rows(buyer=acting_org(request))
        if query.get("export") == "csv":
            return csv_response(filename="spend.csv", header=statements.SPEND_HEADER, rows=rows)
        objects = [dict(zip(statements.SPEND_HEADER, row, strict=True)) for row in rows]
        return Response(self.OutputSerializer(objects, many=True).data)


class OpsLicenseRefundApi(SealroomApi):
    # ScopeRequired: tokens may read here, never act (platform powers take a session).
    permission_classes = [IsAuthenticated, PlatformStaffRequired, ScopeRequired]
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300)
        consumer_ref = serializers.CharField(
            max_length=120,
            required=False,
            help_text="A job that failed through the platform's fault: undo only its releases. "
            "Without it, the license is revoked and its unreleased escrow refunded.",
        )

    class OutputSerializer(serializers.Serializer):
        license = LicenseSerializer()
        returned_to_escrow = MoneyField(currency_field="license.order.currency", allow_null=True)
        returned_to_escrow_minor = MinorField(source="returned_to_escrow", allow_null=True)

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Refund a license: one failed job's releases back to escrow, or revoke and refund it",
    )
    def post(self, request: Request, license_ref: str) -> Response:
        license_ = License.objects.select_related("order").filter(ref=license_ref).first()
        if license_ is None:
            raise LicenseNotFound("No such license.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data["reason"]
        consumer_ref = data.validated_data.get("consumer_ref")
        returned = None
        if consumer_ref:
            returned = license_job_refund(license_=license_, consumer_ref=consumer_ref, reason=reason)
        else:
            license_refund(license_=license_, reason=reason)
        license_.refresh_from_db()
        return Response(self.OutputSerializer({"license": license_, "returned_to_escrow": returned}).data)
