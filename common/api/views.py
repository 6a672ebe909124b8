"""Foundation API: the caller, members, invitations and API tokens."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common import selectors, services
from common.api.fields import StrictIntegerField
from common.api.idempotency import idempotent_post
from common.api.ids import PublicIdField
from common.exceptions import NotPermitted
from common.models import ApiToken, Membership, Role, Scope, User
from common.permissions import OrgRoleRequired, ScopeRequired, acting_membership, role_at_least


def request_user(request: Request) -> User:
    """The authenticated user (views behind IsAuthenticated only)."""
    user = request.user
    if not isinstance(user, User):
        raise TypeError("request_user needs an authenticated request")
    return user


class SealroomApi(APIView):
    """Base for API views: authenticated, token scopes and organisation roles checked."""

    permission_classes = [IsAuthenticated, ScopeRequired, OrgRoleRequired]


class SealroomListApi(generics.ListAPIView, SealroomApi):
    """Base for paginated list endpoints (``?page=``, ``?page_size=``)."""

    permission_classes = SealroomApi.permission_classes


class OrganisationSerializer(serializers.Serializer):
    id = PublicIdField(prefix="org", source="public_id")
    name = serializers.CharField()
    slug = serializers.CharField()
    is_provider = serializers.BooleanField()
    is_trainer = serializers.BooleanField()


class MembershipOutSerializer(serializers.Serializer):
    organisation = OrganisationSerializer()
    role = serializers.ChoiceField(choices=Role.choices)


class MeApi(SealroomApi):
    class OutputSerializer(serializers.Serializer):
        id = PublicIdField(prefix="usr")
        username = serializers.CharField()
        email = serializers.EmailField()
        platform_role = serializers.CharField(allow_blank=True)
        memberships = MembershipOutSerializer(many=True)
        acting_organisation_id = PublicIdField(prefix="org", allow_null=True)
        token_scopes = serializers.ListField(child=serializers.CharField(), allow_null=True)

    @extend_schema(responses=OutputSerializer, summary="The caller, its organisations and roles")
    def get(self, request: Request) -> Response:
        user = request_user(request)
        token = request.auth if isinstance(request.auth, ApiToken) else None
        memberships = selectors.membership_list_for_user(user=user)
        acting = acting_membership(request)
        data = {
            "id": user.public_id,
            "username": user.get_username(),
            "email": user.email,
            "platform_role": user.platform_role,
            "memberships": [{"organisation": m.organisation, "role": m.role} for m in memberships],
            "acting_organisation_id": acting.organisation.public_id if acting else None,
            "token_scopes": token.scopes if token else None,
        }
        return Response(self.OutputSerializer(data).data)


class MemberOutSerializer(serializers.Serializer):
    id = PublicIdField(prefix="mem", source="public_id")
    username = serializers.CharField(source="user.username")
    email = serializers.EmailField(source="user.email")
    role = serializers.ChoiceField(choices=Role.choices)
    created_at = serializers.DateTimeField()


def _membership_for(request: Request, org_id: int, needed: str) -> Any:
    membership = selectors.membership_get(user=request_user(request), organisation_id=org_id)
    token = request.auth if isinstance(request.auth, ApiToken) else None
    if token is not None and token.organisation_id != org_id:
        # A token acts for its own organisation only.
        raise NotPermitted("This token acts for another organisation.", code="common.token_other_org")
    if not role_at_least(membership.role, needed):
        raise NotPermitted(
            f"This needs the '{needed}' role in {membership.organisation.name}.",
            code="common.role_insufficient",
        )
    return membership


class MemberListApi(SealroomListApi):
    serializer_class = MemberOutSerializer

    def get_queryset(self) -> QuerySet[Membership]:
        membership = _membership_for(self.request, self.kwargs["org_id"], Role.VIEWER)
        return selectors.member_list(organisation=membership.organisation)

    @extend_schema(summary="Members of an organisation")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class MemberDetailApi(SealroomApi):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.ADMIN, "DELETE": Scope.ADMIN}

    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(responses=MemberOutSerializer, summary="One member")
    def get(self, request: Request, org_id: int, membership_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.VIEWER)
        target = selectors.member_get(organisation=membership.organisation, membership_id=membership_id)
        return Response(MemberOutSerializer(target).data)

    @extend_schema(request=InputSerializer, responses=MemberOutSerializer, summary="Change a member's role")
    def patch(self, request: Request, org_id: int, membership_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.ADMIN)
        target = selectors.member_get(organisation=membership.organisation, membership_id=membership_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = services.membership_role_change(
            actor=request_user(request),
            membership=target,
            role=data.validated_data["role"],
        )
        return Response(MemberOutSerializer(changed).data)

    @extend_schema(responses={204: None}, summary="Remove a member (revokes their tokens)")
    def delete(self, request: Request, org_id: int, membership_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.ADMIN)
        target = selectors.member_get(organisation=membership.organisation, membership_id=membership_id)
        services.membership_remove(actor=request_user(request), membership=target)
        return Response(status=204)


class InvitationCreateApi(SealroomApi):
    required_scope = Scope.ADMIN
    problem_statuses = (409,)

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        role = serializers.ChoiceField(choices=Role.choices)

    class OutputSerializer(serializers.Serializer):
        id = PublicIdField(prefix="inv", source="public_id")
        email = serializers.EmailField()
        role = serializers.CharField()
        expires_at = serializers.DateTimeField()

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer},
        summary="Invite someone by e-mail (the link is mailed, never returned)",
    )
    @idempotent_post("invitations.create")
    def post(self, request: Request, org_id: int) -> Response:
        membership = _membership_for(request, org_id, Role.ADMIN)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, _secret = services.invitation_create(
            actor=request_user(request),
            organisation=membership.organisation,
            **data.validated_data,
        )
        return Response(self.OutputSerializer(invitation).data, status=201)


class TokenOutSerializer(serializers.Serializer):
    id = PublicIdField(prefix="tok", source="public_id")
    name = serializers.CharField()
    prefix = serializers.CharField()
    organisation_id = PublicIdField(prefix="org", source="organisation.public_id")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices))
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class TokenListCreateApi(SealroomListApi):
    required_scopes = {"GET": Scope.READ, "POST": Scope.ADMIN}

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=80)
        organisation_id = PublicIdField(prefix="org")
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False
        )
        expires_in_days = StrictIntegerField(required=False, min_value=1)

    class CreatedSerializer(TokenOutSerializer):
        token = serializers.CharField(help_text="The secret: shown this once, never again")

    serializer_class = TokenOutSerializer

    def get_queryset(self) -> QuerySet[ApiToken]:
        return selectors.token_list_for_user(user=request_user(self.request))

    @extend_schema(summary="Your API tokens")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses={201: CreatedSerializer}, summary="Create an API token")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = selectors.membership_get(
            user=request_user(request),
            organisation_id=data.validated_data["organisation_id"],
        )
        caller_token = request.auth if isinstance(request.auth, ApiToken) else None
        if caller_token is not None and not set(data.validated_data["scopes"]) <= set(caller_token.scopes):
            raise NotPermitted(
                "A token cannot create a token with more scopes than its own.",
                code="common.token_scope_escalation",
            )
        token, secret = services.api_token_create(
            user=request_user(request),
            organisation=membership.organisation,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
            expires_in_days=data.validated_data.get("expires_in_days"),
        )
        body = dict(TokenOutSerializer(token).data)
        body["token"] = secret
        return Response(body, status=201)


class TokenRevokeApi(SealroomApi):
    required_scopes = {"DELETE": Scope.ADMIN}

    @extend_schema(responses={204: None}, summary="Revoke an API token")
    def delete(self, request: Request, token_id: int) -> Response:
        token = selectors.token_get_for_user(user=request_user(request), token_id=token_id)
        services.api_token_revoke(actor=request_user(request), token=token)
        return Response(status=204)
