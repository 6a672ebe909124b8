"""Demo data for training: a license for Bolt on the demo tickets, and one small queued job.

The job is gpt2-tiny for one epoch: the embedded worker (``make run``) runs it
through the real launcher and sandbox in a minute or two on a CPU, and the
portal follows it live (loss curve, metrics, then artifact and receipt). The
license is issued here only when Bolt holds none on the demo version yet
(external ref ``demo-license``); the marketplace's demo order, when it exists,
issues the real one.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.management.base import OutputWrapper

from common.exceptions import DomainError
from common.models import Organisation, User
from custody import services as custody
from custody.demo import DATASET_NAME
from custody.models import DatasetVersion, Grant, GrantPurpose, VersionState
from training import services  # launcher: registers the job handler
from training.job_templates import quick_start
from training.models import BaseModel, TrainingJob

DEMO_TERMS = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "causal_lm_lora", "seq_classification"],
    "max_jobs": 20,
    "max_tokens": 5_000_000,
    "max_epochs": 3,
    "weights_may_leave": True,
    "gate_max_exposure": 20.0,
}
# The job form's starting settings (training/job_templates.py QUICK_START), so the demo job shows
# what a newcomer's first job does: gpt2-tiny's loss falls visibly within its one epoch.
DEMO_HYPERPARAMETERS = {**quick_start("causal_lm"), "seed": 7}


def _license(bolt: Organisation, version: DatasetVersion) -> Grant:
    existing = (
        Grant.objects.filter(licensee=bolt, version=version, purpose=GrantPurpose.LICENSE)
        .order_by("pk")
        .first()
    )
    if existing is not None:
        return existing
    return custody.grant_issue(
        version=version, licensee_org=bolt, terms=DEMO_TERMS, external_ref="demo-license"
    )


def _demo_request(grant: Grant) -> services.JobRequest:
    """gpt2-tiny for one epoch, with a template (and DP) the license permits."""
    allowed = grant.terms.get("job_templates") or ["causal_lm"]
    template = next((t for t in ("causal_lm", "causal_lm_lora") if t in allowed), "causal_lm")
    dp = None
    if grant.terms.get("dp_required") or grant.version.epsilon_cap is not None:
        template = "causal_lm_lora"
        caps = [Decimal(str(c)) for c in (grant.terms.get("epsilon_cap"), grant.version.epsilon_cap) if c]
        dp = {"enabled": True, "target_epsilon": float(min([Decimal(8), *caps]))}
    return services.JobRequest(
        template=template,
        base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
        hyperparameters=dict(DEMO_HYPERPARAMETERS),
        dp=dp,
    )


def seed(stdout: OutputWrapper) -> None:
    """Create training's demo data that does not exist yet (idempotent)."""
    bolt = Organisation.objects.filter(name="Bolt Models").first()
    bob = User.objects.filter(username="bob").first()
    version = (
        DatasetVersion.objects.filter(dataset__name=DATASET_NAME, state=VersionState.SEALED)
        .order_by("-pk")
        .first()
    )
    if bolt is None or bob is None or version is None:
        stdout.write("  skipped: needs Bolt Models, bob and the sealed demo tickets")
        return
    grant = _license(bolt, version)
    job = TrainingJob.objects.filter(organisation=bolt, grant=grant).order_by("pk").first()
    if job is not None:
        stdout.write(f"  license {grant.pk} for Bolt; job {job.public_id} exists ({job.state})")
        return
    try:
        job = services.job_submit(actor=bob, organisation=bolt, grant=grant, request=_demo_request(grant))
    except DomainError as exc:
        stdout.write(f"  license {grant.pk} for Bolt; no demo job: {exc.code}: {exc.detail}")
        return
    stdout.write(f"  license {grant.pk} for Bolt; job {job.public_id} queued (the worker trains it)")
