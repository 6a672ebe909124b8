"""API routes for orders, licenses, balances, payouts, top-ups and statements."""

from django.urls import URLPattern, path

from marketplace import api_orders as api

urlpatterns: list[URLPattern] = [
    path("orders", api.OrderListCreateApi.as_view(), name="api-orders"),
    path("orders/received", api.OrderReceivedListApi.as_view(), name="api-orders-received"),
    path("orders/<str:order_ref>", api.OrderDetailApi.as_view(), name="api-order-detail"),
    path("orders/<str:order_ref>/approve", api.OrderApproveApi.as_view(), name="api-order-approve"),
    path("orders/<str:order_ref>/reject", api.OrderRejectApi.as_view(), name="api-order-reject"),
    path("licenses", api.LicenseListApi.as_view(), name="api-licenses"),
    path("licenses/<str:license_ref>", api.LicenseDetailApi.as_view(), name="api-license-detail"),
    path("balances", api.BalanceApi.as_view(), name="api-balances"),
    path("payouts", api.PayoutListCreateApi.as_view(), name="api-payouts"),
    path("statements/earnings", api.EarningsApi.as_view(), name="api-statements-earnings"),
    path("statements/spend", api.SpendApi.as_view(), name="api-statements-spend"),
    path("ops/topups", api.OpsTopUpListCreateApi.as_view(), name="api-ops-topups"),
    path(
        "ops/licenses/<str:license_ref>/refund",
        api.OpsLicenseRefundApi.as_view(),
        name="api-ops-license-refund",
    ),
]
