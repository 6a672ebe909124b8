"""Training pages under /training/, in the ``training`` namespace."""

from django.urls import URLPattern, path

from training import pages

app_name = "training"

urlpatterns: list[URLPattern] = [
    path("jobs/", pages.jobs_page, name="jobs"),
    path("jobs/new/", pages.job_new, name="job_new"),
    path("jobs/<int:job_id>/", pages.job_page, name="job"),
    path("jobs/<int:job_id>/status/", pages.job_status, name="job_status"),
    path("jobs/<int:job_id>/cancel/", pages.job_cancel, name="job_cancel"),
    path("ops/jobs/", pages.ops_jobs_page, name="ops_jobs"),
    path("ops/jobs/<int:job_id>/cancel/", pages.ops_job_cancel, name="ops_job_cancel"),
]
