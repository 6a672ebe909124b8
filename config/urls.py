from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from common import health

api_v1: list[URLPattern | URLResolver] = [
    path("", include("common.api.urls")),
    path("", include("custody.urls")),
    path("", include("marketplace.urls")),
    path("", include("training.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("data/", include("custody.page_urls")),
    path("market/", include("marketplace.page_urls")),
    path("training/", include("training.page_urls")),
    path("console/", include("portal.console_urls")),
    # The portal's dashboard answers "/" ahead of common's plain home page.
    path("", include("portal.urls")),
    path("", include("common.urls")),
]

handler400 = "common.views.bad_request"
handler404 = "common.views.page_not_found"
handler500 = "common.views.server_error"
