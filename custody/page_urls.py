"""Custody pages, in the ``custody`` namespace (mounted under ``data/``)."""

from django.urls import URLPattern, path

from common.pages.legacy import legacy_redirect
from custody.pages import datasets, report, versions

app_name = "custody"

urlpatterns: list[URLPattern] = [
    path("", datasets.dataset_list_page, name="datasets"),
    path("<ds:dataset_id>/", datasets.dataset_page, name="dataset"),
    path("<ds:dataset_id>/versions/", datasets.version_create, name="version_create"),
    path("versions/<dsv:version_id>/", versions.version_page, name="version"),
    path("versions/<dsv:version_id>/status/", versions.version_status, name="version_status"),
    path("versions/<dsv:version_id>/process/", versions.version_process, name="version_process"),
    path("versions/<dsv:version_id>/retry/", versions.version_retry, name="version_retry"),
    path("versions/<dsv:version_id>/reject/", versions.version_reject, name="version_reject"),
    path("versions/<dsv:version_id>/contributors/", versions.contributor_invite, name="contributor_invite"),
    path("versions/<dsv:version_id>/report/", report.report_page, name="report"),
    path("versions/<dsv:version_id>/report/samples/", report.samples_page, name="samples"),
    path("versions/<dsv:version_id>/report/residual/", report.residual_page, name="residual"),
    path("versions/<dsv:version_id>/findings/", report.findings_mark, name="findings_mark"),
    path("versions/<dsv:version_id>/seal/", report.seal_page, name="seal"),
    # Old integer URLs: a redirect for the owner's members, else 404 (common/pages/legacy.py).
    path(
        "<int:legacy_dataset_id>/",
        legacy_redirect("ds", owner="owner", to="custody:dataset", kwarg="dataset_id"),
        name="legacy_dataset",
    ),
    path(
        "versions/<int:legacy_version_id>/",
        legacy_redirect("dsv", owner="dataset__owner", to="custody:version", kwarg="version_id"),
        name="legacy_version",
    ),
    path(
        "versions/<int:legacy_version_id>/report/",
        legacy_redirect("dsv", owner="dataset__owner", to="custody:report", kwarg="version_id"),
        name="legacy_report",
    ),
]
