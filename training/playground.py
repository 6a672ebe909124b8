"""The portal playground for models in custody (issue 16 item 2): a licensee picks one of its
licensed models, types a prompt (or a text to classify) and sees the guarded answer, the tokens
metered and what is left of the license's cap.

The pages call the serving services (training/services/serving.py: ``inference_submit``,
``inference_get``, ``tokens_inferred``), exactly as the API does; the call is answered by a serving
worker, so the call's page polls a live region until the call ends. The prompt is kept only
while the call waits or runs (the service clears it); the page shows what the call keeps.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from common import otp
from common.exceptions import Conflict, DomainError, Invalid, NotFound, NotPermitted
from common.models import Membership, Organisation, Role
from common.pages.helpers import page_user
from common.permissions import role_at_least
from custody.models import CustodyModel, Grant, GrantState
from custody.services.models_custody import custody_model_get
from training.models import BaseTask, InferenceCall, InferenceState, TrainingJob
from training.pages import POLL_SECONDS, _memberships
from training.services.serving import InferenceRequest, inference_get, inference_submit, tokens_inferred

TASK_OF_MODEL = {BaseTask.CAUSAL_LM: "generate", BaseTask.CLASSIFICATION: "classify"}
TASK_WORDS = {"generate": "text generation", "classify": "classification"}
DEFAULT_NEW_TOKENS = 32


@dataclass(frozen=True)
class LicensedModel:
    """A model the organisation holds an active model license on (the newest license, the one
    ``inference_submit`` uses)."""

    grant: Grant
    model: CustodyModel

    @property
    def ref(self) -> str:
        return self.model.job_ref

    @property
    def task(self) -> str:
        return TASK_OF_MODEL.get(BaseTask(self.model.task), "generate")

    @property
    def inference(self) -> dict[str, Any]:
        terms = self.grant.terms.get("inference")
        return terms if isinstance(terms, dict) else {}

    @property
    def cap(self) -> int | None:
        cap = self.inference.get("cap_tokens")
        return int(cap) if cap is not None else None

    @property
    def per_call(self) -> int:
        return int(self.inference.get("max_tokens_per_call") or 0)

    def metered(self) -> int:
        return tokens_inferred(self.grant)

    def remaining(self) -> int | None:
        return None if self.cap is None else max(self.cap - self.metered(), 0)

    @property
    def label(self) -> str:
        return f"{self.ref} · {self.model.base_name}, {TASK_WORDS[self.task]} ({self.grant.external_ref})"


def licensed_models(organisation: Organisation) -> list[LicensedModel]:
    """The organisation's licensed custody models, newest license first, one row per model."""
    grants = Grant.objects.filter(
        licensee=organisation, state=GrantState.ACTIVE, terms__kind="model"
    ).order_by("-pk")
    rows: dict[str, LicensedModel] = {}
    for grant in grants:
        ref = str(grant.terms.get("model") or "")
        if not ref or ref in rows:
            continue
        try:
            model = custody_model_get(job_ref=ref)
        except DomainError:
            continue
        rows[ref] = LicensedModel(grant=grant, model=model)
    return list(rows.values())


class PlaygroundForm(forms.Form):
    """One prompt to one licensed model. Emptiness, length, binary junk and token limits are the
    service's to judge: its messages land on the fields."""

    model = forms.ChoiceField(label="Model", help_text="A model your organisation holds a model license on.")
    prompt = forms.CharField(
        label="Prompt",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="For a classification model, the text to classify. Not kept once the call is answered.",
    )
    max_new_tokens = forms.IntegerField(
        label="Tokens to generate",
        required=False,
        initial=DEFAULT_NEW_TOKENS,
        help_text=(
            "Text generation only; the prompt's and the generated tokens together stay within "
            "the terms' limit per call."
        ),
    )
    # Resubmitting the same page (a double click, the back button) returns the same call.
    nonce = forms.CharField(widget=forms.HiddenInput)

    FIELD_OF_POINTER = {"/model": "model", "/max_new_tokens": "max_new_tokens", "/prompts": "prompt"}

    def __init__(self, *args: Any, models: list[LicensedModel], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models = {m.ref: m for m in models}
        model_field = self.fields["model"]
        assert isinstance(model_field, forms.ChoiceField)
        model_field.choices = [(m.ref, m.label) for m in models]
        self.fields["nonce"].initial = uuid.uuid4().hex

    def request(self) -> InferenceRequest:
        chosen = self.models[self.cleaned_data["model"]]
        new = self.cleaned_data.get("max_new_tokens")
        return InferenceRequest(
            model_ref=chosen.ref,
            task=chosen.task,
            prompts=[self.cleaned_data.get("prompt") or ""],
            max_new_tokens=(DEFAULT_NEW_TOKENS if new is None else new) if chosen.task == "generate" else 0,
            idempotency_key=self._key(chosen.ref, new),
        )

    def _key(self, model_ref: str, new: Any) -> str:
        """The page's key and what it asks: the same page posted again is the same call, and the
        page come back to (the browser's Back) with another prompt is a new one."""
        asked = json.dumps([model_ref, self.cleaned_data.get("prompt") or "", new], ensure_ascii=False)
        digest = hashlib.sha256(asked.encode()).hexdigest()[:24]
        return f"portal-{self.cleaned_data['nonce'][:64]}-{digest}"

    def add_domain_error(self, error: DomainError) -> None:
        """The service's messages on the fields its pointers name; the rest above the form."""
        placed = False
        for item in error.errors:
            pointer = item["pointer"]
            name = self.FIELD_OF_POINTER.get(pointer) or (
                "prompt" if pointer.startswith("/prompts/") else None
            )
            if name is not None and name not in self.errors:
                self.add_error(name, item["detail"])
                placed = True
        if not placed or isinstance(error, Conflict):
            self.add_error(None, error.detail)


def _member(request: HttpRequest) -> Membership:
    memberships = _memberships(request)
    if not memberships:
        raise PermissionDenied("Models are licensed to organisations; you are a member of none.")
    return memberships[0]


@otp.signed_in
@require_http_methods(["GET", "POST"])
def playground(request: HttpRequest) -> HttpResponse:
    """Pick a licensed model, type a prompt, submit: the call's page shows the answer."""
    membership = _member(request)
    can_call = role_at_least(membership.role, Role.MEMBER)
    models = licensed_models(membership.organisation)
    form = PlaygroundForm(request.POST or None, models=models)
    wanted = request.GET.get("model")
    if request.method == "GET" and wanted in form.models:
        form.fields["model"].initial = wanted
    if request.method == "POST":
        if not can_call:
            raise PermissionDenied("Only members and admins call models; your role is viewer.")
        if form.is_valid():
            try:
                call = inference_submit(
                    actor=page_user(request), organisation=membership.organisation, request=form.request()
                )
            except (Invalid, Conflict, NotPermitted, NotFound) as exc:
                form.add_domain_error(exc)
            else:
                return redirect("training:playground_call", call_id=call.public_id)
    return render(
        request,
        "training/playground.html",
        {"form": form, "models": models, "org": membership.organisation, "can_call": can_call},
    )


def _call_for(request: HttpRequest, call_id: int) -> tuple[InferenceCall, Membership]:
    public_id = InferenceCall.objects.filter(pk=call_id).values_list("public_id", flat=True).first() or ""
    for membership in _memberships(request):
        try:
            return inference_get(organisation=membership.organisation, public_id=public_id), membership
        except NotFound:
            continue
    raise Http404("No such inference call.")


def _call_context(call: InferenceCall) -> dict[str, Any]:
    final = call.state in (InferenceState.SUCCEEDED, InferenceState.FAILED)
    cap_terms = call.grant.terms.get("inference") or {}
    cap = cap_terms.get("cap_tokens")
    metered = tokens_inferred(call.grant)
    model = custody_model_get(job_ref=call.model_ref)
    return {
        "call": call,
        "model": model,
        "model_job": TrainingJob.objects.filter(public_id=call.model_ref).first(),
        "task_words": TASK_WORDS.get(call.task, call.task),
        "final": final,
        "polling": not final,
        "poll_seconds": POLL_SECONDS,
        "call_tokens": (
            call.prompt_tokens + call.output_tokens if call.state == InferenceState.SUCCEEDED else None
        ),
        "license_ref": call.grant.external_ref,
        "metered_total": metered,
        "cap": cap,
        "remaining": None if cap is None else max(int(cap) - metered, 0),
    }


@otp.signed_in
@require_GET
def playground_call(request: HttpRequest, call_id: int) -> HttpResponse:
    call, _ = _call_for(request, call_id)
    return render(request, "training/playground_call.html", _call_context(call))


@otp.signed_in
@require_GET
def playground_call_status(request: HttpRequest, call_id: int) -> HttpResponse:
    """The live part of the call's page (htmx swaps it until the call ends)."""
    call, _ = _call_for(request, call_id)
    return render(request, "training/_playground_call.html", _call_context(call))
