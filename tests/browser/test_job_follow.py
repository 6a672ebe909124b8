"""A trainer follows a job on its page, from the form to the released model, the way a person
would: open the form, look at the choices it offers, submit with its starting settings, and watch.

The page refreshes one live region (header, stage, progress, chart, history) from one endpoint.
A script the test adds (through the browser's devtools channel, so the page's CSP is untouched)
notes what that region said after every refresh; at the end the test checks that header, stage,
progress and history agreed in every one it saw. No Celery worker runs: the test drains the
queued work in this process, so the runner really trains gpt2-tiny in the sandbox while the
browser keeps polling. Any console error (a CSP violation included) fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_flow_trainer import nav, sign_in
from tests.custody.conftest import dataset, drain, sealed_version, upload, version  # noqa: F401
from tests.grants import grant_for_test
from training import tasks  # noqa: F401  (registers the training work handlers for drain())
from training.models import BaseModel, JobState, TrainingJob

pytestmark = pytest.mark.browser

# What the live region notes after each refresh: the state it declares, the header's state tag,
# the stage, the stages marked current, the progress bar's percent and the history's event kinds.
RECORDER = """
() => {
  window.__jobSnapshots = [];
  const snap = () => {
    const live = document.querySelector("[data-job-live]");
    if (!live) { return; }
    const header = live.querySelector("[data-job-header] [data-state]");
    const bar = live.querySelector("#job-progress");
    const item = {
      state: live.getAttribute("data-job-state"),
      stage: live.getAttribute("data-stage"),
      header: header ? header.getAttribute("data-state") : null,
      current: Array.from(live.querySelectorAll('[data-stage-item][aria-current="step"]'))
        .map((e) => e.getAttribute("data-stage-item")),
      percent: bar ? bar.getAttribute("data-percent") : null,
      events: Array.from(live.querySelectorAll("[data-history] [data-event]"))
        .map((e) => e.getAttribute("data-event")),
    };
    const last = window.__jobSnapshots[window.__jobSnapshots.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(item)) { window.__jobSnapshots.push(item); }
  };
  new MutationObserver(snap).observe(document.body, { childList: true, subtree: true });
  snap();
}
"""
STAGES_OF_STATE = {
    "queued": {"queued"},
    "running": {"preparing", "training"},
    "releasing": {"gate"},
    "succeeded": {"released"},
}
EVENT_OF_STATE = {"running": "started", "releasing": "releasing", "succeeded": "succeeded"}


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


def disagreements(snapshot: dict[str, Any]) -> list[str]:
    """What one refresh of the live region said that does not fit together."""
    state, stage = snapshot["state"], snapshot["stage"]
    problems = []
    if snapshot["header"] != state:
        problems.append(f"header says {snapshot['header']}, the region {state}")
    if stage not in STAGES_OF_STATE.get(state, set()):
        problems.append(f"stage {stage} while {state}")
    expected_current = [] if state == "succeeded" else [stage]
    if snapshot["current"] != expected_current:
        problems.append(f"stages marked current {snapshot['current']}, stage {stage}")
    if stage == "training":
        if snapshot["percent"] is not None and not snapshot["percent"].isdigit():
            problems.append(f"training progress {snapshot['percent']!r}")
    elif stage == "gate":
        if snapshot["percent"] != "":
            problems.append(f"the gate shows a step percentage {snapshot['percent']!r}")
    elif snapshot["percent"] is not None:
        problems.append(f"a progress bar at stage {stage}")
    wanted = EVENT_OF_STATE.get(state)
    if wanted and wanted not in snapshot["events"]:
        problems.append(f"history has no {wanted!r} event while {state}")
    return problems


def test_a_trainer_follows_a_job_from_the_form_to_the_released_model(
    page,
    shot,
    live_server,
    bob,
    bolt,
    sealed_version,  # noqa: F811
):
    grant = grant_for_test(
        sealed_version,
        bolt,
        purposes=["research", "internal_evaluation"],
        job_templates=["causal_lm", "causal_lm_lora", "seq_classification"],
        max_jobs=3,
        max_tokens=1_000_000,
        max_epochs=3,
        weights_may_leave=True,
        gate_max_exposure=20.0,
    )
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    minilm = BaseModel.objects.get(name="minilm-l6", owner=None)
    sign_in(page, live_server, "bob")
    nav(page, "Jobs")
    page.get_by_role("link", name="New job").click()
    page.get_by_role("heading", name="New training job").wait_for()

    # The form offers the license's purposes, and bases the template can train; it starts on
    # gpt2-tiny with settings that learn on a CPU.
    page.get_by_label("License", exact=True).select_option(value=grant.public_id)
    purposes = page.get_by_label("Purpose", exact=True)
    assert purposes.locator("option").all_inner_texts() == [
        "Non-commercial research",
        "Internal evaluation only",
    ]
    base = page.get_by_label("Base model", exact=True)
    assert base.input_value() == tiny.public_id
    assert page.get_by_label("Learning rate").input_value() == "0.001"
    assert base.locator(f'option[value="{minilm.public_id}"]').is_disabled()
    page.get_by_label("Template", exact=True).select_option(value="seq_classification")
    assert base.input_value() == minilm.public_id
    assert base.locator(f'option[value="{tiny.public_id}"]').is_disabled()
    assert page.get_by_label("Learning rate").input_value() == "0.00005"
    page.get_by_label("Template", exact=True).select_option(value="causal_lm")
    assert base.input_value() == tiny.public_id
    assert page.get_by_label("Learning rate").input_value() == "0.001"
    purposes.select_option(value="internal_evaluation")
    shot("job-form")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/training/jobs/job_[^/]+/$"))
    job = TrainingJob.objects.get(organisation=bolt)
    assert job.state == JobState.QUEUED and job.purpose == "internal_evaluation"
    page.locator('[data-job-live][data-stage="queued"]').wait_for()
    page.evaluate(RECORDER)
    shot("job-queued")

    # The worker's part, in this process; the browser keeps polling meanwhile.
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    page.locator('[data-job-live][data-stage="released"]').wait_for(timeout=20_000)
    page.get_by_role("heading", name="Result").wait_for()
    shot("job-released")

    seen = page.evaluate("window.__jobSnapshots")
    assert seen[0]["state"] == "queued" and seen[-1]["state"] == "succeeded", seen
    for snapshot in seen:
        assert disagreements(snapshot) == [], snapshot
    # The finished page no longer polls, says why its chart holds what it holds, and offers the model.
    assert page.locator("[data-job-live][hx-trigger]").count() == 0
    assert "Loss is reported every ≥32 records" in page.locator("[data-loss-note]").inner_text()
    assert page.get_by_role("link", name=re.compile("^Download the model")).is_visible()
    assert page.locator('[data-stage-item="released"][data-status="done"]').is_visible()
