"""Custody pages, in the ``custody`` namespace (mounted under ``data/``)."""

from django.urls import URLPattern, path

from custody.pages import datasets, report, versions

app_name = "custody"

urlpatterns: list[URLPattern] = [
    path("", datasets.dataset_list_page, name="datasets"),
    path("<int:dataset_id>/", datasets.dataset_page, name="dataset"),
    path("<int:dataset_id>/versions/", datasets.version_create, name="version_create"),
    path("versions/<int:version_id>/", versions.version_page, name="version"),
    path("versions/<int:version_id>/status/", versions.version_status, name="version_status"),
    path("versions/<int:version_id>/process/", versions.version_process, name="version_process"),
    path("versions/<int:version_id>/retry/", versions.version_retry, name="version_retry"),
    path("versions/<int:version_id>/reject/", versions.version_reject, name="version_reject"),
    path("versions/<int:version_id>/contributors/", versions.contributor_invite, name="contributor_invite"),
    path("versions/<int:version_id>/report/", report.report_page, name="report"),
    path("versions/<int:version_id>/report/samples/", report.samples_page, name="samples"),
    path("versions/<int:version_id>/report/residual/", report.residual_page, name="residual"),
    path("versions/<int:version_id>/findings/", report.findings_mark, name="findings_mark"),
    path("versions/<int:version_id>/seal/", report.seal_page, name="seal"),
]
