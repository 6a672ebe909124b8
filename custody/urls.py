from django.urls import path

from custody import api, api_ops, api_withdrawal

urlpatterns = [
    path("datasets", api.DatasetListCreateApi.as_view(), name="api-datasets"),
    path("datasets/<ds:dataset_id>/versions", api.VersionCreateApi.as_view(), name="api-dataset-versions"),
    path("versions/<dsv:version_id>", api.VersionDetailApi.as_view(), name="api-version-detail"),
    path(
        "versions/<dsv:version_id>/contributors",
        api.ContributorInviteApi.as_view(),
        name="api-version-contributors",
    ),
    path(
        "versions/<dsv:version_id>/contributions",
        api.ContributionStartApi.as_view(),
        name="api-contributions",
    ),
    path("versions/<dsv:version_id>/process", api.VersionProcessApi.as_view(), name="api-version-process"),
    path("versions/<dsv:version_id>/retry", api.VersionRetryApi.as_view(), name="api-version-retry"),
    path("versions/<dsv:version_id>/seal", api.VersionSealApi.as_view(), name="api-version-seal"),
    path("versions/<dsv:version_id>/reject", api.VersionRejectApi.as_view(), name="api-version-reject"),
    path("versions/<dsv:version_id>/report", api.ReportApi.as_view(), name="api-version-report"),
    path(
        "versions/<dsv:version_id>/report/samples", api.ReportSamplesApi.as_view(), name="api-version-samples"
    ),
    path(
        "versions/<dsv:version_id>/report/residual",
        api.ReportResidualApi.as_view(),
        name="api-version-residual",
    ),
    path("versions/<dsv:version_id>/findings", api.FindingListApi.as_view(), name="api-version-findings"),
    path(
        "contributions/<ctb:contribution_id>",
        api.ContributionDetailApi.as_view(),
        name="api-contribution-detail",
    ),
    path(
        "contributions/<ctb:contribution_id>/parts/<int:number>",
        api.ContributionPartApi.as_view(),
        name="api-contribution-part",
    ),
    path(
        "contributions/<ctb:contribution_id>/complete",
        api.ContributionCompleteApi.as_view(),
        name="api-contribution-complete",
    ),
    path(
        "versions/<dsv:version_id>/takedown",
        api_ops.VersionTakedownApi.as_view(),
        name="api-version-takedown",
    ),
    path("ops/keys", api_ops.OpsKeyListApi.as_view(), name="api-ops-keys"),
    path("ops/keys/rotate", api_ops.OpsKeyRotateApi.as_view(), name="api-ops-keys-rotate"),
    path("ops/versions/<dsv:version_id>/key", api_ops.OpsVersionKeyApi.as_view(), name="api-ops-version-key"),
    path(
        "ops/versions/<dsv:version_id>/key/rewrap",
        api_ops.OpsVersionKeyRewrapApi.as_view(),
        name="api-ops-version-key-rewrap",
    ),
    path(
        "ops/versions/<dsv:version_id>/key/disable",
        api_ops.OpsVersionKeyDisableApi.as_view(),
        name="api-ops-version-key-disable",
    ),
    path(
        "ops/versions/<dsv:version_id>/key/enable",
        api_ops.OpsVersionKeyEnableApi.as_view(),
        name="api-ops-version-key-enable",
    ),
    path(
        "ops/versions/<dsv:version_id>/key/destroy",
        api_ops.OpsVersionKeyDestroyApi.as_view(),
        name="api-ops-version-key-destroy",
    ),
    path(
        "ops/versions/<dsv:version_id>/data-key/rotate",
        api_ops.OpsVersionDataKeyRotateApi.as_view(),
        name="api-ops-version-data-key-rotate",
    ),
    path(
        "contributions/<ctb:contribution_id>/withdraw",
        api_withdrawal.ContributionWithdrawApi.as_view(),
        name="api-contribution-withdraw",
    ),
    path(
        "withdrawals/<wdr:withdrawal_id>",
        api_withdrawal.WithdrawalDetailApi.as_view(),
        name="api-withdrawal-detail",
    ),
]
