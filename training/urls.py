"""Training API routes under /api/v1/."""

from django.urls import URLPattern, path

from training import api, api_models, valuation_api

urlpatterns: list[URLPattern] = [
    path("training/templates", api.TemplateListApi.as_view(), name="api-training-templates"),
    path("training/licenses", api.LicenseListApi.as_view(), name="api-training-licenses"),
    path("training/bases", api.BaseListUploadApi.as_view(), name="api-training-bases"),
    path("training/bases/<base:base_id>", api.BaseDetailApi.as_view(), name="api-training-base-detail"),
    path("training/jobs", api.JobListSubmitApi.as_view(), name="api-training-jobs"),
    path("training/jobs/<job:job_id>", api.JobDetailApi.as_view(), name="api-training-job-detail"),
    path("training/jobs/<job:job_id>/cancel", api.JobCancelApi.as_view(), name="api-training-job-cancel"),
    path("training/jobs/<job:job_id>/metrics", api.JobMetricsApi.as_view(), name="api-training-job-metrics"),
    path(
        "training/jobs/<job:job_id>/artifact", api.JobArtifactApi.as_view(), name="api-training-job-artifact"
    ),
    path("training/jobs/<job:job_id>/receipt", api.JobReceiptApi.as_view(), name="api-training-job-receipt"),
    path("training/valuations", valuation_api.ValuationSubmitApi.as_view(), name="api-training-valuations"),
    # Plug-in inference on custody models (issue 16).
    path("models/<job:job_id>/generate", api_models.ModelGenerateApi.as_view(), name="api-models-generate"),
    path("models/<job:job_id>/classify", api_models.ModelClassifyApi.as_view(), name="api-models-classify"),
    path("models/calls/<inf:call_id>", api_models.InferenceCallDetailApi.as_view(), name="api-models-call"),
]
