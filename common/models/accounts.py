"""People, organisations, memberships, invitations and API tokens."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.public_ids import PublicIdField


class PlatformRole(models.TextChoices):
    NONE = "", "None"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Scope(models.TextChoices):
    READ = "read", "Read"
    PROVIDE = "provide", "Provide data"
    ORDER = "order", "Place orders"
    TRAIN = "train", "Train models"
    # Members, invitations, webhooks and API tokens: never implied by any other scope.
    ADMIN = "admin", "Administer the organisation"


class User(AbstractUser):
    """A person. Platform staff carry a platform role; everyone else acts through memberships."""

    public_id = PublicIdField(prefix="usr")
    email = models.EmailField(unique=True)
    platform_role = models.CharField(
        max_length=16, choices=PlatformRole.choices, default=PlatformRole.NONE, blank=True
    )

    @property
    def is_operator(self) -> bool:
        return self.platform_role == PlatformRole.OPERATOR

    @property
    def is_auditor(self) -> bool:
        return self.platform_role == PlatformRole.AUDITOR

    @property
    def is_platform_staff(self) -> bool:
        return self.platform_role in (PlatformRole.OPERATOR, PlatformRole.AUDITOR)


class Organisation(models.Model):
    """A company or team: a data provider, a model trainer, or both."""

    public_id = PublicIdField(prefix="org")
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=64, unique=True)
    is_provider = models.BooleanField(default=False)
    is_trainer = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(is_provider=True) | Q(is_trainer=True),
                name="organisation_is_provider_or_trainer",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def kind_label(self) -> str:
        if self.is_provider and self.is_trainer:
            return "provider and trainer"
        return "provider" if self.is_provider else "trainer"


class Membership(models.Model):
    public_id = PublicIdField(prefix="mem")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique"),
            models.CheckConstraint(
                condition=Q(role__in=["admin", "member", "viewer"]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organisation_id}:{self.role}"


class Invitation(models.Model):
    """An invitation to join an organisation; the secret is stored only as a hash."""

    public_id = PublicIdField(prefix="inv")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation {self.pk} to {self.email}"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class ApiToken(models.Model):
    """A bearer token for the API, acting for one user in one organisation.

    The secret is shown once at creation and stored only as its SHA-256.
    """

    public_id = PublicIdField(prefix="tok")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.prefix} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class LoginThrottle(models.Model):
    """Failed sign-ins per username, for lockout (kept for unknown usernames too)."""

    username = models.CharField(max_length=254, unique=True)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.username}: {self.failures} failures"
