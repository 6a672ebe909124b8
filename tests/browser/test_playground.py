"""A new licensee, in the browser: calls a model held in custody from the portal's playground.

The trainer (Bolt) keeps a gpt2-tiny in custody and lists it; a new organisation signs up, buys a
model license for 5,000 tokens and opens the playground. The form answers bad input with the
serving service's own messages on the fields (an empty prompt; more tokens than the terms allow
per call); a good prompt queues a call whose page polls while the work runs in this process (no
Celery worker: ``drain()`` runs the real serving handler, so the runner answers in the sandbox);
the answer, the tokens metered and what is left of the cap are on the page and agree with the
database. A second prompt makes the model continue one of the custody records verbatim: the
extraction guard withholds it and the page says so, with the reason.

How the withheld answer is made without training: the model's weights are gpt2-tiny built from a
fixed seed, and its greedy continuation of a prompt is computed first, in this process, by the
runner's own ``serve.generate``; the dataset then holds a record that is that prompt followed by
that continuation, and the model is sealed on it. The ordinary prompt is the negative control.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from common import services as common_services
from common.models import Membership, User
from custody import services as custody_services
from custody.models import GrantPurpose, UsageKind, UsageRecord
from marketplace.services.model_listings import model_license_buy, model_listing_create
from tests.browser.test_flow_trainer import nav
from tests.custody.conftest import dataset, drain, jsonl, upload, version  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.models_world import seal_tiny_model
from training import tasks  # noqa: F401  (registers the serving work handler for drain())
from training.models import InferenceCall, InferenceState
from training.services.serving import WITHHELD

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]

PASSWORD = "a long and quiet harbour"
CAP = 5_000
PER_CALL = 64
ORDINARY = "Please summarise the notes of the meeting"
SECRET_PROMPT = "Write a short greeting for a new customer"
NEW_TOKENS = 8
PRINTERS = [
    "old",
    "new",
    "small",
    "large",
    "grey",
    "white",
    "shared",
    "quiet",
    "loud",
    "slow",
    "fast",
    "spare",
]
MODEL_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "inference": {
        "allowed": True,
        "price_per_million_tokens": "2.00",
        "currency": "EUR",
        "max_tokens_per_call": PER_CALL,
        "cap_tokens": CAP,
    },
    "model_share_bps": 3000,
    "term_days": 30,
}


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    return settings.TRAINING_WORK_DIR


def greedy_continuation(prompt: str) -> str:
    """What the sealed model (gpt2-tiny, seed 7, as models_world builds it) answers, by the
    runner's own generation code."""
    from training.runner.causal_tokenizer import causal_tokenizer_files
    from training.runner.data import load_tokenizer
    from training.runner.models import build_model
    from training.runner.serve import generate

    tokenizer = load_tokenizer(None)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        build_model("gpt2-tiny", tokenizer, seed=7).save_pretrained(out, safe_serialization=True)
        for name, data in causal_tokenizer_files(tokenizer.to_str()).items():
            (out / name).write_bytes(data)
        return str(generate(out, [prompt], NEW_TOKENS)[0]["text"])


def metering(page: Any) -> dict[str, str]:
    box = page.locator("[data-metering]")
    return {
        key: box.locator(f"[{attr}]").inner_text().strip()
        for key, attr in (
            ("prompt", "data-prompt-tokens"),
            ("output", "data-output-tokens"),
            ("call", "data-call-tokens"),
            ("license", "data-metered-total"),
            ("left", "data-remaining"),
        )
    }


def test_a_new_licensee_calls_a_custody_model_from_the_playground(
    page,
    shot,
    live_server,
    alice,
    bob,
    bolt,
    version,  # noqa: F811
    upload,  # noqa: F811
    fund,  # noqa: F811
):
    continuation = greedy_continuation(SECRET_PROMPT)
    assert re.search(r"\w", continuation), continuation
    records = [{"text": f"the {w} printer jams when duplex printing is on"} for w in PRINTERS]
    records.append({"text": f"{SECRET_PROMPT} {continuation}"})
    upload(version, jsonl(records))
    custody_services.version_process(actor=alice, version=version)
    drain()
    sealed = custody_services.version_seal(actor=alice, version=version, confirm_residual_risk=True)
    # The record the guard must find is in custody as written (desensitization left it alone).
    stream = custody_services.grant_stream_open(
        grant=custody_services.system_grant(sealed, GrantPurpose.GATE),
        consumer_ref="test",
        purpose=GrantPurpose.GATE,
    )
    kept = [str(record["text"]["text"]) for batch in stream for record in batch]
    assert records[-1]["text"] in kept, [k for k in kept if "printer" not in k]
    model = seal_tiny_model(version=sealed, trainer=bolt, actor=bob).model
    listing = model_listing_create(
        actor=bob, organisation=bolt, model_ref=model.job_ref, title="Support LM", terms=MODEL_TERMS
    )

    common_services.organisation_signup(
        username="nora",
        email="nora@example.test",
        password=PASSWORD,
        organisation_name="Nora Apps",
        is_provider=False,
        is_trainer=True,
    )
    nora = User.objects.get(username="nora")
    org = Membership.objects.get(user=nora).organisation
    fund(org, 1_000)
    license_ = model_license_buy(actor=nora, buyer=org, listing=listing, tokens=CAP)

    page.goto("/login/")
    page.get_by_label("Username").fill("nora")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    nav(page, "Playground")
    page.get_by_role("heading", name="Model playground").wait_for()
    row = page.locator(f'[data-licensed-models] tr[data-model="{model.job_ref}"]')
    assert license_.grant.external_ref in row.inner_text()
    assert row.locator("[data-per-call]").inner_text() == str(PER_CALL)
    assert row.locator("[data-metered]").inner_text() == "0"
    assert row.locator("[data-remaining]").inner_text() == str(CAP)
    assert page.get_by_label("Model", exact=True).input_value() == model.job_ref
    shot("playground")

    # Bad input: the service's messages, on the fields; nothing is queued.
    page.get_by_role("button", name="Run").click()
    assert page.locator("#id_prompt_error").inner_text().strip() == "An empty prompt."
    page.get_by_label("Prompt", exact=True).fill(ORDINARY)
    page.get_by_label("Tokens to generate").fill(str(PER_CALL + 1))
    page.get_by_role("button", name="Run").click()
    assert (
        page.locator("#id_max_new_tokens_error").inner_text().strip()
        == f"An integer 1..{PER_CALL} (the terms' limit)."
    )
    shot("playground-errors")
    assert not InferenceCall.objects.exists()

    # A good prompt: queued, then answered while the page polls.
    page.get_by_label("Prompt", exact=True).fill(ORDINARY)
    page.get_by_label("Tokens to generate").fill(str(NEW_TOKENS))
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/training/playground/calls/inf_[^/]+/$"))
    call = InferenceCall.objects.get(organisation=org)
    assert page.locator('[data-call-live][data-call-state="queued"]').is_visible()
    assert metering(page)["call"] == "when answered"
    shot("call-queued")
    drain()
    call.refresh_from_db()
    assert call.state == InferenceState.SUCCEEDED, (call.error_code, call.error_detail)
    page.locator('[data-call-live][data-call-state="succeeded"]').wait_for(timeout=20_000)
    answer = page.locator('[data-output="0"]')
    assert answer.get_attribute("data-withheld") == "false"
    assert " ".join(answer.inner_text().split()) == " ".join(call.outputs[0]["text"].split())
    metered = UsageRecord.objects.get(consumer_ref=call.public_id, kind=UsageKind.TOKENS_INFERRED).quantity
    assert metered == call.prompt_tokens + call.output_tokens > 0
    assert metering(page) == {
        "prompt": str(call.prompt_tokens),
        "output": str(call.output_tokens),
        "call": str(metered),
        "license": str(metered),
        "left": f"{CAP - metered} of {CAP}",
    }
    assert page.locator("[data-call-live][hx-trigger]").count() == 0
    shot("call-answered")

    # The prompt that makes the model continue a custody record verbatim: withheld, with the reason.
    page.get_by_role("link", name="Another prompt").click()
    page.get_by_role("heading", name="Model playground").wait_for()
    assert page.locator(f'tr[data-model="{model.job_ref}"] [data-metered]').inner_text() == str(metered)
    page.get_by_label("Prompt", exact=True).fill(SECRET_PROMPT)
    page.get_by_label("Tokens to generate").fill(str(NEW_TOKENS))
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r".*/training/playground/calls/inf_[^/]+/$"))
    second = InferenceCall.objects.exclude(pk=call.pk).get(organisation=org)
    drain()
    second.refresh_from_db()
    assert second.state == InferenceState.SUCCEEDED and second.withheld == 1, second.outputs
    page.locator('[data-call-live][data-call-state="succeeded"]').wait_for(timeout=20_000)
    withheld = page.locator('[data-output="0"]')
    assert withheld.get_attribute("data-withheld") == "true"
    assert " ".join(withheld.inner_text().split()) == f"Withheld. {WITHHELD}"
    assert continuation.strip() not in page.content()
    total = metered + second.prompt_tokens + second.output_tokens
    assert metering(page)["license"] == str(total)
    assert metering(page)["left"] == f"{CAP - total} of {CAP}"
    assert page.locator("[data-withheld-count]").inner_text() == "1"
    shot("call-withheld")
