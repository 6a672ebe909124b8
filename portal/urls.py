"""Portal pages, in the ``portal`` namespace (mounted at the site root, before ``common``'s pages).

The dashboard answers ``/``, where sign-in lands (``LOGIN_REDIRECT_URL``): only
the portal may read every app.
"""

from django.urls import URLPattern, path

from portal import pages, withdrawals

app_name = "portal"

urlpatterns: list[URLPattern] = [
    path("", pages.dashboard_page, name="home"),
    path("portal/access-log/", pages.access_log_page, name="access_log"),
    path("portal/access-log/export/", pages.access_log_export, name="access_log_export"),
    path("portal/withdrawals/", withdrawals.withdrawals_page, name="withdrawals"),
    path("portal/withdrawals/<wdr:withdrawal_id>/", withdrawals.withdrawal_page, name="withdrawal"),
    path(
        "portal/contributions/<ctb:contribution_id>/withdraw/",
        withdrawals.withdraw_page,
        name="contribution_withdraw",
    ),
]
