"""Valuation API: ``POST /training/valuations`` submits a valuation job (issue 15).

One endpoint, two paths (``training/services/valuation.py``): ``version_id`` values the acting
organisation's own version (an admin, no license), ``license`` values a licensed version (a
trainer). The job is a training job: follow it, and read its aggregates, at
``/training/jobs/{id}`` and ``/training/jobs/{id}/metrics``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.fields import StrictIntegerField
from common.api.idempotency import OPTIONAL_HEADER, idempotent_response
from common.api.ids import PublicIdField
from common.api.views import SealroomApi, request_user
from common.models import Organisation, Role, Scope
from common.permissions import acting_organisation_required
from custody.models import DatasetVersion
from training import selectors
from training.api import JobSerializer
from training.exceptions import Invalid, NotFound
from training.models import TrainingJob
from training.services.valuation import ValuationRequest, valuation_submit_licensed, valuation_submit_own


class ValuationSettingsSerializer(serializers.Serializer):
    k = StrictIntegerField(required=False, help_text="Neighbours (K of KNN-Shapley), default 5")
    holdout_fraction = serializers.FloatField(
        required=False, help_text="Share held out as validation when no labelled set is named, default 0.2"
    )
    min_group = StrictIntegerField(
        required=False, help_text="Fewest records any published number may describe (at least 5), default 20"
    )
    flag_margin = serializers.FloatField(
        required=False,
        help_text="Label margin (cosine) over which a record of negative value is flagged, default 0.06",
    )


def _version(version_id: int, pointer: str) -> DatasetVersion:
    version = DatasetVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise NotFound(
            "No such dataset version.",
            code="training.version_not_found",
            errors=[{"pointer": pointer, "code": "not_found", "detail": "No such dataset version."}],
        )
    return version


class ValuationSubmitApi(SealroomApi):
    # Providers hold 'provide', trainers 'train': either scope may submit; the service checks the path.
    required_scopes = {"POST": (Scope.PROVIDE, Scope.TRAIN)}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        version_id = PublicIdField(
            prefix="dsv", required=False, help_text="Your own dataset version (the owner's path, admins)"
        )
        license = serializers.CharField(
            required=False, max_length=120, help_text="A license you hold (lic_...): the trainer's path"
        )
        label_field = serializers.CharField(help_text="The metadata field that holds each record's label")
        validation_version_id = PublicIdField(
            prefix="dsv",
            required=False,
            help_text="A labelled version your organisation owns, the validation set; else a hold-out",
        )
        hyperparameters = serializers.DictField(required=False, default=dict)
        valuation = ValuationSettingsSerializer(required=False)
        purpose = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        request=InputSerializer,
        responses={202: JobSerializer},
        parameters=[OPTIONAL_HEADER],
        summary="Value a dataset version's records (KNN-Shapley): your own, or a licensed one",
    )
    def post(self, request: Request) -> Response:
        organisation = acting_organisation_required(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return idempotent_response(
            request,
            endpoint="training.valuations.submit",
            body=request.data,
            run=lambda _key: (202, dict(JobSerializer(self._submit(request, organisation, v)).data)),
        )

    def _submit(self, request: Request, organisation: Organisation, v: dict[str, Any]) -> TrainingJob:
        if ("version_id" in v) == ("license" in v):
            detail = "Name what to value once: version_id (your own version) or license (a licensed one)."
            raise Invalid(
                detail,
                code="training.valuation_target_required",
                errors=[{"pointer": "/version_id", "code": "required", "detail": detail}],
            )
        validation = (
            _version(v["validation_version_id"], "/validation_version_id")
            if "validation_version_id" in v
            else None
        )
        valuation_request = ValuationRequest(
            label_field=v["label_field"],
            hyperparameters=v["hyperparameters"],
            valuation=dict(v.get("valuation") or {}),
            purpose=v["purpose"],
            validation_version=validation,
        )
        if "version_id" in v:
            return valuation_submit_own(
                actor=request_user(request),
                organisation=organisation,
                version=_version(v["version_id"], "/version_id"),
                request=valuation_request,
            )
        return valuation_submit_licensed(
            actor=request_user(request),
            organisation=organisation,
            grant=selectors.grant_get_for_license_ref(organisation=organisation, license_ref=v["license"]),
            request=valuation_request,
        )
