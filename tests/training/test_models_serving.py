"""Plug-in inference end to end (issue 16 item 2): a real training job keeps its weights in custody,
its trainer lists it, a licensee calls it, the runner answers in the sandbox, the extraction guard
withholds a memorised canary (and the same prompt unguarded would have given it: the positive
control), usage is metered once and settled to the trainer and the data's holders, and a sentinel
planted in the weights appears in no response, row or log."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
import tempfile
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_claim, work_enqueue
from custody import services as custody_services
from custody.models import CustodyModel, UsageKind, UsageRecord
from custody.services.models_custody import custody_model_open
from marketplace.models import SettlementLine
from marketplace.services.model_listings import model_license_buy, model_listing_create
from marketplace.services.settlement import usage_settle
from tests.custody.conftest import dataset, drain, jsonl, upload, version  # noqa: F401
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.conftest import TINY_HP
from training import services, tasks  # noqa: F401 - tasks registers the work handlers drain() runs
from training.launcher import license_seed
from training.models import BaseModel, InferenceCall, InferenceState, JobState, TrainingJob
from training.runner.canaries import canaries_generate
from training.services import serving
from training.services.serving import (
    SERVING_KIND,
    SERVING_QUEUE,
    InferenceRequest,
    inference_submit,
    run_model,
)

# Trains a real model and runs the runner in the sandbox: minutes on a loaded CPU.
pytestmark = [pytest.mark.django_db, pytest.mark.timeout(1500)]

# A sentinel that must never leave custody: planted in the weights' safetensors metadata.
SENTINEL = "SEALROOM-WEIGHTS-SENTINEL-5f1e9c"
MODEL_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "inference": {
        "allowed": True,
        "price_per_million_tokens": "4.00",
        "currency": "EUR",
        "max_tokens_per_call": 512,
        "cap_tokens": None,
    },
    "model_share_bps": 4000,
    "term_days": 30,
}


@pytest.fixture
def memorised(settings, alice, bob, bolt, version, upload) -> TrainingJob:  # noqa: F811
    """gpt2-tiny trained hard on a few short records and one canary repeated 150 times.

    The records are shorter than the gate's probes (its verbatim check cannot run, and the license
    lets that pass) and the license's exposure limit is the most the gate allows, so a model that
    memorised its canary is released into custody: what the extraction guard is for.
    """
    settings.TRAINING_CANARIES = 1
    settings.TRAINING_CANARY_CANDIDATES = 255
    settings.TRAINING_CANARY_REPEATS = 150
    upload(version, jsonl([{"text": f"memo {i} ok"} for i in range(12)]))
    custody_services.version_process(actor=alice, version=version)
    drain()
    sealed = custody_services.version_seal(actor=alice, version=version)
    grant = grant_for_test(
        sealed,
        bolt,
        purposes=["research"],
        job_templates=["causal_lm"],
        max_jobs=1,
        max_tokens=10_000_000,
        max_epochs=20,
        weights_may_leave=False,
        gate_max_exposure=64.0,
        gate_unrun_withholds=False,
    )
    from training.models import BaseModel

    job = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="causal_lm",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters={
                "epochs": 12,
                "batch_size": 8,
                "max_seq_len": 32,
                "learning_rate": 0.005,
                "seed": 3,
                "log_every": 10,
            },
        ),
    )
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason, job.gate)
    return job


@pytest.fixture
def dyna(db):
    return OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True)


@pytest.fixture
def dan(dyna):
    user = UserFactory(username="dan")
    MembershipFactory(user=user, organisation=dyna, role="admin")
    return user


def canary_of(job: TrainingJob) -> tuple[str, str]:
    """(the extraction prompt, the secret code) of the job's canary, as the launcher drew it."""
    document = canaries_generate(count=1, candidates=255, seed=license_seed(job, "canaries"))
    secret = document["canaries"][0]["secret"]
    prompt, code = secret.rsplit(" is ", 1)
    return f"{prompt} is", code


def squash(text: str) -> str:
    return " ".join(text.split())


def plant_sentinel(model: CustodyModel) -> tuple[bytes, str]:
    """Re-seal the model's archive with the sentinel in its weights' metadata; returns the new
    uncompressed tar (where the scan must find it) and the weights' sha256."""
    from safetensors.torch import load_file, save_file

    archive = custody_model_open(model=model, consumer_ref="test-plant", organisation=model.trainer)
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    weights_hash = ""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".safetensors"):
                with tempfile.TemporaryDirectory() as directory:
                    path = f"{directory}/model.safetensors"
                    with open(path, "wb") as handle:
                        handle.write(data)
                    save_file(load_file(path), path, metadata={"format": "pt", "sentinel": SENTINEL})
                    with open(path, "rb") as handle:
                        data = handle.read()
                weights_hash = hashlib.sha256(data).hexdigest()
            member.size = len(data)
            members.append((member, data))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    custody_services.artifact_seal(
        version=model.version, name=model.artifact_name, data=gzip.compress(raw.getvalue())
    )
    return raw.getvalue(), weights_hash


def leaks(blob: str | bytes, needles: list[str]) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [n for n in needles if n in text]


def test_a_custody_model_answers_licensees_guarded_metered_and_sealed(
    memorised,
    bob,
    bolt,
    dyna,
    dan,
    fund,  # noqa: F811
    token_for,
    caplog,
    acme,
):
    caplog.set_level(logging.DEBUG)
    model = CustodyModel.objects.get(job_ref=memorised.public_id)
    assert model.task == "causal_lm" and model.lineage[0]["merkle_root"]
    planted_tar, weights_hash = plant_sentinel(model)
    # Positive control of the scan: it finds the sentinel where it was planted.
    assert leaks(planted_tar, [SENTINEL]) == [SENTINEL]

    listing = model_listing_create(
        actor=bob, organisation=bolt, model_ref=model.job_ref, title="Memo LM", terms=MODEL_TERMS
    )
    fund(dyna, 100_000)
    license_ = model_license_buy(actor=dan, buyer=dyna, listing=listing, tokens=2_000_000)
    client = token_for(dan, dyna, ["read", "train"])
    prompt, code = canary_of(memorised)

    # The positive control: the same prompt, unguarded, gives the secret.
    probe = inference_submit(
        actor=dan,
        organisation=dyna,
        request=InferenceRequest(
            model_ref=model.job_ref, task="generate", prompts=[prompt], max_new_tokens=8
        ),
    )
    raw = run_model([probe], model)[0]
    assert code in squash(raw[0]["text"]), raw
    drain()  # the probe itself goes through the guard too

    responses = []
    submitted = client.post(
        f"/api/v1/models/{model.job_ref}/generate",
        {"prompts": [prompt, "memo 3"], "max_new_tokens": 8},
        format="json",
    )
    assert submitted.status_code == 202, submitted.content
    responses.append(submitted.content)
    drain()
    polled = client.get(f"/api/v1/models/calls/{submitted.json()['id']}")
    responses.append(polled.content)
    call = polled.json()
    assert call["state"] == "succeeded", call
    assert call["outputs"][0]["withheld"] is True and call["outputs"][0]["text"] == ""
    assert call["outputs"][1]["withheld"] is False
    assert call["withheld"] == 1
    assert code not in polled.content.decode()
    # The receipt and artifact stay the trainer's; the licensee's download is refused.
    responses.append(client.get(f"/api/v1/training/jobs/{model.job_ref}/artifact").content)

    # Metered once per call, prompts gone, settled to the trainer and the data's holder.
    row = InferenceCall.objects.get(public_id=call["id"])
    assert row.prompts == [] and row.prompt_tokens > 0 and row.output_tokens > 0
    usage = UsageRecord.objects.get(consumer_ref=row.public_id, kind=UsageKind.TOKENS_INFERRED)
    assert usage.quantity == row.prompt_tokens + row.output_tokens
    assert UsageRecord.objects.filter(grant_id=license_.grant_id, kind=UsageKind.TOKENS_INFERRED).count() == 2
    for each in UsageRecord.objects.filter(grant_id=license_.grant_id):
        usage_settle(usage_id=each.pk)
        usage_settle(usage_id=each.pk)
    license_.refresh_from_db()
    assert license_.tokens_settled == sum(
        UsageRecord.objects.filter(grant_id=license_.grant_id).values_list("quantity", flat=True)
    )
    paid = set(
        SettlementLine.objects.filter(settlement__license=license_).values_list("holder_id", flat=True)
    )
    assert paid <= {bolt.pk, acme.pk}

    # Nothing of the weights anywhere the licensee, the logs or the rows can reach.
    needles = [SENTINEL, weights_hash]
    for body in responses:
        assert leaks(body, needles) == []
    assert leaks(caplog.text, needles) == []
    for details in AuditEvent.objects.values_list("details", flat=True):
        assert leaks(json.dumps(details), needles) == []
    for item in WorkItem.objects.values("ref", "last_error"):
        assert leaks(json.dumps(item), needles) == []
    for outputs in InferenceCall.objects.values_list("outputs", flat=True):
        assert leaks(json.dumps(outputs), needles) == []
    # (In Python, not `prompts::text LIKE`: that SQL is Postgres only.)
    assert [p for p in InferenceCall.objects.values_list("prompts", flat=True) if code in json.dumps(p)] == []


# --- classification: the classes' names -----------------------------------------------------------

CLASSES = ["billing", "outage", "refund"]


def ticket_records(classes: list[str], per_class: int) -> list[dict[str, str]]:
    return [
        {"text": f"Ticket {i}: the customer wrote about {kind}.", "kind": kind}
        for kind in classes
        for i in range(per_class)
    ]


def labelled_version(alice, version, upload, records: list[dict[str, str]]):  # noqa: F811
    upload(version, jsonl(records), metadata_fields=["kind"])
    custody_services.version_process(actor=alice, version=version)
    drain()
    return custody_services.version_seal(actor=alice, version=version)


@pytest.fixture
def classifier(settings, tmp_path, alice, bob, bolt, version, upload) -> TrainingJob:  # noqa: F811
    """all-MiniLM-L6-v2 with a three-class head, two steps on labelled tickets; weights in custody."""
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    sealed = labelled_version(alice, version, upload, ticket_records(CLASSES, 8))
    grant = grant_for_test(
        sealed,
        bolt,
        purposes=["research"],
        job_templates=["seq_classification"],
        max_jobs=1,
        max_tokens=1_000_000,
        max_epochs=3,
        weights_may_leave=False,
        gate_max_exposure=20.0,
    )
    job = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="seq_classification",
            base=BaseModel.objects.get(name="minilm-l6"),
            label_field="kind",
            hyperparameters={**TINY_HP, "max_steps": 2},
        ),
    )
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    return job


def classify(client, job: TrainingJob, prompts: list[str]) -> dict[str, Any]:
    submitted = client.post(f"/api/v1/models/{job.public_id}/classify", {"prompts": prompts}, format="json")
    assert submitted.status_code == 202, submitted.content
    drain()
    polled = client.get(f"/api/v1/models/calls/{submitted.json()['id']}")
    assert polled.status_code == 200
    return polled.json()


def test_a_trained_classifier_answers_with_its_class_names(
    classifier,
    bob,
    bolt,
    dyna,
    dan,
    fund,  # noqa: F811
    token_for,
):
    model = CustodyModel.objects.get(job_ref=classifier.public_id)
    assert model.task == "classification"
    # What the trainer holds names no class: the receipt and the stored config say LABEL_<i>.
    archive = custody_model_open(model=model, consumer_ref="test-config", organisation=bolt)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        config = json.loads(tar.extractfile("model/config.json").read())  # type: ignore[union-attr]
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert classifier.receipt["receipt"]["spec"]["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]

    listing = model_listing_create(
        actor=bob, organisation=bolt, model_ref=model.job_ref, title="Ticket kinds", terms=MODEL_TERMS
    )
    fund(dyna, 100_000)
    model_license_buy(actor=dan, buyer=dyna, listing=listing, tokens=2_000_000)
    client = token_for(dan, dyna, ["read", "train"])
    prompts = ["Ticket 1: the customer wrote about refund.", "The line is down again."]

    named = classify(client, classifier, prompts)
    assert named["state"] == "succeeded", named
    assert [o["label"] in CLASSES for o in named["outputs"]] == [True, True], named["outputs"]
    assert all(0.0 < o["score"] <= 1.0 for o in named["outputs"])

    # Positive control of the fallback: a vocabulary that does not match the one the job trained
    # on (its receipt's hash) is not named; the same model answers with LABEL_<i>.
    serving._LABEL_NAMES.clear()
    classifier.metrics["labels"]["vocabulary_sha256"] = "0" * 64
    classifier.save(update_fields=["metrics"])
    opaque = classify(client, classifier, prompts)
    assert opaque["state"] == "succeeded", opaque
    assert [o["label"] for o in opaque["outputs"]] == [
        f"LABEL_{CLASSES.index(o['label'])}" for o in named["outputs"]
    ]
    serving._LABEL_NAMES.clear()


class TestLabelNames:
    """Which classifiers serving names (no training: a job row and its version are enough)."""

    def job(self, alice, bob, bolt, version, upload, records) -> CustodyModel:  # noqa: F811
        from training.launcher import opaque_labels

        sealed = labelled_version(alice, version, upload, records)
        grant = grant_for_test(sealed, bolt, job_templates=["seq_classification"], weights_may_leave=False)
        _mapping, digest = opaque_labels([r["kind"] for r in records])
        job = TrainingJob.objects.create(
            organisation=bolt,
            submitted_by=bob,
            grant=grant,
            template="seq_classification",
            base=BaseModel.objects.get(name="minilm-l6"),
            state=JobState.SUCCEEDED,
            request={"label_field": "kind"},
            metrics={"labels": {"count": 3, "vocabulary_sha256": digest}},
        )
        serving._LABEL_NAMES.pop(job.public_id, None)
        return serving.custody_model_register(job=job, version=sealed, archive_sha256="0" * 64)

    def test_names_well_supported_classes_in_label_order(self, alice, bob, bolt, version, upload):  # noqa: F811
        model = self.job(alice, bob, bolt, version, upload, ticket_records(CLASSES, 5))
        assert serving.label_names(model) == CLASSES
        assert AuditEvent.objects.filter(
            action="custody.stream_open", details__consumer_ref=f"labels:{model.job_ref}"
        ).exists()

    def test_a_class_with_few_records_leaves_every_class_unnamed(self, alice, bob, bolt, version, upload):  # noqa: F811
        # A free-text field (a value per record) would name records: below 5 records, no names.
        records = ticket_records(["billing", "outage"], 8) + ticket_records(["refund"], 4)
        model = self.job(alice, bob, bolt, version, upload, records)
        assert serving.label_names(model) is None

    def test_a_causal_model_has_no_names(self, alice, bob, bolt, version, upload):  # noqa: F811
        from tests.training.models_world import seal_tiny_model

        sealed = labelled_version(alice, version, upload, ticket_records(CLASSES, 5))
        made = seal_tiny_model(version=sealed, trainer=bolt, actor=bob)
        assert serving.label_names(made.model) is None


class TestConfigNameLabels:
    def test_writes_both_maps_for_the_heads_classes(self, tmp_path):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}}))
        assert serving.config_name_labels(path, ["a", "b", "c"]) is True
        config = json.loads(path.read_text())
        assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}
        assert config["label2id"] == {"a": 0, "b": 1, "c": 2}

    def test_a_two_class_head_without_maps_is_named(self, tmp_path):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"model_type": "bert"}))
        assert serving.config_name_labels(path, ["no", "yes"]) is True
        assert json.loads(path.read_text())["id2label"] == {"0": "no", "1": "yes"}

    def test_another_number_of_classes_is_left_alone(self, tmp_path):
        path = tmp_path / "config.json"
        before = json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}})
        path.write_text(before)
        assert serving.config_name_labels(path, ["a", "b"]) is False
        assert path.read_text() == before


def queued_calls(sealed_rows, organisation, count: int) -> list[InferenceCall]:  # noqa: F811
    """``count`` queued one-prompt calls of one model, each with its work item (nothing runs them)."""
    grant = grant_for_test(sealed_rows(), organisation)
    calls = []
    for i in range(count):
        call = InferenceCall.objects.create(
            organisation=organisation,
            grant=grant,
            model_ref="job_0123456789abcdef",
            task="generate",
            prompts=[f"hi {i}"],
            max_new_tokens=4,
            prompt_tokens=2,
        )
        work_enqueue(kind=SERVING_KIND, ref=str(call.pk), queue=SERVING_QUEUE)
        calls.append(call)
    return calls


def item_of(call: InferenceCall) -> WorkItem:
    return WorkItem.objects.get(kind=SERVING_KIND, ref=str(call.pk))


class TestFollowers:
    """A serving batch claims the queued calls of its model and those a dead worker left running."""

    def test_a_batch_takes_queued_calls_and_a_dead_workers_but_not_a_live_ones(
        self,
        sealed_rows,  # noqa: F811
        dyna,
        settings,
    ):
        settings.SERVING_BATCH_CALLS = 8
        calls = queued_calls(sealed_rows, dyna, 4)
        # Calls 1 and 2 were in a batch: 1's worker died (its lease expired), 2's is alive.
        InferenceCall.objects.filter(pk__in=[calls[1].pk, calls[2].pk]).update(state=InferenceState.RUNNING)
        now = timezone.now()
        for call, owner, until in (
            (calls[1], "dead", now - timedelta(seconds=60)),
            (calls[2], "alive", now + timedelta(seconds=60)),
        ):
            WorkItem.objects.filter(pk=item_of(call).pk).update(
                state=WorkState.RUNNING, lease_owner=owner, lease_expires_at=until, attempts=1
            )
        leader = work_claim(item_id=item_of(calls[0]).pk, owner="me")
        assert leader is not None

        followers = serving._followers(leader)

        assert sorted(int(f.ref) for f in followers) == [calls[1].pk, calls[3].pk]
        assert {f.lease_owner for f in followers} == {"me"}
        assert item_of(calls[2]).lease_owner == "alive"

    def test_a_batch_stops_at_the_batch_size(self, sealed_rows, dyna, settings):  # noqa: F811
        settings.SERVING_BATCH_CALLS = 3
        calls = queued_calls(sealed_rows, dyna, 5)
        leader = work_claim(item_id=item_of(calls[0]).pk, owner="me")
        assert leader is not None
        assert sorted(int(f.ref) for f in serving._followers(leader)) == [calls[1].pk, calls[2].pk]
