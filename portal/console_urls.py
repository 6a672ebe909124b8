"""The admin audit console, in the ``console`` namespace (mounted under ``console/``)."""

from django.urls import URLPattern, path

from portal.console import audit, keys, operations, overview, withdrawals, work

app_name = "console"

urlpatterns: list[URLPattern] = [
    path("", overview.console_home, name="home"),
    path("audit/", audit.audit_log_page, name="audit"),
    path("audit/export/", audit.audit_export, name="audit_export"),
    path("audit/verify/", audit.audit_verify_page, name="audit_verify"),
    path("audit/checkpoint/", overview.checkpoint_page, name="checkpoint"),
    path("ledger/", overview.ledger_page, name="ledger"),
    path("keys/", keys.keys_page, name="keys"),
    path("keys/rotate/", keys.master_rotate, name="master_rotate"),
    path("keys/<dsv:version_id>/disable/", keys.key_disable, name="key_disable"),
    path("keys/<dsv:version_id>/enable/", keys.key_enable, name="key_enable"),
    path("keys/<dsv:version_id>/destroy/", keys.key_destroy, name="key_destroy"),
    path("work/", work.work_page, name="work"),
    path("work/retry/", work.work_retry_action, name="work_retry"),
    path("takedowns/", operations.takedowns_page, name="takedowns"),
    path("takedowns/take-down/", operations.takedown_action, name="takedown"),
    path("withdrawals/", withdrawals.withdrawals_page, name="withdrawals"),
    path("withdrawals/withdraw/", withdrawals.withdraw_action, name="withdraw"),
    path("payouts/", operations.payouts_page, name="payouts"),
    path("payouts/retry/", operations.payout_retry_action, name="payout_retry"),
    path("refunds/", operations.refunds_page, name="refunds"),
    path("refunds/license/", operations.license_refund_action, name="license_refund"),
]
