"""Orders pages: buy an offer, my orders and licenses, orders received, earnings, spend, top-ups."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp
from common.exceptions import Conflict, DomainError, Invalid, NotFound, NotPermitted
from common.exports import csv_response
from common.forms import add_domain_error
from common.models import Membership, Role
from common.money import money_labelled
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from common.permissions import role_at_least
from custody.charts import bar_chart
from custody.pages.access import current_membership, require_role
from marketplace import selectors_orders as selectors
from marketplace.forms_orders import BuyForm, PayoutForm, RejectForm, TopUpForm
from marketplace.models import ListingState, Offer, OfferTerms, OrderState, PriceModel
from marketplace.quotes import Quote, quote
from marketplace.services import statements
from marketplace.services.catalog import offer_terms_current
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_approve, order_place, order_reject
from marketplace.services.payouts import payout_request
from marketplace.terms import DEFAULT_GATE_MAX_EXPOSURE, PURPOSE_WORDS, TEMPLATE_WORDS, terms_epsilon_cap

ORDERS_PER_PAGE = 50
LICENSES_PER_PAGE = 50
PAYOUTS_PER_PAGE = 25
TOPUPS_PER_PAGE = 50


def _membership(request: HttpRequest, *, trainer: bool = False, provider: bool = False) -> Membership:
    membership = current_membership(request)
    if membership is None:
        raise PermissionDenied("You are not a member of any organisation.")
    org = membership.organisation
    if trainer and not org.is_trainer:
        raise PermissionDenied(
            f"{org.name} is not a trainer organisation: switch organisation in the header."
        )
    if provider and not org.is_provider:
        raise PermissionDenied(
            f"{org.name} is not a provider organisation: switch organisation in the header."
        )
    return membership


def _terms_recap(terms_row: OfferTerms) -> dict[str, Any]:
    """What the buy page recaps before the acceptance, read from the terms row being ordered."""
    terms = terms_row.terms
    permission, constraint, duty = terms["permission"], terms["constraint"], terms.get("duty", {})
    dp = duty.get("differential_privacy", {})
    return {
        "purposes": [PURPOSE_WORDS.get(p, p) for p in permission["purposes"]],
        "templates": [TEMPLATE_WORDS.get(t, t) for t in permission["job_templates"]],
        "weights_may_leave": bool(permission["weights_may_leave"]),
        "dp_required": bool(dp.get("required")),
        # The license's cap, else the version's: a version with a cap accepts only DP jobs.
        "epsilon_cap": terms_epsilon_cap(terms, terms_row.offer.listing.version),
        "max_jobs": constraint["max_jobs"],
        "max_epochs": constraint["max_epochs"],
        "max_tokens": constraint["max_tokens"],
        "term_days": constraint["term_days"],
        "max_licenses": constraint.get("max_licenses"),
        "exclusive_use": bool(constraint.get("exclusive_use")),
        "attribution": duty.get("attribution", ""),
        "gate_max_exposure": duty.get("release_gate", {}).get("max_exposure", DEFAULT_GATE_MAX_EXPOSURE),
    }


def _quote_or_none(terms_row: OfferTerms, periods: int | None) -> Quote | None:
    try:
        return quote(terms_row, periods=periods if terms_row.price_model == PriceModel.PERIOD else None)
    except DomainError:
        return None


@otp.signed_in
@require_http_methods(["GET", "POST"])
def buy_page(request: HttpRequest, offer_id: int) -> HttpResponse:
    """Recap an offer's current terms and price; members of a trainer organisation accept them and order.

    Only the inputs the price model needs are asked (periods for per-period
    offers). The acceptance box is checked here, and the order records which
    terms row was accepted. An organisation that already holds the offer (or
    has an order on it awaiting approval) is warned and must confirm.
    """
    membership = _membership(request, trainer=True)
    org = membership.organisation
    offer = Offer.objects.select_related("listing__version").filter(pk=offer_id).first()
    if offer is None or offer.listing.state != ListingState.PUBLISHED:
        raise Http404("No such offer.")
    terms_row = offer_terms_current(offer)
    key = request.POST.get("idempotency_key", "") if request.method == "POST" else ""
    held, pending = selectors.offer_holdings_for_org(organisation=org, offer_id=offer.pk, except_key=key)
    form_args: dict[str, Any] = {"price_model": terms_row.price_model, "held": bool(held or pending)}
    form = BuyForm.fresh(terms_id=terms_row.public_id, **form_args)
    periods = 1
    if request.method == "POST":
        require_role(membership, Role.MEMBER, "place orders")
        form = BuyForm(request.POST, **form_args)
        if form.is_valid():
            periods = form.cleaned_data.get("periods") or 1
            try:
                order = order_place(
                    buyer=org,
                    offer=offer,
                    actor=page_user(request),
                    periods=form.cleaned_data.get("periods"),
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    accepted_terms=form.cleaned_data["terms"],
                )
            except (Conflict, Invalid) as exc:
                add_domain_error(form, exc)
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                messages.success(request, f"Order {order.ref} placed ({order.get_state_display().lower()}).")
                return redirect("marketplace:orders")
    context = {
        "offer": offer,
        "terms": terms_row,
        "recap": _terms_recap(terms_row),
        "quote": _quote_or_none(terms_row, periods),
        "form": form,
        "balances": selectors.balances_for_org(organisation=org),
        "held": held,
        "pending": pending,
        "can_buy": role_at_least(membership.role, Role.MEMBER),
        "membership": membership,
    }
    return render(request, "marketplace/orders/buy.html", context)


@otp.signed_in
@require_http_methods(["GET"])
def orders_page(request: HttpRequest) -> HttpResponse:
    """The organisation's orders and licenses, with what each license has left."""
    membership = _membership(request)
    org = membership.organisation
    licenses_page = page_of(
        request, selectors.license_list_for_org(organisation=org), LICENSES_PER_PAGE, param="licenses_page"
    )
    licenses = [(license_, selectors.license_remaining(license_)) for license_ in licenses_page]
    context = {
        "org": org,
        "orders": page_of(request, selectors.order_list_for_buyer(organisation=org), ORDERS_PER_PAGE),
        "licenses": licenses,
        "licenses_page": licenses_page,
        "balances": selectors.balances_for_org(organisation=org),
    }
    return render(request, "marketplace/orders/orders.html", context)


@otp.signed_in
@require_GET
def order_page(request: HttpRequest, order_ref: str) -> HttpResponse:
    """Where an order is shown (notifications link here): the buyer's orders, or the provider's received."""
    org = _membership(request).organisation
    try:
        order = selectors.order_get_for_org(organisation=org, ref=order_ref)
    except NotFound as exc:
        raise_http(exc)
    page = "marketplace:orders" if order.buyer_id == org.pk else "marketplace:orders_received"
    return redirect(f"{reverse(page)}#order-{order.ref}")


@otp.signed_in
@require_GET
def license_page(request: HttpRequest, license_ref: str) -> HttpResponse:
    """Where a license is shown: the licensee's licenses, or the provider's received order it came from."""
    org = _membership(request).organisation
    try:
        license_ = selectors.license_get_for_org(organisation=org, ref=license_ref)
    except NotFound as exc:
        raise_http(exc)
    if license_.licensee_id == org.pk:
        return redirect(f"{reverse('marketplace:orders')}#license-{license_.ref}")
    return redirect(f"{reverse('marketplace:orders_received')}#order-{license_.order.ref}")


@otp.signed_in
@require_http_methods(["GET"])
def orders_received_page(request: HttpRequest) -> HttpResponse:
    """Orders on the organisation's listings; admins approve or reject pending ones."""
    return _render_received(request, _membership(request, provider=True))


def _render_received(
    request: HttpRequest,
    membership: Membership,
    *,
    rejecting: str = "",
    reject_form: RejectForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The received-orders page; a bound ``reject_form`` shows its error beside order ``rejecting``."""
    org = membership.organisation
    context = {
        "org": org,
        "pending": page_of(
            request,
            selectors.order_list_for_provider(organisation=org, state=OrderState.PENDING),
            ORDERS_PER_PAGE,
            param="pending_page",
        ),
        "decided": page_of(
            request,
            selectors.order_list_for_provider(organisation=org).exclude(state=OrderState.PENDING),
            ORDERS_PER_PAGE,
        ),
        "can_decide": membership.role == Role.ADMIN,
        "rejecting": rejecting,
        "reject_form": reject_form or RejectForm(),
        # One row's form among many: its error is shown beside that row's input, tied by id.
        "reject_error": " ".join(str(e) for errors in reject_form.errors.values() for e in errors)
        if reject_form is not None
        else "",
    }
    return render(request, "marketplace/orders/received.html", context, status=status)


def _decider(request: HttpRequest) -> Membership:
    membership = _membership(request, provider=True)
    require_role(membership, Role.ADMIN, "decide on orders")
    return membership


@otp.signed_in
@require_POST
def order_approve_page(request: HttpRequest, order_ref: str) -> HttpResponse:
    org = _decider(request).organisation
    try:
        order = selectors.order_get_for_org(organisation=org, ref=order_ref)
        order_approve(order=order, provider=org, actor=page_user(request))
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    except Conflict as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Order {order_ref} approved; the license is issued.")
    return redirect("marketplace:orders_received")


@otp.signed_in
@require_POST
def order_reject_page(request: HttpRequest, order_ref: str) -> HttpResponse:
    """Reject a pending order with a reason; a missing or refused reason is shown beside its field, kept."""
    membership = _decider(request)
    org = membership.organisation
    try:
        order = selectors.order_get_for_org(organisation=org, ref=order_ref)
    except NotFound as exc:
        raise_http(exc)
    form = RejectForm(request.POST)
    if not form.is_valid():
        return _render_received(request, membership, rejecting=order_ref, reject_form=form, status=422)
    try:
        order_reject(order=order, provider=org, actor=page_user(request), reason=form.cleaned_data["reason"])
    except NotPermitted as exc:
        raise_http(exc)
    except Invalid as exc:
        add_domain_error(form, exc)
        return _render_received(request, membership, rejecting=order_ref, reject_form=form, status=422)
    except Conflict as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Order {order_ref} rejected; the buyer is refunded.")
    return redirect("marketplace:orders_received")


@otp.signed_in
@require_http_methods(["GET", "POST"])
def earnings_page(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """What the organisation earned as a rights holder (chart, table, CSV) and its payouts."""
    membership = _membership(request, provider=True)
    org = membership.organisation
    rows = statements.earnings_over_time(holder=org)
    if request.GET.get("export") == "csv":
        return csv_response(
            filename="earnings.csv", header=statements.EARNINGS_HEADER, rows=(r.as_list() for r in rows)
        )
    form = PayoutForm(request.POST) if request.method == "POST" else PayoutForm.fresh()
    if request.method == "POST":
        require_role(membership, Role.ADMIN, "request payouts")
        if form.is_valid():
            try:
                payout = payout_request(organisation=org, actor=page_user(request), **form.cleaned_data)
            except (Conflict, Invalid) as exc:
                add_domain_error(form, exc)
            else:
                messages.success(request, f"Payout {payout.ref} requested.")
                return redirect("marketplace:earnings")
    context = {
        "org": org,
        "rows": rows,
        "chart": bar_chart(
            slug="earnings",
            title="Earnings per listing",
            counts=statements.earnings_by_listing(holder=org),
            value_text=money_labelled,
        ),
        "over_time": bar_chart(
            slug="earnings-months",
            title="Earnings per month",
            counts=statements.earnings_by_period(rows),
            value_text=money_labelled,
        ),
        "balances": selectors.balances_for_org(organisation=org),
        "payouts": page_of(
            request, selectors.payout_list_for_org(organisation=org), PAYOUTS_PER_PAGE, param="payouts_page"
        ),
        "form": form,
        "can_pay_out": membership.role == Role.ADMIN,
    }
    return render(request, "marketplace/orders/earnings.html", context)


@otp.signed_in
@require_http_methods(["GET"])
def spend_page(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """What the organisation spent per order (and CSV)."""
    membership = _membership(request, trainer=True)
    org = membership.organisation
    if request.GET.get("export") == "csv":
        return csv_response(
            filename="spend.csv", header=statements.SPEND_HEADER, rows=statements.spend_rows(buyer=org)
        )
    orders = page_of(request, statements.spend_orders(buyer=org), ORDERS_PER_PAGE)
    context = {
        "org": org,
        "header": statements.SPEND_HEADER,
        "rows": [_spend_row(row) for row in statements.spend_rows(buyer=org, orders=orders)],
        "page": orders,
        "totals": statements.spend_total(buyer=org),
    }
    return render(request, "marketplace/orders/spend.html", context)


def _spend_row(row: list[Any]) -> list[Any]:
    """A ``SPEND_HEADER`` row for people: the time as a datetime (for the template), the state's label."""
    placed, state = parse_datetime(row[1]), row[3]
    label = OrderState(state).label if state in OrderState.values else state
    return [row[0], placed, row[2], label, *row[4:]]


@otp.signed_in
@require_http_methods(["GET", "POST"])
def topups_page(request: HttpRequest) -> HttpResponse:
    """Operators record received transfers as top-ups; auditors read the list."""
    user = page_user(request)
    if not user.is_platform_staff:
        raise PermissionDenied("Top-ups are recorded by platform operators.")
    form = TopUpForm(request.POST or None)
    if request.method == "POST":
        if not user.is_operator:
            raise PermissionDenied("Auditors have read-only access.")
        if form.is_valid():
            data = form.cleaned_data
            organisation = data["organisation"]
            try:
                topup = topup_record(
                    organisation=organisation,
                    amount=data["amount"],
                    currency=data["currency"],
                    external_ref=data["external_ref"],
                    actor=user,
                )
            except Invalid as exc:
                add_domain_error(form, exc)
            else:
                messages.success(request, f"Top-up {topup.ref} recorded for {organisation.name}.")
                return redirect("marketplace:topups")
    context = {
        "form": form,
        "topups": page_of(request, selectors.topup_list(), TOPUPS_PER_PAGE),
        "can_record": user.is_operator,
    }
    return render(request, "marketplace/orders/topups.html", context)
