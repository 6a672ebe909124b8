from django.urls import path

from common.api import audit, views

urlpatterns = [
    path("me", views.MeApi.as_view(), name="api-me"),
    path("organisations/<int:org_id>/members", views.MemberListApi.as_view(), name="api-members"),
    path(
        "organisations/<int:org_id>/members/<int:membership_id>",
        views.MemberDetailApi.as_view(),
        name="api-member-detail",
    ),
    path(
        "organisations/<int:org_id>/invitations",
        views.InvitationCreateApi.as_view(),
        name="api-invitations",
    ),
    path("tokens", views.TokenListCreateApi.as_view(), name="api-tokens"),
    path("tokens/<int:token_id>", views.TokenRevokeApi.as_view(), name="api-token-detail"),
    path("audit/keys", audit.AuditPublicKeysApi.as_view(), name="api-audit-keys"),
    path(
        "audit/checkpoints/latest",
        audit.AuditCheckpointLatestApi.as_view(),
        name="api-audit-checkpoint-latest",
    ),
]
