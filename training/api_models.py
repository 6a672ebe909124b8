"""Plug-in inference API (issue 16 item 2): ``POST /models/{id}/generate`` and ``/classify``.

Asynchronous: the POST checks the caller's model license, the terms' token limits and the
prompts, queues the call on queue ``serving`` and answers 202 with the call; the caller polls
``GET /models/calls/{id}`` (the SDK's ``infer`` helper does). A model answers in seconds on a
CPU worker (the sandbox starts, the model loads), longer than a web request should wait, and
the call's usage is recorded by the worker that ran it: a synchronous wait would tie a web
worker to a serving worker's pace and lose nothing but the poll.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.fields import StrictIntegerField
from common.api.idempotency import OPTIONAL_HEADER, idempotent_response
from common.api.ids import PublicIdField
from common.api.throttling import InferenceRateThrottle
from common.api.views import SealroomApi, request_user
from common.models import Role, Scope
from common.permissions import acting_organisation_required
from training.models import InferenceCall, TrainingJob
from training.services.serving import InferenceRequest, inference_get, inference_submit


class InferenceCallSerializer(serializers.Serializer):
    id = PublicIdField(prefix="inf", source="public_id")
    model = serializers.CharField(source="model_ref")
    task = serializers.CharField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    outputs = serializers.JSONField(
        help_text="Per prompt: {text, withheld, detail} (generate) or {label, score} (classify)"
    )
    withheld = serializers.IntegerField(help_text="Outputs the extraction guard withheld")
    error = serializers.SerializerMethodField()

    def get_error(self, call: InferenceCall) -> dict[str, str] | None:
        return {"code": call.error_code, "detail": call.error_detail} if call.error_code else None


class _InferenceApi(SealroomApi):
    required_scopes = {"POST": Scope.TRAIN}
    required_roles = {"POST": Role.MEMBER}
    problem_statuses = (409,)
    task = ""
    # The platform's throttles plus the lower inference rate (SEALROOM_THROTTLE_INFERENCE).
    throttle_classes = [*APIView.throttle_classes, InferenceRateThrottle]

    def check_throttles(self, request: Request) -> None:
        """As DRF's, but a 429 from the inference rate names that limit."""
        waits: list[float] = []
        refused = False
        inference: InferenceRateThrottle | None = None
        for throttle in self.get_throttles():
            if not throttle.allow_request(request, self):
                refused = True
                wait = throttle.wait()
                if wait is not None:
                    waits.append(wait)
                if isinstance(throttle, InferenceRateThrottle):
                    inference = throttle
        if not refused:
            return
        wait = max(waits, default=None)
        if inference is not None:
            raise Throttled(
                wait,
                detail=(
                    f"Inference calls are limited to {inference.rate} per API token "
                    "(SEALROOM_THROTTLE_INFERENCE)."
                ),
            )
        raise Throttled(wait)

    def _submit(self, request: Request, job_id: int, fields: dict[str, Any]) -> Response:
        organisation = acting_organisation_required(request)
        model_ref = TrainingJob.objects.filter(pk=job_id).values_list("public_id", flat=True).first() or ""

        def run(key: str) -> tuple[int, Any]:
            call = inference_submit(
                actor=request_user(request),
                organisation=organisation,
                request=InferenceRequest(model_ref=model_ref, task=self.task, idempotency_key=key, **fields),
            )
            return 202, dict(InferenceCallSerializer(call).data)

        return idempotent_response(request, endpoint=f"models.{self.task}", body=request.data, run=run)


class ModelGenerateApi(_InferenceApi):
    task = "generate"

    class InputSerializer(serializers.Serializer):
        prompts = serializers.JSONField(help_text="1-16 prompts (strings)")
        max_new_tokens = StrictIntegerField(
            required=False, default=32, help_text="Tokens to generate per prompt"
        )

    @extend_schema(
        request=InputSerializer,
        responses={202: InferenceCallSerializer},
        parameters=[OPTIONAL_HEADER],
        summary="Generate with a licensed custody model (causal LM): queued, poll the call",
    )
    def post(self, request: Request, job_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._submit(request, job_id, dict(data.validated_data))


class ModelClassifyApi(_InferenceApi):
    task = "classify"

    class InputSerializer(serializers.Serializer):
        prompts = serializers.JSONField(help_text="1-16 texts to classify (strings)")

    @extend_schema(
        request=InputSerializer,
        responses={202: InferenceCallSerializer},
        parameters=[OPTIONAL_HEADER],
        summary="Classify with a licensed custody model: queued, poll the call",
    )
    def post(self, request: Request, job_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._submit(request, job_id, {"prompts": data.validated_data["prompts"], "max_new_tokens": 0})


class InferenceCallDetailApi(SealroomApi):
    @extend_schema(responses=InferenceCallSerializer, summary="One inference call of your organisation")
    def get(self, request: Request, call_id: int) -> Response:
        organisation = acting_organisation_required(request)
        public_id = InferenceCall.objects.filter(pk=call_id).values_list("public_id", flat=True).first() or ""
        return Response(
            InferenceCallSerializer(inference_get(organisation=organisation, public_id=public_id)).data
        )
