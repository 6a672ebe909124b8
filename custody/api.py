"""Custody API: datasets, versions, chunked uploads, processing, review and seal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.fields import StrictIntegerField
from common.api.idempotency import idempotent_post
from common.api.ids import PublicIdField, PublicIdListField
from common.api.parsers import OctetStreamParser
from common.api.views import SealroomApi, SealroomListApi, request_user
from common.exceptions import NotPermitted
from common.models import Organisation, Role, Scope
from common.permissions import acting_organisation_required as acting_org
from custody import selectors, services
from custody.models import Contribution, Dataset, DatasetVersion, Finding
from custody.services.datasets import require_role


class DatasetSerializer(serializers.Serializer):
    id = PublicIdField(prefix="ds", source="public_id")
    name = serializers.CharField()
    slug = serializers.CharField()
    description = serializers.CharField()
    policy = serializers.JSONField()
    created_at = serializers.DateTimeField()


class VersionSerializer(serializers.Serializer):
    id = PublicIdField(prefix="dsv", source="public_id")
    dataset_id = PublicIdField(prefix="ds", source="dataset.public_id")
    number = serializers.IntegerField()
    state = serializers.CharField()
    stage = serializers.CharField()
    records_expected = serializers.IntegerField()
    records_done = serializers.IntegerField()
    records = serializers.IntegerField()
    tokens = serializers.IntegerField()
    failure_reason = serializers.CharField()
    epsilon_cap = serializers.DecimalField(max_digits=8, decimal_places=3, allow_null=True)
    merkle_root = serializers.CharField()
    created_at = serializers.DateTimeField()
    sealed_at = serializers.DateTimeField(allow_null=True)


class ContributionSerializer(serializers.Serializer):
    id = PublicIdField(prefix="ctb", source="public_id")
    version_id = PublicIdField(prefix="dsv", source="version.public_id")
    contributor_id = PublicIdField(prefix="org", source="contributor.public_id")
    filename = serializers.CharField()
    format = serializers.CharField()
    gzip = serializers.BooleanField()
    text_fields = serializers.ListField(child=serializers.CharField())
    metadata_fields = serializers.ListField(child=serializers.CharField())
    state = serializers.CharField()
    size_expected = serializers.IntegerField(allow_null=True)
    size_received = serializers.IntegerField()
    parts_received = serializers.SerializerMethodField()
    records = serializers.IntegerField()
    tokens = serializers.IntegerField()
    failure_reason = serializers.SerializerMethodField()

    def get_failure_reason(self, obj: Contribution) -> str:
        # The detail may quote the contributor's records: only the contributor reads it.
        viewer = self.context.get("organisation_id")
        if not obj.failure_reason or viewer == obj.contributor_id:
            return obj.failure_reason
        return "This upload could not be processed."

    def get_parts_received(self, obj: Contribution) -> list[int]:
        return list(obj.parts.order_by("number").values_list("number", flat=True))


class DatasetListCreateApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.PROVIDE}
    serializer_class = DatasetSerializer
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=120)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        policy = serializers.JSONField(required=False)

    def get_queryset(self) -> QuerySet[Dataset]:
        return selectors.dataset_list_for_org(organisation=acting_org(self.request))

    @extend_schema(summary="Datasets your organisation owns")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses={201: DatasetSerializer}, summary="Create a dataset")
    @idempotent_post("datasets.create")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = services.dataset_create(
            actor=request_user(request),
            organisation=acting_org(request),
            **data.validated_data,
        )
        return Response(DatasetSerializer(dataset).data, status=201)


class VersionCreateApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}

    class InputSerializer(serializers.Serializer):
        epsilon_cap = serializers.DecimalField(
            max_digits=8, decimal_places=3, required=False, allow_null=True
        )

    @extend_schema(request=InputSerializer, responses={201: VersionSerializer}, summary="Open a new version")
    @idempotent_post("versions.create")
    def post(self, request: Request, dataset_id: int) -> Response:
        dataset = selectors.dataset_get_for_org(organisation=acting_org(request), dataset_id=dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cap = data.validated_data.get("epsilon_cap")
        version = services.version_create(
            actor=request_user(request),
            dataset=dataset,
            epsilon_cap=Decimal(cap) if cap is not None else None,
        )
        return Response(VersionSerializer(version).data, status=201)


class VersionDetailApi(SealroomApi):
    @extend_schema(responses=VersionSerializer, summary="A version, with its progress")
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(organisation=acting_org(request), version_id=version_id)
        return Response(VersionSerializer(version).data)


class ContributorInviteApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        organisation_id = PublicIdField(prefix="org")

    @extend_schema(request=InputSerializer, responses={201: None}, summary="Let another provider contribute")
    @idempotent_post("contributors.invite")
    def post(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        other = Organisation.objects.filter(pk=data.validated_data["organisation_id"]).first()
        if other is None:
            from custody.exceptions import Invalid

            raise Invalid(
                "No such organisation.",
                code="custody.organisation_unknown",
                errors=[
                    {"pointer": "/organisation_id", "code": "unknown", "detail": "No such organisation."}
                ],
            )
        services.contributor_invite(actor=request_user(request), version=version, organisation=other)
        return Response(status=201)


class ContributionStartApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409, 413)

    class InputSerializer(serializers.Serializer):
        filename = serializers.CharField(max_length=1000)
        format = serializers.ChoiceField(
            choices=["jsonl", "csv", "text_lines", "text_documents", "parquet"], required=False
        )
        text_fields = serializers.ListField(child=serializers.CharField(), required=False, default=["text"])
        metadata_fields = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        size = StrictIntegerField(required=False, min_value=1)

    @extend_schema(
        request=InputSerializer,
        responses={201: ContributionSerializer},
        summary="Start an upload (then PUT its parts and POST complete)",
    )
    @idempotent_post("contributions.start")
    def post(self, request: Request, version_id: int) -> Response:
        organisation = acting_org(request)
        version = selectors.version_get_for_org(organisation=organisation, version_id=version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        contribution = services.contribution_start(
            actor=request_user(request),
            organisation=organisation,
            version=version,
            filename=v["filename"],
            format=v.get("format"),
            text_fields=v["text_fields"],
            metadata_fields=v["metadata_fields"],
            size_expected=v.get("size"),
        )
        return Response(
            ContributionSerializer(contribution, context={"organisation_id": acting_org(request).pk}).data,
            status=201,
        )


def _own_contribution(request: Request, contribution_id: int) -> Contribution:
    contribution = selectors.contribution_get_for_org(
        organisation=acting_org(request), contribution_id=contribution_id
    )
    if contribution.contributor_id != acting_org(request).pk:
        raise NotPermitted(
            "Only the contributing organisation uploads its parts.", code="custody.not_contributor"
        )
    return contribution


class ContributionDetailApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "DELETE": Scope.PROVIDE}
    problem_statuses = (409,)

    @extend_schema(responses=ContributionSerializer, summary="An upload: which parts arrived (to resume)")
    def get(self, request: Request, contribution_id: int) -> Response:
        contribution = selectors.contribution_get_for_org(
            organisation=acting_org(request), contribution_id=contribution_id
        )
        return Response(
            ContributionSerializer(contribution, context={"organisation_id": acting_org(request).pk}).data
        )

    @extend_schema(responses={204: None}, summary="Abandon an unfinished upload (its parts are shredded)")
    def delete(self, request: Request, contribution_id: int) -> Response:
        contribution = _own_contribution(request, contribution_id)
        services.contribution_abandon(actor=request_user(request), contribution=contribution)
        return Response(status=204)


class ContributionPartApi(SealroomApi):
    required_scopes = {"PUT": Scope.PROVIDE}
    parser_classes = [OctetStreamParser]
    problem_statuses = (409, 413)

    class OutputSerializer(serializers.Serializer):
        number = serializers.IntegerField()
        size = serializers.IntegerField()
        sha256 = serializers.CharField()

    @extend_schema(
        request={"application/octet-stream": {"type": "string", "format": "binary"}},
        responses=OutputSerializer,
        summary="Upload one part (re-sending a part replaces it)",
    )
    def put(self, request: Request, contribution_id: int, number: int) -> Response:
        contribution = _own_contribution(request, contribution_id)
        require_role(request_user(request), contribution.contributor, Role.MEMBER)
        data = request.data
        if not isinstance(data, bytes):
            from common.exceptions import UnsupportedFormat

            raise UnsupportedFormat("Send the part as application/octet-stream.")
        part = services.contribution_part_put(contribution=contribution, number=number, data=data)
        return Response(self.OutputSerializer(part).data)


class ContributionCompleteApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409, 413)

    @extend_schema(
        request=None, responses={202: ContributionSerializer}, summary="Finish an upload; ingest starts"
    )
    def post(self, request: Request, contribution_id: int) -> Response:
        contribution = _own_contribution(request, contribution_id)
        done = services.contribution_complete(actor=request_user(request), contribution=contribution)
        return Response(
            ContributionSerializer(done, context={"organisation_id": acting_org(request).pk}).data,
            status=202,
        )


class _VersionActionApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409,)
    owner_only = True

    def version(self, request: Request, version_id: int) -> DatasetVersion:
        return selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )


class VersionProcessApi(_VersionActionApi):
    @extend_schema(request=None, responses={202: VersionSerializer}, summary="Close uploads and process")
    def post(self, request: Request, version_id: int) -> Response:
        version = services.version_process(
            actor=request_user(request), version=self.version(request, version_id)
        )
        return Response(VersionSerializer(version).data, status=202)


class VersionRetryApi(_VersionActionApi):
    @extend_schema(request=None, responses={202: VersionSerializer}, summary="Retry a failed ingest")
    def post(self, request: Request, version_id: int) -> Response:
        version = services.version_retry(
            actor=request_user(request), version=self.version(request, version_id)
        )
        return Response(VersionSerializer(version).data, status=202)


class VersionSealApi(_VersionActionApi):
    class InputSerializer(serializers.Serializer):
        confirm_residual_risk = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Seal even though the residual-risk estimate is above the confirmation threshold "
            "(else 409 custody.residual_risk_unconfirmed).",
        )

    @extend_schema(
        request=InputSerializer, responses=VersionSerializer, summary="Apply drops and seal (immutable)"
    )
    def post(self, request: Request, version_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_seal(
            actor=request_user(request),
            version=self.version(request, version_id),
            confirm_residual_risk=data.validated_data["confirm_residual_risk"],
        )
        return Response(VersionSerializer(version).data)


class VersionRejectApi(_VersionActionApi):
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)

    @extend_schema(request=InputSerializer, responses=VersionSerializer, summary="Reject the version")
    def post(self, request: Request, version_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_reject(
            actor=request_user(request), version=self.version(request, version_id), **data.validated_data
        )
        return Response(VersionSerializer(version).data)


class ResidualRowSerializer(serializers.Serializer):
    entity_type = serializers.CharField()
    records = serializers.IntegerField(help_text="Sampled records where the strict detector found this type")
    rate = serializers.FloatField(help_text="records / sampled_records")
    low = serializers.FloatField(help_text="Lower bound of the 95% Wilson score interval")
    high = serializers.FloatField(help_text="Upper bound of the 95% Wilson score interval")


class ResidualSerializer(serializers.Serializer):
    sampled_records = serializers.IntegerField()
    records = serializers.IntegerField()
    interval = serializers.CharField(help_text="wilson-95: a 95% Wilson score interval")
    any = ResidualRowSerializer()
    by_entity_type = ResidualRowSerializer(many=True)
    confirm_above = serializers.FloatField()
    needs_confirmation = serializers.BooleanField()


class ReportApi(SealroomApi):
    problem_statuses = (409,)

    class OutputSerializer(serializers.Serializer):
        counts = serializers.JSONField()
        findings_summary = serializers.JSONField()
        created_at = serializers.DateTimeField()
        residual = serializers.SerializerMethodField()

        @extend_schema_field(ResidualSerializer(allow_null=True))
        def get_residual(self, obj: Any) -> dict[str, Any] | None:
            estimate = services.version_residual_estimate(version=obj.version)
            return None if estimate is None else dict(ResidualSerializer(estimate.to_dict()).data)

    @extend_schema(responses=OutputSerializer, summary="Desensitization report (counts and findings summary)")
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )
        report = getattr(version, "report", None)
        if report is None:
            from custody.exceptions import Conflict

            raise Conflict("The report is written when processing finishes.", code="custody.report_not_ready")
        return Response(self.OutputSerializer(report).data)


_SPANS_HELP = "[start, end, entity_type] of each replaced span, as offsets into the text"


class ReportSamplesApi(SealroomApi):
    problem_statuses = (422,)

    class QuerySerializer(serializers.Serializer):
        language = serializers.CharField(required=False, allow_blank=True, max_length=8)
        entity_type = serializers.CharField(required=False, allow_blank=True, max_length=40)
        offset = StrictIntegerField(required=False, min_value=0, max_value=1_000_000, default=0)
        limit = StrictIntegerField(required=False, min_value=1, max_value=1000, default=100)

    class OutputSerializer(serializers.Serializer):
        record_id = serializers.IntegerField()
        field = serializers.CharField()
        language = serializers.CharField()
        entities = serializers.ListField(child=serializers.CharField())
        before = serializers.CharField()
        after = serializers.CharField()
        before_spans = serializers.ListField(child=serializers.ListField(), help_text=_SPANS_HELP)
        after_spans = serializers.ListField(child=serializers.ListField(), help_text=_SPANS_HELP)

    @extend_schema(
        responses=OutputSerializer(many=True),
        parameters=[QuerySerializer],
        summary="Before/after samples, by language and entity type (audited)",
    )
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = services.report_samples_page(
            actor=request_user(request),
            version=version,
            language=query.validated_data.get("language") or None,
            entity_type=query.validated_data.get("entity_type") or None,
            offset=query.validated_data["offset"],
            limit=query.validated_data["limit"],
        )
        response = Response(self.OutputSerializer(found.samples, many=True).data)
        response["X-Total-Count"] = str(found.total)
        return response


class ReportResidualApi(SealroomApi):
    problem_statuses = (422,)

    class QuerySerializer(serializers.Serializer):
        entity_type = serializers.CharField(required=False, allow_blank=True, max_length=40)

    class OutputSerializer(serializers.Serializer):
        record_id = serializers.IntegerField()
        field = serializers.CharField()
        language = serializers.CharField()
        entities = serializers.ListField(child=serializers.CharField())
        text = serializers.CharField(help_text="The record's field as stored, after desensitization")
        hits = serializers.ListField(
            child=serializers.ListField(),
            help_text="[start, end, entity_type] of what the strict detector found",
        )

    @extend_schema(
        responses=OutputSerializer(many=True),
        parameters=[QuerySerializer],
        summary="Sampled records where the strict detector still found something (audited)",
    )
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        examples = services.residual_examples(
            actor=request_user(request),
            version=version,
            entity_type=query.validated_data.get("entity_type") or None,
        )
        return Response(self.OutputSerializer(examples, many=True).data)


class FindingSerializer(serializers.Serializer):
    id = PublicIdField(prefix="fnd", source="public_id")
    record_id = serializers.IntegerField()
    kind = serializers.CharField()
    detail = serializers.CharField()
    group = serializers.CharField()
    score = serializers.FloatField(allow_null=True)
    drop = serializers.BooleanField()


class FindingQuerySerializer(serializers.Serializer):
    # A CharField refuses NUL bytes, which Postgres cannot compare.
    kind = serializers.CharField(required=False, allow_blank=True, max_length=32)


class FindingListApi(SealroomListApi):
    serializer_class = FindingSerializer
    required_scopes = {"GET": Scope.READ, "POST": Scope.PROVIDE}
    problem_statuses = (409, 422)

    class InputSerializer(serializers.Serializer):
        finding_ids = PublicIdListField(prefix="fnd", allow_empty=False, max_length=100_000)
        drop = serializers.BooleanField()

    def get_queryset(self) -> QuerySet[Finding]:
        version = selectors.version_get_for_org(
            organisation=acting_org(self.request),
            version_id=self.kwargs["version_id"],
            owner_only=True,
        )
        query = FindingQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.finding_list(version=version, kind=query.validated_data.get("kind") or None)

    @extend_schema(
        summary="Screening findings",
        parameters=[OpenApiParameter("kind", str, description="Only findings of this kind")],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses={200: None}, summary="Mark findings to drop (or keep)")
    def post(self, request: Request, version_id: int) -> Response:
        version = selectors.version_get_for_org(
            organisation=acting_org(request), version_id=version_id, owner_only=True
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = services.findings_mark(
            actor=request_user(request),
            version=version,
            finding_ids=data.validated_data["finding_ids"],
            drop=data.validated_data["drop"],
        )
        return Response({"changed": changed})
