"""Training API: templates, base models, jobs, metrics, artifacts and receipts."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.idempotency import OPTIONAL_HEADER, idempotent_response
from common.api.ids import PublicIdField
from common.api.views import SealroomApi, SealroomListApi, request_user
from common.audit import audit_record
from common.models import Organisation, Role, Scope
from common.permissions import acting_organisation, acting_organisation_required
from custody.models import Grant
from training import selectors, services
from training.artifacts import artifact_stream
from training.exceptions import Conflict, Invalid, NotFound, NotPermitted, TooLarge
from training.job_templates import template_list
from training.models import BaseModel, JobState, TrainingJob
from training.services.mixed_jobs import MixPart, job_submit_mixed


class BaseSerializer(serializers.Serializer):
    id = PublicIdField(prefix="base", source="public_id")
    name = serializers.CharField()
    kind = serializers.CharField()
    task = serializers.CharField()
    architecture = serializers.CharField()
    parameters = serializers.IntegerField()
    file_hash = serializers.CharField()
    state = serializers.CharField()
    failure_reason = serializers.CharField()
    description = serializers.CharField()
    size = serializers.IntegerField()
    files = serializers.JSONField()
    owner_id = PublicIdField(prefix="org", source="owner.public_id", allow_null=True)
    created_at = serializers.DateTimeField()
    validated_at = serializers.DateTimeField(allow_null=True)


class JobSerializer(serializers.Serializer):
    id = PublicIdField(prefix="job", source="public_id")
    state = serializers.CharField()
    template = serializers.CharField()
    base = serializers.SerializerMethodField()
    license = serializers.CharField(source="grant.external_ref", help_text="The license reference (lic_...)")
    grant_id = PublicIdField(prefix="gnt", source="grant.public_id")
    dataset_version_id = PublicIdField(prefix="dsv", source="grant.version.public_id")
    purpose = serializers.CharField()
    request = serializers.JSONField()
    dp_enabled = serializers.BooleanField()
    epsilon_reserved = serializers.DecimalField(max_digits=8, decimal_places=3, allow_null=True)
    epsilon_spent = serializers.DecimalField(max_digits=10, decimal_places=4, allow_null=True)
    epochs = serializers.IntegerField()
    tokens_planned = serializers.IntegerField()
    tokens_trained = serializers.IntegerField()
    failure_code = serializers.CharField()
    failure_reason = serializers.CharField()
    licenses = serializers.SerializerMethodField(
        help_text="Every license the job reads under, with its mixing weight (basis points) and the "
        "platform tokens planned and read from its version; one entry unless the job mixes licenses"
    )
    cancel_requested = serializers.SerializerMethodField()
    attempts = serializers.IntegerField()
    progress = serializers.SerializerMethodField()
    artifact = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_base(self, job: TrainingJob) -> dict[str, Any]:
        return {"id": job.base.public_id, "name": job.base.name, "sha256": job.base.file_hash}

    def get_licenses(self, job: TrainingJob) -> list[dict[str, Any]]:
        components = list(job.components.all())  # prefetched by the list selectors
        if not components:
            return [
                {
                    "license": job.grant.external_ref,
                    "grant_id": job.grant.public_id,
                    "dataset_version_id": job.grant.version.public_id,
                    "weight_bps": 10_000,
                    "tokens_planned": job.tokens_planned,
                    "tokens_trained": job.tokens_trained,
                }
            ]
        return [
            {
                "license": c.grant.external_ref,
                "grant_id": c.grant.public_id,
                "dataset_version_id": c.grant.version.public_id,
                "weight_bps": c.weight_bps,
                "tokens_planned": c.tokens_planned,
                "tokens_trained": c.tokens_trained,
            }
            for c in components
        ]

    def get_cancel_requested(self, job: TrainingJob) -> bool:
        return job.cancel_requested_at is not None

    def get_progress(self, job: TrainingJob) -> dict[str, Any]:
        return {
            "step": job.step,
            "total_steps": job.total_steps,
            "epoch": job.epoch,
            "loss": job.loss,
            "tokens_per_s": job.tokens_per_s,
            "eta_s": job.eta_s,
            "updated_at": job.progress_at.isoformat() if job.progress_at else None,
        }

    def get_artifact(self, job: TrainingJob) -> dict[str, Any] | None:
        if not job.artifact_blob_key:
            return None
        return {
            "downloadable": job.state == JobState.SUCCEEDED and not job.artifact_encrypted,
            "kept_in_custody": job.artifact_encrypted,
            "size": job.artifact_size,
            "files": job.artifact_files,
        }


# --- templates and bases ---------------------------------------------------------------------


class TemplateListApi(SealroomApi):
    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Job templates, their knobs and DP support")
    def get(self, request: Request) -> Response:
        return Response({"results": [t.as_dict() for t in template_list()]})


class BaseArchiveParser(BaseParser):
    """A base model archive (zip or tar), spooled to a temporary file up to the base size limit."""

    media_type = "*/*"

    def parse(  # type: ignore[override]
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> IO[bytes]:
        limit = settings.TRAINING_BASE_MAX_BYTES
        spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 - returned open
        size = 0
        while stream is not None and (chunk := stream.read(1 << 20)):
            size += len(chunk)
            if size > limit:
                spool.close()
                raise TooLarge(
                    f"A base model archive may be at most {limit:,} bytes.", code="training.base_too_large"
                )
            spool.write(chunk)
        spool.seek(0)
        return spool


class BaseListUploadApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.TRAIN}
    required_roles = {"POST": Role.MEMBER}
    serializer_class = BaseSerializer
    problem_statuses = (409, 413, 415)

    def get_parsers(self) -> list[BaseParser]:
        if self.request is not None and self.request.method == "POST":
            return [BaseArchiveParser()]
        return super().get_parsers()

    def get_queryset(self) -> QuerySet[BaseModel]:
        return selectors.base_list_for_org(organisation=acting_organisation(self.request))

    @extend_schema(summary="Built-in base models and your organisation's uploads")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"application/octet-stream": {"type": "string", "format": "binary"}},
        parameters=[OpenApiParameter("name", str, required=True, description="A name for the base model")],
        responses={202: BaseSerializer},
        summary="Upload a Hugging Face model directory (.zip or .tar.gz); it is validated in the sandbox",
    )
    def post(self, request: Request) -> Response:
        organisation = acting_organisation_required(request)
        if not organisation.is_trainer:
            raise NotPermitted(
                f"{organisation.name} is not a trainer organisation.", code="training.not_trainer"
            )
        name = (request.query_params.get("name") or "").strip()
        if not name or len(name) > 120 or not name.isprintable():
            raise Invalid(
                "Name the base model (?name=, 1 to 120 printable characters).",
                code="training.base_name_invalid",
                errors=[
                    {
                        "pointer": "/name",
                        "code": "invalid",
                        "detail": "Give ?name= (1 to 120 printable characters).",
                    }
                ],
            )
        data: Any = request.data
        if not hasattr(data, "read"):
            raise Invalid("Send the archive as the request body.", code="training.base_invalid")
        try:
            size = data.seek(0, 2)
            data.seek(0)
            base = services.base_upload(
                actor=request_user(request), organisation=organisation, name=name, data=data, size=size
            )
        finally:
            data.close()
        return Response(BaseSerializer(base).data, status=202)


class BaseDetailApi(SealroomApi):
    @extend_schema(responses=BaseSerializer, summary="A base model and its validation")
    def get(self, request: Request, base_id: int) -> Response:
        base = selectors.base_get_for_org(organisation=acting_organisation(request), base_id=base_id)
        return Response(BaseSerializer(base).data)


# --- jobs ---------------------------------------------------------------------------------------


class GrantIdField(PublicIdField):
    """A grant's public id (``gnt_...``); an old integer grant id names no grant.

    An integer (or a string of digits) resolves to 0 like an unknown id, so it answers the
    same 404 ``training.license_not_found``: old ids cannot be told from unknown ones.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(prefix="gnt", **kwargs)

    def to_internal_value(self, data: Any) -> int:  # type: ignore[override]
        if (isinstance(data, int) and not isinstance(data, bool)) or (
            isinstance(data, str) and data.isascii() and data.isdigit()
        ):
            return 0
        return super().to_internal_value(data)


class DpInputSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(default=True)
    target_epsilon = serializers.FloatField(required=False)
    delta = serializers.FloatField(required=False)
    max_grad_norm = serializers.FloatField(required=False)


class MixLicenseSerializer(serializers.Serializer):
    license = serializers.CharField(max_length=120, help_text="A license reference (lic_...)")
    weight = serializers.DecimalField(
        max_digits=12,
        decimal_places=6,
        min_value=Decimal("0.000001"),
        help_text="Its share of the job's platform tokens, relative to the others "
        "(70 and 30, or 0.7 and 0.3)",
    )


class JobListSubmitApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.TRAIN}
    required_roles = {"POST": Role.MEMBER}
    serializer_class = JobSerializer
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        license = serializers.CharField(
            required=False,
            max_length=120,
            help_text="The license the job runs under: the license_ref an order returned (lic_...)",
        )
        grant = GrantIdField(
            required=False,
            help_text="Deprecated (removed in the next release): the license's grant id (gnt_...); "
            "send license",
        )
        licenses = MixLicenseSerializer(
            many=True,
            required=False,
            help_text="A mixed-dataset job: 2 to 8 licenses with mixing weights, instead of license",
        )
        weights_leave = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Mixed jobs: ask for a downloadable model (refused where a license keeps "
            "weights in custody)",
        )
        template = serializers.CharField()
        base = PublicIdField(
            prefix="base",
            required=False,
            help_text="A base model's id, like 'base_0123456789abcdef' (GET /training/bases); "
            "or name custody_model instead",
        )
        custody_model = serializers.CharField(
            required=False,
            max_length=64,
            help_text="Start from a model held in custody instead of a base: the id of the succeeded job "
            "that trained it (job_...); its license must name the use (fine_tune, generate)",
        )
        generation = serializers.DictField(
            required=False,
            help_text="The generate template: prompts (or seed templates), records, max_new_tokens, "
            'temperature, top_k, seed (docs/training.md "Generation")',
        )
        hyperparameters = serializers.DictField(required=False, default=dict)
        dp = DpInputSerializer(required=False, allow_null=True)
        distill = serializers.JSONField(
            required=False,
            allow_null=True,
            help_text="distill_causal_lm / distill_classification: the teacher (a base_... id or a model "
            'held in custody, job_...), alpha and temperature (docs/training.md "Distillation")',
        )
        label_field = serializers.CharField(required=False, allow_blank=True, default="")
        purpose = serializers.CharField(required=False, allow_blank=True, default="")
        # Checked by _devices (a training.* problem), not by DRF: hence a JSON value here.
        devices = serializers.JSONField(
            required=False,
            allow_null=True,
            help_text="Training processes (DDP ranks, one per GPU on GPU workers): an integer from 1 "
            "(default) to the platform's limit",
        )

    def get_queryset(self) -> QuerySet[TrainingJob]:
        return selectors.job_list_for_org(organisation=acting_organisation_required(self.request))

    @extend_schema(summary="Your organisation's training jobs")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InputSerializer,
        responses={202: JobSerializer},
        parameters=[OPTIONAL_HEADER],
        summary="Submit a training job under a license",
    )
    def post(self, request: Request) -> Response:
        organisation = acting_organisation_required(request)
        if not organisation.is_trainer:
            raise NotPermitted(
                f"{organisation.name} is not a trainer organisation.", code="training.not_trainer"
            )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return idempotent_response(
            request,
            endpoint="training.jobs.submit",
            body=request.data,
            run=lambda _key: (202, dict(JobSerializer(self._submit(request, organisation, v)).data)),
        )

    def _submit(self, request: Request, organisation: Organisation, v: dict[str, Any]) -> TrainingJob:
        if v["template"] == "generate" or "custody_model" in v:
            from training.services.generation import job_submit_from_custody_model

            return job_submit_from_custody_model(
                actor=request_user(request),
                organisation=organisation,
                body=v,
                license_grant=(lambda: _license_grant(organisation, v)),
            )
        parts = _mix_parts(organisation, v) if "licenses" in v else None
        grant = _license_grant(organisation, v) if parts is None else None
        try:
            base = selectors.base_get_for_org(organisation=organisation, base_id=v.get("base", 0))
        except NotFound as exc:
            raise Invalid(
                "No such base model.",
                code="training.base_not_found",
                errors=[{"pointer": "/base", "code": "not_found", "detail": "No such base model."}],
            ) from exc
        job_request = services.JobRequest(
            template=v["template"],
            base=base,
            hyperparameters=v["hyperparameters"],
            dp=dict(v["dp"]) if v.get("dp") else None,
            label_field=v["label_field"],
            purpose=v["purpose"],
            devices=_devices(v.get("devices", 1)),
            distill=v.get("distill"),
        )
        if parts is not None:
            return job_submit_mixed(
                actor=request_user(request),
                organisation=organisation,
                parts=parts,
                request=job_request,
                weights_leave=v["weights_leave"],
            )
        assert grant is not None
        return services.job_submit(
            actor=request_user(request), organisation=organisation, grant=grant, request=job_request
        )


def _devices(value: Any) -> int:
    """The devices a submit asks for: a positive integer (the service bounds it by the platform's limit)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        detail = "devices must be a positive integer (training processes, 1 by default)."
        raise Invalid(
            detail,
            code="training.devices_invalid",
            errors=[{"pointer": "/devices", "code": "invalid", "detail": detail}],
        )
    return value


def _mix_parts(organisation: Organisation, v: dict[str, Any]) -> list[MixPart]:
    """The licenses of a mixed submit, each resolved (a pointer at the item it could not find)."""
    if "license" in v or "grant" in v:
        detail = "A mixed job names its licenses in licenses only: not license or grant as well."
        raise Invalid(
            detail,
            code="training.license_required",
            errors=[{"pointer": "/licenses", "code": "ambiguous", "detail": detail}],
        )
    parts = []
    for index, item in enumerate(v["licenses"]):
        try:
            grant = selectors.grant_get_for_license_ref(
                organisation=organisation, license_ref=item["license"]
            )
        except NotFound as exc:
            raise NotFound(
                "No such license.",
                code="training.license_not_found",
                errors=[
                    {
                        "pointer": f"/licenses/{index}/license",
                        "code": "not_found",
                        "detail": "No such license.",
                    }
                ],
            ) from exc
        parts.append(MixPart(grant=grant, weight=item["weight"]))
    seen: set[int] = set()
    for index, part in enumerate(parts):
        if part.grant.pk in seen:
            detail = "This license is named twice; name each license once."
            raise Invalid(
                detail,
                code="training.licenses_invalid",
                errors=[{"pointer": f"/licenses/{index}/license", "code": "duplicate", "detail": detail}],
            )
        seen.add(part.grant.pk)
    return parts


def _license_grant(organisation: Organisation, v: dict[str, Any]) -> Grant:
    """The grant a submit names: by ``license`` (the ref), or by the deprecated ``grant`` id; not both."""
    if ("license" in v) == ("grant" in v):
        detail = (
            "Name the license once: send license (the lic_... reference), not grant as well."
            if "license" in v
            else "Name the license the job runs under: license (the lic_... reference an order returned)."
        )
        code = "ambiguous" if "license" in v else "required"
        raise Invalid(
            detail,
            code="training.license_required",
            errors=[{"pointer": "/license", "code": code, "detail": detail}],
        )
    if "license" in v:
        return selectors.grant_get_for_license_ref(organisation=organisation, license_ref=v["license"])
    try:
        return selectors.grant_get_for_org(organisation=organisation, grant_id=v["grant"])
    except NotFound as exc:
        raise NotFound(
            "No such license.",
            code="training.license_not_found",
            errors=[{"pointer": "/grant", "code": "not_found", "detail": "No such license."}],
        ) from exc


def _job(request: Request, job_id: int) -> TrainingJob:
    return selectors.job_get_for_org(organisation=acting_organisation_required(request), job_id=job_id)


class JobDetailApi(SealroomApi):
    class OutputSerializer(JobSerializer):
        events = serializers.SerializerMethodField()

        def get_events(self, job: TrainingJob) -> list[dict[str, Any]]:
            return [
                {"kind": e.kind, "detail": e.detail, "attempt": e.attempt, "at": e.created_at.isoformat()}
                for e in job.events.all()
            ]

    @extend_schema(responses=OutputSerializer, summary="A job: state, progress, failure reason, events")
    def get(self, request: Request, job_id: int) -> Response:
        return Response(self.OutputSerializer(_job(request, job_id)).data)


class JobCancelApi(SealroomApi):
    required_scopes = {"POST": Scope.TRAIN}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)

    @extend_schema(request=None, responses={200: JobSerializer}, summary="Cancel a job (queued: at once)")
    def post(self, request: Request, job_id: int) -> Response:
        job = services.job_cancel(actor=request_user(request), job=_job(request, job_id))
        return Response(JobSerializer(job).data)


class JobMetricsApi(SealroomApi):
    class OutputSerializer(serializers.Serializer):
        job = PublicIdField(prefix="job", source="public_id")
        state = serializers.CharField()
        metrics = serializers.JSONField()
        loss_curve = serializers.JSONField()
        gate = serializers.JSONField(source="gate_public")

    @extend_schema(
        responses=OutputSerializer,
        summary="Validation metrics, the loss curve (windowed means; none under DP) and the release gate",
    )
    def get(self, request: Request, job_id: int) -> Response:
        return Response(self.OutputSerializer(_job(request, job_id)).data)


def _finished(job: TrainingJob) -> None:
    if job.state != JobState.SUCCEEDED:
        raise Conflict(
            f"Job {job.public_id} is {job.state}: nothing was released.", code="training.artifact_not_ready"
        )


class JobArtifactApi(SealroomApi):
    problem_statuses = (409,)

    @extend_schema(
        responses={(200, "application/gzip"): {"type": "string", "format": "binary"}},
        summary="Download the trained model (tar.gz), where the license lets weights leave custody",
    )
    def get(self, request: Request, job_id: int) -> FileResponse:
        job = _job(request, job_id)
        _finished(job)
        if job.artifact_encrypted:
            raise Conflict(
                "This license keeps the trained weights in custody: they cannot be downloaded.",
                code="training.weights_in_custody",
            )
        audit_record(
            action="training.artifact_download",
            actor=request_user(request),
            organisation=job.organisation,
            object_type="training_job",
            object_id=job.pk,
            details={"size": job.artifact_size},
        )
        response = FileResponse(
            artifact_stream(job),
            content_type="application/gzip",
            as_attachment=True,
            filename=f"job-{job.public_id}.tar.gz",
        )
        return response


class JobReceiptApi(SealroomApi):
    problem_statuses = (409,)

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="The job's signed receipt")
    def get(self, request: Request, job_id: int) -> Response:
        job = _job(request, job_id)
        _finished(job)
        response = Response(job.receipt)
        response["Content-Disposition"] = f'attachment; filename="job-{job.public_id}-receipt.json"'
        return response


class TrainingLicenseSerializer(serializers.Serializer):
    id = PublicIdField(prefix="gnt", source="public_id")
    dataset = serializers.CharField(source="version.dataset.name")
    version = PublicIdField(prefix="dsv", source="version.public_id")
    state = serializers.CharField()
    terms = serializers.JSONField()
    jobs_reserved = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)


class LicenseListApi(SealroomListApi):
    # Paginated like every list: an organisation may hold any number of licenses.
    serializer_class = TrainingLicenseSerializer

    def get_queryset(self) -> QuerySet[Grant]:
        return selectors.grant_list_for_org(organisation=acting_organisation_required(self.request))

    @extend_schema(summary="The licenses your organisation may train under")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
