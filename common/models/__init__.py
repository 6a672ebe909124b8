from common.models.accounts import (
    ApiToken,
    Invitation,
    LoginThrottle,
    Membership,
    Organisation,
    PlatformRole,
    Role,
    Scope,
    User,
)
from common.models.audit import AuditChainHead, AuditCheckpoint, AuditEvent
from common.models.idempotency import IdempotencyRecord, IdempotencyState
from common.models.notifications import DeliveryState, Notification, WebhookDelivery, WebhookEndpoint
from common.models.work import WorkItem, WorkState

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "DeliveryState",
    "IdempotencyRecord",
    "IdempotencyState",
    "Invitation",
    "LoginThrottle",
    "Membership",
    "Notification",
    "Organisation",
    "PlatformRole",
    "Role",
    "Scope",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WorkItem",
    "WorkState",
]
