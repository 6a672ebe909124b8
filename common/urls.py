"""Pages of the foundation, in the ``common`` namespace."""

from django.contrib.auth.views import (
    PasswordChangeDoneView,
    PasswordResetCompleteView,
    PasswordResetDoneView,
)
from django.urls import URLPattern, path

from common.otp import otp_exempt, signed_in
from common.pages import auth, notifications, organisations, tokens
from common.pages.legacy import legacy_redirect

app_name = "common"

urlpatterns: list[URLPattern] = [
    # Sign-in, sign-up, sign-out
    path("login/", auth.login_page, name="login"),
    path("login/verify/", auth.login_verify_page, name="login_verify"),
    path("login/two-factor/setup/", auth.totp_enroll_page, name="totp_enroll"),
    path("logout/", auth.logout_page, name="logout"),
    path("signup/", auth.signup_page, name="signup"),
    # Account and passwords
    path("account/", auth.account_page, name="account"),
    path("account/password/", signed_in(auth.PasswordChangePage.as_view()), name="password_change"),
    path(
        "account/password/done/",
        signed_in(PasswordChangeDoneView.as_view(template_name="registration/password_change_done.html")),
        name="password_change_done",
    ),
    path("password-reset/", otp_exempt(auth.PasswordResetPage.as_view()), name="password_reset"),
    path(
        "password-reset/sent/",
        otp_exempt(PasswordResetDoneView.as_view(template_name="registration/password_reset_done.html")),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        otp_exempt(auth.PasswordResetConfirmPage.as_view()),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/complete/",
        otp_exempt(
            PasswordResetCompleteView.as_view(template_name="registration/password_reset_complete.html")
        ),
        name="password_reset_complete",
    ),
    # Organisations
    path("organisations/switch/", organisations.org_switch, name="org_switch"),
    path("organisations/<org:org_id>/", organisations.organisation_page, name="org"),
    path("organisations/<org:org_id>/invitations/", organisations.org_invite, name="org_invite"),
    path(
        "organisations/<org:org_id>/members/<mem:membership_id>/role/",
        organisations.org_member_role,
        name="org_member_role",
    ),
    path(
        "organisations/<org:org_id>/members/<mem:membership_id>/remove/",
        organisations.org_member_remove,
        name="org_member_remove",
    ),
    path("invitations/<str:token>/", organisations.invitation_page, name="invitation"),
    # Notifications and webhooks
    path(
        "organisations/<org:org_id>/notifications/",
        notifications.notifications_page,
        name="notifications",
    ),
    path(
        "organisations/<org:org_id>/notifications/read/",
        notifications.notifications_read,
        name="notifications_read",
    ),
    path("organisations/<org:org_id>/webhooks/", notifications.webhooks_page, name="webhooks"),
    path(
        "organisations/<org:org_id>/webhooks/<whk:webhook_id>/",
        notifications.webhook_page,
        name="webhook",
    ),
    path(
        "organisations/<org:org_id>/webhooks/<whk:webhook_id>/toggle/",
        notifications.webhook_toggle,
        name="webhook_toggle",
    ),
    path(
        "organisations/<org:org_id>/webhooks/<whk:webhook_id>/delete/",
        notifications.webhook_delete,
        name="webhook_delete",
    ),
    # API tokens
    path("tokens/", tokens.tokens_page, name="tokens"),
    path("tokens/<tok:token_id>/revoke/", tokens.token_revoke, name="token_revoke"),
    # Old integer URLs: a redirect for the organisation's members, else 404 (common/pages/legacy.py).
    path(
        "organisations/<int:legacy_org_id>/",
        legacy_redirect("org", owner="pk", to="common:org", kwarg="org_id"),
        name="legacy_org",
    ),
    path(
        "organisations/<int:legacy_org_id>/notifications/",
        legacy_redirect("org", owner="pk", to="common:notifications", kwarg="org_id"),
        name="legacy_notifications",
    ),
]
