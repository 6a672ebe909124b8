"""The portal's generation form (issue 17 item 1): a synthetic corpus from a model held in custody.

The API's generate job (``POST /api/v1/training/jobs`` with ``template: generate``) as a page at
/training/jobs/generate/, linked from the job form and from a custody model's job page. It offers
only the models the acting organisation may generate from (``generation_models``: its own succeeded
causal-LM jobs whose weights stay in custody, under licenses that are active and name ``generate``,
and another organisation's it holds a model license on that allows generation), so a model it may
not use is never offered and a forged choice is refused on its field. The form only parses (one
prompt a line, whole numbers, a number); the limits are the service's
(``training.services.generation.generation_submit``, the same call as the API's), and its problem
pointers land on the fields they name. A valid submit goes to the job's page.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.models import Membership, Organisation, Role
from common.numbers import StrictIntegerField
from common.pages.helpers import page_user, raise_http
from common.permissions import role_at_least
from custody.models import Grant, GrantState
from training.models import BaseTask, JobState, JobTemplate, TrainingJob
from training.runner.generate import DEFAULTS, MAX_NEW_TOKENS, MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_RECORDS
from training.services.custody_models import custody_model_access
from training.services.generation import generation_submit

# The most recent candidate jobs the model picker considers (each is checked against its licenses).
MODEL_CANDIDATES = 200


def generation_models(organisation: Organisation) -> list[TrainingJob]:
    """The models held in custody ``organisation`` may generate from, newest first: its own, under
    the licenses they were trained under, then other organisations' it holds a model license on
    whose terms allow generation (``custody_model_access`` decides both)."""
    held = (
        TrainingJob.objects.select_related("base", "grant__version__dataset")
        .filter(state=JobState.SUCCEEDED, artifact_encrypted=True, base__task=BaseTask.CAUSAL_LM)
        .exclude(artifact_blob_key="")
        .exclude(template__in=[JobTemplate.VALUATION, JobTemplate.GENERATE])
    )
    licensed_refs = Grant.objects.filter(
        licensee=organisation, state=GrantState.ACTIVE, terms__kind="model"
    ).values_list("terms__model", flat=True)
    candidates = [
        *held.filter(organisation=organisation).order_by("-created_at", "-pk")[:MODEL_CANDIDATES],
        *held.filter(public_id__in=[str(ref) for ref in licensed_refs])
        .exclude(organisation=organisation)
        .order_by("-created_at", "-pk")[:MODEL_CANDIDATES],
    ]
    allowed = []
    for model in candidates:
        try:
            custody_model_access(organisation=organisation, model=model, use="generate")
        except (Conflict, Invalid, NotFound):
            continue
        allowed.append(model)
    return allowed


def may_generate_from(model: TrainingJob, membership: Membership) -> bool:
    """Whether the member may start a generation job from ``model`` (the job page's link)."""
    if not (membership.organisation.is_trainer and role_at_least(membership.role, Role.MEMBER)):
        return False
    if model.base.task != BaseTask.CAUSAL_LM:
        return False
    try:
        custody_model_access(organisation=membership.organisation, model=model, use="generate")
    except (Conflict, Invalid, NotFound):
        return False
    return True


def _model_label(model: TrainingJob) -> str:
    version = model.grant.version
    return f"{model.base.name} on {version.dataset.name} v{version.number} · {model.public_id}"


def _number_input(low: int | float, high: int | float, step: str = "1") -> forms.NumberInput:
    return forms.NumberInput(attrs={"min": low, "max": high, "step": step})


class GenerateForm(forms.Form):
    custody_model = forms.ChoiceField(
        label="Model held in custody",
        help_text="A causal language model held in custody: one your organisation trained, under a license "
        "that permits generation, or another organisation's whose model license you hold allows it.",
    )
    prompts = forms.CharField(
        label="Prompts",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text=(
            f"One prompt per line ({MAX_PROMPTS:,} at most, each up to {MAX_PROMPT_CHARS:,} characters); "
            "the model continues each one. Blank lines are skipped."
        ),
    )
    records = StrictIntegerField(
        label="Number of records",
        min_value=None,
        max_value=None,
        initial=100,
        widget=_number_input(1, MAX_RECORDS),
        help_text=f"How many records to generate, 1 to {MAX_RECORDS:,}, spread evenly over the prompts.",
    )
    max_new_tokens = StrictIntegerField(
        label="Maximum new tokens per record",
        min_value=None,
        max_value=None,
        initial=DEFAULTS["max_new_tokens"],
        widget=_number_input(1, MAX_NEW_TOKENS),
        help_text=f"1 to {MAX_NEW_TOKENS}: how far the model continues each prompt.",
    )
    temperature = forms.FloatField(
        label="Temperature",
        initial=DEFAULTS["temperature"],
        widget=_number_input(0, 5, step="any"),
        help_text="Above 0 and at most 5: lower is more predictable, higher more varied.",
    )

    # The service's problem pointers (training/services/generation.py) and the fields they name.
    FIELD_OF_POINTER = {
        "/custody_model": "custody_model",
        "/terms/permission/job_templates": "custody_model",
        "/generation": "prompts",
        "/generation/prompts": "prompts",
        "/generation/records": "records",
        "/generation/max_new_tokens": "max_new_tokens",
        "/generation/temperature": "temperature",
    }

    def __init__(self, *args: Any, models: list[TrainingJob], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models = {model.public_id: model for model in models}
        field = self.fields["custody_model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(key, _model_label(model)) for key, model in self.models.items()]
        # Where the text's prompts start: the line of each prompt, for errors on prompt i.
        self.prompt_lines: list[int] = []

    def clean_prompts(self) -> list[str]:
        lines = str(self.cleaned_data["prompts"]).split("\n")
        prompts = []
        for number, line in enumerate(lines, start=1):
            line = line.removesuffix("\r")
            if line.strip():
                prompts.append(line)
                self.prompt_lines.append(number)
        return prompts

    def model(self) -> TrainingJob:
        return self.models[self.cleaned_data["custody_model"]]

    def generation(self) -> dict[str, Any]:
        """The API's ``generation`` block."""
        data = self.cleaned_data
        return {
            "prompts": data["prompts"],
            "records": data["records"],
            "max_new_tokens": data["max_new_tokens"],
            "temperature": data["temperature"],
        }

    def add_domain_error(self, error: Invalid | Conflict) -> None:
        """Each of the service's field errors on the field its pointer names (else above the form)."""
        placed = False
        for item in error.errors:
            name, detail = self._field_error(str(item.get("pointer", "")), str(item.get("detail", "")))
            if name in self.fields and name not in self.errors:
                self.add_error(name, detail)
                placed = True
        if not placed:
            self.add_error(None, error.detail)

    def _field_error(self, pointer: str, detail: str) -> tuple[str, str]:
        # The spec check's details start with the dotted field ("generation.records: must be ...").
        words = detail.split(": ", 1)[1] if detail.startswith("generation") and ": " in detail else detail
        words = words[:1].upper() + words[1:]
        words = words if words.endswith(".") else words + "."
        # Figures as the help texts write them (10,000, not 10000).
        words = re.sub(r"(?<![\w.])\d{4,}(?!\w|\.\d)", lambda m: f"{int(m.group()):,}", words)
        parts = pointer.split("/")
        if pointer.startswith("/generation/prompts/") and parts[-1].isdigit():
            index = int(parts[-1])
            line = self.prompt_lines[index] if index < len(self.prompt_lines) else index + 1
            return "prompts", f"The prompt on line {line}: {words[:1].lower()}{words[1:]}"
        return self.FIELD_OF_POINTER.get(pointer, ""), words


def _acting_membership(request: HttpRequest) -> Membership:
    """The membership the session acts for; a trainer's member or admin. :raises PermissionDenied:"""
    memberships = sorted(
        Membership.objects.select_related("organisation").filter(user=page_user(request)),
        key=lambda m: (m.organisation_id != request.session.get("org_id"), m.organisation.name),
    )
    if not memberships:
        raise PermissionDenied("Generation jobs belong to organisations; you are a member of none.")
    membership = memberships[0]
    if not (membership.organisation.is_trainer and role_at_least(membership.role, Role.MEMBER)):
        raise PermissionDenied(
            f"Only members and admins of a trainer organisation submit jobs; {membership.organisation.name} "
            "is not a trainer or your role is viewer."
        )
    return membership


@otp.signed_in
@require_http_methods(["GET", "POST"])
def job_generate(request: HttpRequest) -> HttpResponse:
    """Submit a generation job from a model held in custody (trainer organisations, members and admins)."""
    membership = _acting_membership(request)
    models = generation_models(membership.organisation)
    initial = {}
    if request.GET.get("model") in {model.public_id for model in models}:
        initial["custody_model"] = request.GET["model"]
    form = GenerateForm(request.POST if request.method == "POST" else None, models=models, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = generation_submit(
                actor=page_user(request),
                organisation=membership.organisation,
                model=form.model(),
                generation=form.generation(),
            )
        except (Invalid, Conflict) as exc:
            form.add_domain_error(exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, f"Generation job {job.public_id} is queued.")
            return redirect("training:job", job_id=job.public_id)
    limits = {
        "prompts": MAX_PROMPTS,
        "prompt_chars": MAX_PROMPT_CHARS,
        "records": MAX_RECORDS,
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    return render(
        request,
        "training/job_generate.html",
        {"form": form, "org": membership.organisation, "limits": limits},
        status=422 if request.method == "POST" else 200,
    )
