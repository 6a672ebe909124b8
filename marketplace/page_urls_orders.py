"""Orders pages (page_urls_orders), in the ``marketplace`` namespace (mounted under ``market/``)."""

from django.urls import URLPattern, path

from marketplace import pages_orders as pages

urlpatterns: list[URLPattern] = [
    path("catalog/offers/<ofr:offer_id>/buy/", pages.buy_page, name="buy"),
    path("orders/", pages.orders_page, name="orders"),
    path("orders/received/", pages.orders_received_page, name="orders_received"),
    path("orders/<str:order_ref>/", pages.order_page, name="order"),
    path("licenses/<str:license_ref>/", pages.license_page, name="license"),
    path("orders/<str:order_ref>/approve/", pages.order_approve_page, name="order_approve"),
    path("orders/<str:order_ref>/reject/", pages.order_reject_page, name="order_reject"),
    path("earnings/", pages.earnings_page, name="earnings"),
    path("spend/", pages.spend_page, name="spend"),
    path("ops/topups/", pages.topups_page, name="topups"),
]
