"""Withdrawal API: a contributor withdraws its contribution from a sealed version and follows the re-seal.

``POST /api/v1/contributions/<ctb>/withdraw {"reason"}`` answers 202 with the
withdrawal (an admin of the contributing organisation, with a ``provide``
token or a session; an operator from a session). ``GET /api/v1/withdrawals/<wdr>``
shows its state, the successor version and the lineage: every recorded read
of the withdrawn records (the jobs that read them, through which license).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.ids import PublicIdField
from common.api.views import SealroomApi, request_user
from common.models import ApiToken, Organisation, Scope
from common.permissions import acting_organisation_required as acting_org
from custody import selectors, services
from custody.exceptions import NotFound
from custody.models import Contribution, ContributionWithdrawal, DatasetVersion


class LineageReadSerializer(serializers.Serializer):
    consumer_ref = serializers.CharField(help_text="The job that read the records (training-job-N).")
    licensee = serializers.CharField(allow_null=True, help_text="The licensee organisation's name.")
    dataset_version_id = serializers.CharField(help_text="The version whose copy of the records was read.")
    platform_tokens = serializers.IntegerField()
    settled = serializers.BooleanField()


class WithdrawalSerializer(serializers.Serializer):
    id = PublicIdField(prefix="wdr", source="public_id")
    contribution_id = PublicIdField(prefix="ctb", source="contribution.public_id")
    from_version_id = PublicIdField(prefix="dsv", source="from_version.public_id")
    to_version_id = serializers.SerializerMethodField()
    state = serializers.CharField()
    reason = serializers.CharField()
    requested_as = serializers.CharField()
    created_at = serializers.DateTimeField()
    done_at = serializers.DateTimeField(allow_null=True)

    def get_to_version_id(self, withdrawal: ContributionWithdrawal) -> str | None:
        return withdrawal.to_version.public_id if withdrawal.to_version else None


def lineage_rows(withdrawal: ContributionWithdrawal) -> list[dict[str, Any]]:
    reads = services.contribution_lineage(contribution=withdrawal.contribution)
    names = dict(Organisation.objects.filter(pk__in={r.licensee_id for r in reads}).values_list("pk", "name"))
    versions = dict(
        DatasetVersion.objects.filter(pk__in={r.version_id for r in reads}).values_list("pk", "public_id")
    )
    return [
        {
            "consumer_ref": r.consumer_ref,
            "licensee": names.get(r.licensee_id) if r.licensee_id is not None else None,
            "dataset_version_id": versions[r.version_id],
            "platform_tokens": r.tokens,
            "settled": r.settled,
        }
        for r in reads
    ]


def _contribution(request: Request, contribution_id: int) -> Contribution:
    user = request_user(request)
    if user.is_operator and not isinstance(request.auth, ApiToken):
        found = Contribution.objects.select_related("version__dataset", "contributor").filter(
            pk=contribution_id
        )
        if not found.exists():
            raise NotFound("No such upload.", code="custody.contribution_not_found")
        return found.get()
    return selectors.contribution_get_for_org(
        organisation=acting_org(request), contribution_id=contribution_id
    )


class ContributionWithdrawApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300)

    @extend_schema(
        request=InputSerializer,
        responses={202: WithdrawalSerializer},
        summary="Withdraw a contribution from its sealed version (the contributor's admin, or an operator)",
    )
    def post(self, request: Request, contribution_id: int) -> Response:
        contribution = _contribution(request, contribution_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = services.contribution_withdraw(
            actor=request_user(request), contribution=contribution, reason=data.validated_data["reason"]
        )
        return Response(WithdrawalSerializer(withdrawal).data, status=202)


class WithdrawalDetailApi(SealroomApi):
    required_scopes = {"GET": Scope.READ}

    class OutputSerializer(WithdrawalSerializer):
        lineage = LineageReadSerializer(many=True)

    @extend_schema(responses=OutputSerializer, summary="A withdrawal, its successor version and its lineage")
    def get(self, request: Request, withdrawal_id: int) -> Response:
        withdrawal = (
            ContributionWithdrawal.objects.select_related(
                "contribution", "from_version__dataset__owner", "to_version", "organisation"
            )
            .filter(pk=withdrawal_id)
            .first()
        )
        if withdrawal is None:
            raise NotFound("No such withdrawal.", code="custody.withdrawal_not_found")
        user = request_user(request)
        if isinstance(request.auth, ApiToken) or not (user.is_operator or user.is_auditor):
            organisation = acting_org(request)
            if organisation.pk not in (withdrawal.organisation_id, withdrawal.from_version.dataset.owner_id):
                raise NotFound("No such withdrawal.", code="custody.withdrawal_not_found")
        services.withdrawal_visible(actor=user, withdrawal=withdrawal)
        body = dict(WithdrawalSerializer(withdrawal).data)
        body["lineage"] = lineage_rows(withdrawal)
        return Response(body)
