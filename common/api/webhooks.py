"""Notifications and webhook endpoints of an organisation, with each endpoint's delivery log.

Any member reads notifications (token scope ``read``) and marks them read
(any scope but ``read``); only admins see and manage webhook endpoints (a
token needs ``admin`` to change them), since an endpoint's URL and
delivery log say where the organisation's events go. The signing secret is
returned once, in the answer to the create call.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common import webhooks
from common.api.ids import PublicIdField, PublicIdListField
from common.api.views import SealroomApi, SealroomListApi, _membership_for, request_user
from common.models import DeliveryState, Notification, Role, Scope, WebhookDelivery, WebhookEndpoint
from common.notifications import notification_list, notification_unread_count, notifications_mark_read
from common.permissions import ANY_WRITE_SCOPE


class NotificationOutSerializer(serializers.Serializer):
    id = PublicIdField(prefix="ntf", source="public_id")
    event_id = serializers.UUIDField()
    kind = serializers.CharField()
    subject = serializers.CharField()
    payload = serializers.JSONField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)


class NotificationListApi(SealroomListApi):
    serializer_class = NotificationOutSerializer
    required_scopes = {"GET": Scope.READ, "POST": ANY_WRITE_SCOPE}

    class InputSerializer(serializers.Serializer):
        ids = PublicIdListField(
            prefix="ntf",
            required=False,
            max_length=1000,
            help_text="Notifications to mark read; leave out to mark all read",
        )

    class MarkedSerializer(serializers.Serializer):
        marked = serializers.IntegerField(help_text="How many notifications changed from unread to read")
        unread = serializers.IntegerField()

    def get_queryset(self) -> QuerySet[Notification]:
        membership = _membership_for(self.request, self.kwargs["org_id"], Role.VIEWER)
        unread_only = self.request.query_params.get("unread") in ("1", "true")
        return notification_list(organisation=membership.organisation, unread_only=unread_only)

    @extend_schema(
        summary="The organisation's notifications, newest first",
        parameters=[OpenApiParameter("unread", bool, description="Only unread ones")],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses=MarkedSerializer, summary="Mark notifications read")
    def post(self, request: Request, org_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.VIEWER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        marked = notifications_mark_read(
            organisation=membership.organisation, ids=data.validated_data.get("ids")
        )
        unread = notification_unread_count(organisation=membership.organisation)
        return Response(self.MarkedSerializer({"marked": marked, "unread": unread}).data)


class WebhookOutSerializer(serializers.Serializer):
    id = PublicIdField(prefix="whk", source="public_id")
    url = serializers.URLField()
    description = serializers.CharField()
    event_kinds = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    disabled_at = serializers.DateTimeField(allow_null=True)


class WebhookListApi(SealroomListApi):
    serializer_class = WebhookOutSerializer
    required_scopes = {"GET": Scope.READ, "POST": Scope.ADMIN}

    class InputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=500, help_text="http(s) URL that receives the signed POSTs")
        event_kinds = serializers.ListField(
            child=serializers.CharField(max_length=80),
            required=False,
            max_length=50,
            help_text="Kinds ('order.paid') or families ('order.*') to send; empty for all",
        )
        description = serializers.CharField(max_length=200, required=False, allow_blank=True)

    class CreatedSerializer(WebhookOutSerializer):
        secret = serializers.CharField(help_text="The signing secret: shown this once, never again")

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        membership = _membership_for(self.request, self.kwargs["org_id"], Role.ADMIN)
        return webhooks.webhook_endpoint_list(organisation=membership.organisation)

    @extend_schema(summary="The organisation's webhook endpoints (admins)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InputSerializer, responses={201: CreatedSerializer}, summary="Register a webhook endpoint"
    )
    def post(self, request: Request, org_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.ADMIN)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_endpoint_create(
            actor=request_user(request),
            organisation=membership.organisation,
            url=data.validated_data["url"],
            event_kinds=data.validated_data.get("event_kinds"),
            description=data.validated_data.get("description", ""),
        )
        body = dict(WebhookOutSerializer(endpoint).data)
        body["secret"] = secret
        return Response(body, status=201)


class WebhookDetailApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.ADMIN, "DELETE": Scope.ADMIN}

    class InputSerializer(serializers.Serializer):
        active = serializers.BooleanField(
            help_text="false disables the endpoint and fails its pending deliveries"
        )

    def _endpoint(self, request: Request, org_id: int, webhook_id: int) -> WebhookEndpoint:
        membership = _membership_for(request, org_id, Role.ADMIN)
        return webhooks.webhook_endpoint_get(organisation=membership.organisation, endpoint_id=webhook_id)

    @extend_schema(responses=WebhookOutSerializer, summary="One webhook endpoint")
    def get(self, request: Request, org_id: int, webhook_id: int) -> Response:
        return Response(WebhookOutSerializer(self._endpoint(request, org_id, webhook_id)).data)

    @extend_schema(request=InputSerializer, responses=WebhookOutSerializer, summary="Enable or disable")
    def patch(self, request: Request, org_id: int, webhook_id: int) -> Response:
        endpoint = self._endpoint(request, org_id, webhook_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = webhooks.webhook_endpoint_set_active(
            actor=request_user(request), endpoint=endpoint, active=data.validated_data["active"]
        )
        return Response(WebhookOutSerializer(changed).data)

    @extend_schema(responses={204: None}, summary="Delete an endpoint and its delivery log")
    def delete(self, request: Request, org_id: int, webhook_id: int) -> Response:
        endpoint = self._endpoint(request, org_id, webhook_id)
        webhooks.webhook_endpoint_delete(actor=request_user(request), endpoint=endpoint)
        return Response(status=204)


class DeliveryOutSerializer(serializers.Serializer):
    id = PublicIdField(prefix="dlv", source="public_id")
    event_id = serializers.UUIDField()
    kind = serializers.CharField()
    state = serializers.ChoiceField(choices=DeliveryState.choices)
    attempts = serializers.IntegerField()
    last_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)


class WebhookDeliveryListApi(SealroomListApi):
    serializer_class = DeliveryOutSerializer

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        membership = _membership_for(self.request, self.kwargs["org_id"], Role.ADMIN)
        endpoint = webhooks.webhook_endpoint_get(
            organisation=membership.organisation, endpoint_id=self.kwargs["webhook_id"]
        )
        return webhooks.webhook_delivery_list(endpoint=endpoint)

    @extend_schema(summary="An endpoint's delivery log, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
