"""Datasets of the current organisation, one dataset with its versions, opening a version."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.forms import add_domain_error
from common.models import Membership, Role
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from custody import selectors, services
from custody.models import Dataset, DatasetVersion, VersionState
from custody.pages.access import can_act, current_membership, dataset_for, require_role
from custody.pages.forms import DatasetForm, VersionForm

DATASETS_PER_PAGE = 25
VERSIONS_PER_PAGE = 25


def _provider_membership(request: HttpRequest) -> Membership:
    membership = current_membership(request)
    if membership is None or not membership.organisation.is_provider:
        acting = f" {membership.organisation.name} is a trainer." if membership else ""
        raise PermissionDenied(
            "Datasets belong to provider organisations." + acting + " Switch to a provider organisation "
            "in the header to see its datasets."
        )
    return membership


@otp.signed_in
@require_http_methods(["GET", "POST"])
def dataset_list_page(request: HttpRequest) -> HttpResponse:
    """The current organisation's datasets, and (for members) the form to create one."""
    membership = _provider_membership(request)
    form = DatasetForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        require_role(membership, Role.MEMBER, "create datasets")
        if form.is_valid():
            try:
                dataset = services.dataset_create(
                    actor=page_user(request),
                    organisation=membership.organisation,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    policy=form.policy_dict(),
                )
            except Invalid as exc:
                add_domain_error(form, exc)
            except Conflict as exc:
                form.add_error("name", exc.detail)
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                messages.success(request, f"Dataset “{dataset.name}” is ready. Open its first version below.")
                return redirect("custody:dataset", dataset_id=dataset.public_id)
    latest = DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by("-number")
    datasets = selectors.dataset_list_for_org(organisation=membership.organisation).annotate(
        version_count=Count("versions"),
        latest_number=Subquery(latest.values("number")[:1]),
        latest_state=Subquery(latest.values("state")[:1]),
    )
    page = page_of(request, datasets, DATASETS_PER_PAGE)
    for dataset in page:
        state = getattr(dataset, "latest_state", None)
        dataset.latest_state_label = VersionState(state).label if state else ""
    context = {
        "org": membership.organisation,
        "membership": membership,
        "can_act": can_act(membership),
        "page": page,
        "form": form,
    }
    return render(request, "custody/dataset_list.html", context)


def _render_dataset(
    request: HttpRequest, dataset: Dataset, membership: Membership, form: VersionForm | None = None
) -> HttpResponse:
    versions = selectors.version_list_for_dataset(dataset=dataset)
    context = {
        "dataset": dataset,
        "membership": membership,
        "can_act": can_act(membership),
        "page": page_of(request, versions, VERSIONS_PER_PAGE),
        "form": form or VersionForm(),
        "policy_name": (dataset.policy or {}).get("name", "default"),
    }
    return render(request, "custody/dataset.html", context)


@otp.signed_in
@require_http_methods(["GET"])
def dataset_page(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """A dataset: its versions with state and progress; members open new versions."""
    dataset, membership = dataset_for(request, dataset_id)
    return _render_dataset(request, dataset, membership)


@otp.signed_in
@require_POST
def version_create(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """Open a new version for uploads (with an optional epsilon cap)."""
    dataset, membership = dataset_for(request, dataset_id)
    require_role(membership, Role.MEMBER, "open versions")
    form = VersionForm(request.POST)
    if form.is_valid():
        try:
            version = services.version_create(
                actor=page_user(request), dataset=dataset, epsilon_cap=form.cleaned_data["epsilon_cap"]
            )
        except Invalid as exc:
            add_domain_error(form, exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, f"Version {version.number} is open: upload its files below.")
            return redirect("custody:version", version_id=version.public_id)
    return _render_dataset(request, dataset, membership, form)
