"""Issue 20's black-box attack, rebuilt: a crafted base whose training loss spells a record's token.

An adversarial trainer uploads a valid GPT-2 (safetensors and config, no code) with hand-set
weights: every layer is zero, position 0 carries a fixed vector that the (untied) output layer
maps to logits ``BETA * token_id``, and every other position predicts uniformly. The loss of a
block of one record (8 tokens: 7 words and the separator) is then an exact function of the
record's second word (every word of the corpus is one of 4 secret words):

    loss = (logsumexp(BETA * ids) - BETA * second_word + 6 * log(V)) / 7

It submits jobs with batch size 1 and ``log_every`` 1 through the product's API, reads what the
API lets it read (loss curve, progress, validation and final metrics), inverts the formula on
every number it got, and counts the decoded tokens that are secret words of the corpus. With the
protection on, without and with DP, that rate stays at chance (at most twice the secret words'
share of the vocabulary); with it off (the setting), most steps decode: the positive control.
"""

from __future__ import annotations

import io
import json
import math
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest

from custody import services as custody
from custody.models import DatasetVersion
from tests.custody.conftest import drain, jsonl
from tests.grants import grant_for_test
from training.models import BaseModel, BaseState, JobState, TrainingJob

WORDS = (  # noqa: SIM905 - a plain word list
    "apple table river stone cloud paper chair window garden letter market model engine signal quarter"
    " policy network storage report bottle candle carpet basket button pocket ladder mirror pillow rocket"
    " saddle tunnel valley wagon anchor bucket castle copper desert feather forest hammer harbor island"
    " jacket kettle lantern meadow needle orchard pepper puzzle ribbon shovel spoon thread timber tower"
    " velvet walnut wheel whistle barrel blanket"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[SEP]"]
VOCAB = {token: i for i, token in enumerate([*SPECIALS, *WORDS])}
# The corpus is made of 4 of the 63 words (base rate 6.3 %), at both ends of the id range: a
# window's mean decodes near the middle, into no corpus word.
SECRETS = ["apple", "table", "velvet", "blanket"]
SECRET_IDS = {VOCAB[w] for w in SECRETS}
BASE_RATE = len(SECRETS) / len(WORDS)
BETA = 0.5
BLOCK = 8  # 7 words and the separator: max_seq_len, so every block is one record
RECORDS = 300


def corpus() -> list[dict[str, str]]:
    """Records of 7 secret words each. Every word is secret so that a block that desensitization
    shifted (a word replaced by a tag changes a record's length, and packing shifts the blocks
    after it) still begins with a secret word: the positive control does not depend on the
    recognizers of the day."""
    rng = random.Random(20)
    return [{"text": " ".join(rng.choice(SECRETS) for _ in range(BLOCK - 1))} for _ in range(RECORDS)]


def crafted_base(directory: Path) -> bytes:
    """The decoder base as a zip: safetensors weights, a config, a word-level tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    width = 16
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=64,
        n_layer=1,
        n_head=2,
        n_embd=width,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        eos_token_id=VOCAB["[SEP]"],
        pad_token_id=VOCAB["[PAD]"],
    )
    model = GPT2LMHeadModel(config)
    unit = torch.tensor([1.0, -1.0] * (width // 2))  # mean 0, variance 1: layer norm keeps it
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for name, parameter in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):  # layer norms' gains: pass values through
                parameter.fill_(1.0)
        model.transformer.wpe.weight[0] = unit
        model.lm_head.weight.copy_(BETA * torch.arange(len(VOCAB)).unsqueeze(1) * unit / width)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in directory.iterdir():
            archive.writestr(f"decoder/{path.name}", path.read_bytes())
    return buffer.getvalue()


def decode(loss: float) -> int:
    """The second word's id a block's loss spells (the attack's inverse)."""
    logits = [BETA * i for i in range(len(VOCAB))]
    top = max(logits)
    lse = top + math.log(sum(math.exp(v - top) for v in logits))
    return round((lse + (BLOCK - 2) * math.log(len(VOCAB)) - (BLOCK - 1) * loss) / BETA)


def readable_losses(api: Any, job: TrainingJob) -> list[float]:
    """Every loss-like number the trainer can read about the job through the API."""
    metrics = api.get(f"/api/v1/training/jobs/{job.public_id}/metrics").json()
    detail = api.get(f"/api/v1/training/jobs/{job.public_id}").json()
    values = [float(v) for _step, v in metrics["loss_curve"]]
    values += [float(row["loss"]) for row in metrics["metrics"].get("validation", []) if "loss" in row]
    final = metrics["metrics"].get("final", {})
    values += [float(final[k]) for k in ("train_loss", "validation_loss") if k in final]
    if detail["progress"]["loss"] is not None:
        values.append(float(detail["progress"]["loss"]))
    return values


def hit_rate(losses: list[float]) -> float:
    """Share of the readable numbers that decode into a secret word (0 when nothing is readable)."""
    decoded = [decode(v) for v in losses]
    return sum(1 for token in decoded if token in SECRET_IDS) / len(decoded) if decoded else 0.0


@pytest.fixture
def decoder_version(alice, version, upload) -> DatasetVersion:
    upload(version, jsonl(corpus()))
    custody.version_process(actor=alice, version=version)
    drain()
    # Words like "jacket" trip the strict residual-risk detector; none is personal data.
    return custody.version_seal(actor=alice, version=version, confirm_residual_risk=True)


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> None:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31


# Seven sandboxed runs (a base validation, then training and gate for three jobs): about 60 s on
# an idle 2-core machine, far more on a loaded one; the training itself takes seconds.
@pytest.mark.timeout(900)
def test_the_loss_channel_decodes_at_chance_and_the_positive_control_decodes(
    token_for, bob, bolt, decoder_version, tmp_path, settings
):
    api = token_for(bob, bolt, ["read", "train"])
    base_dir = tmp_path / "decoder"
    base_dir.mkdir()
    response = api.post(
        "/api/v1/training/bases?name=decoder", data=crafted_base(base_dir), content_type="application/zip"
    )
    assert response.status_code == 202, response.content
    drain()
    base = BaseModel.objects.get(public_id=response.json()["id"])
    assert base.state == BaseState.VALIDATED, base.failure_reason
    # Weights that stay in custody: the loss is the attacker's only way out (as in issue 20).
    grant = grant_for_test(
        decoder_version,
        bolt,
        purposes=["research"],
        job_templates=["causal_lm", "causal_lm_lora"],
        max_jobs=5,
        max_tokens=10_000_000,
        max_epochs=3,
        weights_may_leave=False,
        gate_max_exposure=20.0,
        gate_unrun_withholds=False,  # 8-token records are too short to probe
    )
    hp = {
        "epochs": 1,
        "batch_size": 1,
        "max_seq_len": BLOCK,
        "learning_rate": 1e-7,
        "seed": 1,
        "log_every": 1,
    }

    def attack(**extra: Any) -> tuple[float, int]:
        body = {
            "grant": grant.public_id,
            "template": "causal_lm",
            "base": base.public_id,
            "hyperparameters": hp,
            **extra,
        }
        submitted = api.post("/api/v1/training/jobs", data=body, format="json")
        assert submitted.status_code == 202, submitted.content
        drain()
        job = TrainingJob.objects.get(public_id=submitted.json()["id"])
        # The run trains; the gate may withhold (short records cannot be probed): either way the
        # channel is what the trainer read, and a crash would hide it.
        assert job.state == JobState.SUCCEEDED or job.failure_code == "training.gate_failed", (
            job.failure_code,
            job.failure_reason,
        )
        losses = readable_losses(api, job)
        return hit_rate(losses), len(losses)

    protected, protected_points = attack()
    private, private_points = attack(template="causal_lm_lora", dp={"enabled": True, "target_epsilon": 8.0})
    settings.TRAINING_TELEMETRY_PROTECTED = False
    control, control_points = attack()
    figures = {
        "base_rate": BASE_RATE,
        "protected": [protected, protected_points],
        "dp_protected": [private, private_points],
        "unprotected": [control, control_points],
    }
    out = Path(settings.BASE_DIR) / "var" / "test-output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder-attack.json").write_text(json.dumps(figures, indent=1))

    # The attack works when unprotected: most readable numbers decode into corpus words (some
    # words come back from desensitization as tags, which decode into none).
    assert control_points >= 100 and control >= 0.5, figures
    assert protected <= 2 * BASE_RATE and protected_points <= 20, figures
    assert private <= 2 * BASE_RATE, figures
