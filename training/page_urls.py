"""Training pages under /training/, in the ``training`` namespace."""

from django.urls import URLPattern, path

from common.pages.legacy import legacy_redirect
from training import generate_pages, pages, playground, valuation_pages

app_name = "training"

urlpatterns: list[URLPattern] = [
    path("jobs/", pages.jobs_page, name="jobs"),
    path("jobs/new/", pages.job_new, name="job_new"),
    # A generation job from a model held in custody (issue 17 item 1; training/generate_pages.py).
    path("jobs/generate/", generate_pages.job_generate, name="job_generate"),
    path("jobs/<job:job_id>/", pages.job_page, name="job"),
    path("jobs/<job:job_id>/status/", pages.job_status, name="job_status"),
    path("jobs/<job:job_id>/cancel/", pages.job_cancel, name="job_cancel"),
    path("valuations/<dsv:version_id>/", valuation_pages.valuation_page, name="valuation"),
    # The playground for models in custody (issue 16 item 2; training/playground.py).
    path("playground/", playground.playground, name="playground"),
    path("playground/calls/<inf:call_id>/", playground.playground_call, name="playground_call"),
    path(
        "playground/calls/<inf:call_id>/status/",
        playground.playground_call_status,
        name="playground_call_status",
    ),
    path("ops/jobs/", pages.ops_jobs_page, name="ops_jobs"),
    path("ops/jobs/<job:job_id>/cancel/", pages.ops_job_cancel, name="ops_job_cancel"),
    # An old integer URL: a redirect for the owner's members, else 404 (common/pages/legacy.py).
    path(
        "jobs/<int:legacy_job_id>/",
        legacy_redirect("job", owner="organisation", to="training:job", kwarg="job_id"),
        name="legacy_job",
    ),
]
