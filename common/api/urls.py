from django.urls import path

from common.api import audit, views, webhooks

urlpatterns = [
    path("me", views.MeApi.as_view(), name="api-me"),
    path("organisations/<org:org_id>/members", views.MemberListApi.as_view(), name="api-members"),
    path(
        "organisations/<org:org_id>/members/<mem:membership_id>",
        views.MemberDetailApi.as_view(),
        name="api-member-detail",
    ),
    path(
        "organisations/<org:org_id>/invitations",
        views.InvitationCreateApi.as_view(),
        name="api-invitations",
    ),
    path(
        "organisations/<org:org_id>/notifications",
        webhooks.NotificationListApi.as_view(),
        name="api-notifications",
    ),
    path("organisations/<org:org_id>/webhooks", webhooks.WebhookListApi.as_view(), name="api-webhooks"),
    path(
        "organisations/<org:org_id>/webhooks/<whk:webhook_id>",
        webhooks.WebhookDetailApi.as_view(),
        name="api-webhook-detail",
    ),
    path(
        "organisations/<org:org_id>/webhooks/<whk:webhook_id>/deliveries",
        webhooks.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path("tokens", views.TokenListCreateApi.as_view(), name="api-tokens"),
    path("tokens/<tok:token_id>", views.TokenRevokeApi.as_view(), name="api-token-detail"),
    path("audit/keys", audit.AuditPublicKeysApi.as_view(), name="api-audit-keys"),
    path(
        "audit/checkpoints/latest",
        audit.AuditCheckpointLatestApi.as_view(),
        name="api-audit-checkpoint-latest",
    ),
]
