"""Operator API for keys (rotation, rewrap, the two-step shred) and the version takedown.

Operators act and auditors read (``PlatformStaffRequired``), from a signed-in
session only: the session of an operator has passed TOTP, whereas an API token
skips the second factor, so tokens are refused here. The takedown is also the
provider's: an admin of the owning organisation may ask for it (session or a
token with the ``provide`` scope).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.ids import PublicIdField
from common.api.views import SealroomApi, SealroomListApi, request_user
from common.models import ApiToken, Role, Scope
from common.permissions import Forbidden, PlatformStaffRequired
from common.permissions import acting_organisation_required as acting_org
from custody import selectors, services
from custody.api import VersionSerializer
from custody.exceptions import NotFound
from custody.models import DatasetVersion
from custody.services.datasets import require_role


class SessionRequired(BasePermission):
    """Platform powers need a signed-in session (with TOTP for operators), never an API token."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if isinstance(request.auth, ApiToken):
            raise Forbidden(
                "Operator endpoints take a signed-in session with two-factor, not an API token.",
                "custody.session_required",
            )
        return True


class _OpsApi(SealroomApi):
    """Base for operator endpoints: platform staff, from a session."""

    permission_classes = [IsAuthenticated, PlatformStaffRequired, SessionRequired]


def _version(version_id: int) -> DatasetVersion:
    version = DatasetVersion.objects.select_related("dataset__owner").filter(pk=version_id).first()
    if version is None:
        raise NotFound("No such dataset version.", code="custody.version_not_found")
    return version


class VersionKeySerializer(serializers.Serializer):
    version_id = PublicIdField(prefix="dsv")
    version_label = serializers.CharField(
        source="label", help_text="owner/dataset/vN: type it back to confirm a destroy"
    )
    state = serializers.CharField(help_text="the version's state")
    key_state = serializers.ChoiceField(choices=["active", "disabled", "destroyed"])
    key_master = serializers.IntegerField(allow_null=True, help_text="master key version wrapping the KEK")
    key_version = serializers.IntegerField(help_text="data key version")
    key_disabled_at = serializers.DateTimeField(allow_null=True)
    key_destroyed_at = serializers.DateTimeField(allow_null=True)
    destroy_after = serializers.DateTimeField(allow_null=True)


class OpsKeyListApi(SealroomListApi):
    """The current master key version, and every version's key (``?page=``, ``?page_size=``)."""

    permission_classes = _OpsApi.permission_classes
    serializer_class = VersionKeySerializer

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        return DatasetVersion.objects.select_related("dataset__owner").order_by("pk")

    @extend_schema(
        summary="The current master key and every version's key (paginated)",
        responses=inline_serializer(
            "OpsKeyList",
            {
                "master_version": serializers.IntegerField(),
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": VersionKeySerializer(many=True),
            },
        ),
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        statuses = [services.version_key_status(v) for v in page]
        response = self.get_paginated_response(VersionKeySerializer(statuses, many=True).data)
        response.data = {"master_version": services.master_key_version(), **response.data}
        return response


class OpsKeyRotateApi(_OpsApi):
    class InputSerializer(serializers.Serializer):
        rewrap_all = serializers.BooleanField(required=False, default=False)

    class OutputSerializer(serializers.Serializer):
        previous_master_version = serializers.IntegerField()
        master_version = serializers.IntegerField()
        rewrapped_versions = serializers.IntegerField(allow_null=True)
        rewrapped_quarantine = serializers.IntegerField(allow_null=True)
        already_current = serializers.IntegerField(allow_null=True)
        destroyed = serializers.IntegerField(allow_null=True)

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Rotate the master key (and optionally rewrap every KEK under it)",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        actor = request_user(request)
        previous = services.master_key_version()
        master = services.master_key_rotate(actor=actor)
        body: dict[str, Any] = {"previous_master_version": previous, "master_version": master}
        summary = services.kek_rewrap_all(actor=actor) if data.validated_data["rewrap_all"] else None
        body |= {
            "rewrapped_versions": summary.versions if summary else None,
            "rewrapped_quarantine": summary.quarantine if summary else None,
            "already_current": summary.current if summary else None,
            "destroyed": summary.destroyed if summary else None,
        }
        return Response(self.OutputSerializer(body).data)


class OpsVersionKeyApi(_OpsApi):
    @extend_schema(responses=VersionKeySerializer, summary="A version's key: state, master, shred timing")
    def get(self, request: Request, version_id: int) -> Response:
        status = services.version_key_status(_version(version_id))
        return Response(VersionKeySerializer(status).data)


class _OpsKeyActionApi(_OpsApi):
    problem_statuses = (409,)

    def respond(self, version: DatasetVersion) -> Response:
        return Response(VersionKeySerializer(services.version_key_status(version)).data)


class OpsVersionKeyRewrapApi(_OpsKeyActionApi):
    @extend_schema(
        request=None, responses=VersionKeySerializer, summary="Rewrap its KEK under the current master"
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _version(version_id)
        services.version_rekey(actor=request_user(request), version=version)
        return self.respond(version)


class OpsVersionDataKeyRotateApi(_OpsKeyActionApi):
    @extend_schema(
        request=None,
        responses=VersionKeySerializer,
        summary="Re-encrypt a sealed version under a new data key",
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = services.version_data_key_rotate(actor=request_user(request), version=_version(version_id))
        return self.respond(version)


class OpsVersionKeyDisableApi(_OpsKeyActionApi):
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300)

    @extend_schema(
        request=InputSerializer,
        responses=VersionKeySerializer,
        summary="Shred step 1: disable the key (reversible; starts the delay)",
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _version(version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_key_disable(
            actor=request_user(request), version=version, reason=data.validated_data["reason"]
        )
        return self.respond(version)


class OpsVersionKeyEnableApi(_OpsKeyActionApi):
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses=VersionKeySerializer, summary="Undo a disable")
    def post(self, request: Request, version_id: int) -> Response:
        version = _version(version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_key_enable(
            actor=request_user(request), version=version, reason=data.validated_data["reason"]
        )
        return self.respond(version)


class OpsVersionKeyDestroyApi(_OpsKeyActionApi):
    class InputSerializer(serializers.Serializer):
        confirm = serializers.CharField(max_length=300, help_text="the version's label, owner/dataset/vN")

    @extend_schema(
        request=InputSerializer,
        responses=VersionKeySerializer,
        summary="Shred step 2: destroy the key for good (after the delay, on a taken-down version)",
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _version(version_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_key_destroy(
            actor=request_user(request), version=version, confirm=data.validated_data["confirm"]
        )
        return self.respond(version)


class VersionTakedownApi(SealroomApi):
    required_scopes = {"POST": Scope.PROVIDE}
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=300)

    @extend_schema(
        request=InputSerializer,
        responses=VersionSerializer,
        summary="Take a version down: revoke its grants, withdraw it everywhere (provider admin or operator)",
    )
    def post(self, request: Request, version_id: int) -> Response:
        user = request_user(request)
        if user.is_operator and not isinstance(request.auth, ApiToken):
            version = _version(version_id)
        else:
            # A token never carries platform powers: its holder acts as a member.
            version = selectors.version_get_for_org(
                organisation=acting_org(request), version_id=version_id, owner_only=True
            )
            require_role(user, version.dataset.owner, Role.ADMIN)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.version_takedown(actor=user, version=version, reason=data.validated_data["reason"])
        return Response(VersionSerializer(version).data)
