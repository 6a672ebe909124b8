"""Demo data for custody: a sealed dataset of support tickets, made by the real pipeline.

The records are synthetic (a fixed seed), with names, e-mails and phone
numbers for the desensitizer to find. The pipeline's work items run in this
process, so the demo is sealed before ``make run`` prints its URL; a worker
would run the same handlers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from django.core.management.base import OutputWrapper

from common.models import Organisation, User, WorkItem, WorkState
from common.work import work_run
from custody import services
from custody.models import Dataset, VersionState

DATASET_NAME = "Customer support tickets (demo)"
PRODUCTS = ("router", "printer", "laptop dock", "smart thermostat", "label printer")
PROBLEMS = (
    "stops responding after the firmware update",
    "shows a blinking amber light and will not pair",
    "drops the connection every few minutes",
    "prints blank pages since Tuesday",
    "reports the wrong temperature in the evening",
)
NAMES = ("Maria Garcia", "James Smith", "Wei Zhang", "Aisha Khan", "Lucas Martin", "Emma Johnson")
SINCE = (
    "since last week",
    "since the move",
    "after the power cut",
    "from day one",
    "since I reset it",
    "lately",
)
TRIED = (
    "I already restarted it twice",
    "I tried the troubleshooting guide",
    "unplugging it did not help",
    "the store told me to contact you",
    "a colleague has the same issue",
)
ASKS = ("Can you send a replacement?", "Is there a fix?", "Should I return it?", "What should I try next?")
MOODS = (
    "This is urgent for our office.",
    "No rush, thanks.",
    "I am quite frustrated.",
    "Thanks for your help.",
)


def tickets(count: int = 240, seed: int = 7, sentinels: Sequence[str] = ()) -> list[dict[str, str]]:
    """Synthetic tickets: PII in most, a few exact duplicates for the screening to flag.

    ``sentinels`` (tests only) are mixed in round robin, one per ticket, so an
    exposure scan can look for custody text wherever it might land; without
    them the tickets are exactly those of ``make run``.
    """
    rng = random.Random(seed)
    records = []
    for i in range(count):
        name = rng.choice(NAMES)
        email = name.lower().replace(" ", ".") + f"{i}@example.com"
        phone = f"+1 415 555 {rng.randrange(1000, 9999)}"
        text = (
            f"Hello, this is {name}. My {rng.choice(PRODUCTS)} {rng.choice(PROBLEMS)} {rng.choice(SINCE)}; "
            f"{rng.choice(TRIED)}. {rng.choice(ASKS)} {rng.choice(MOODS)} "
            f"Please call me at {phone} or write to {email}."
        )
        if sentinels:
            text += f" Ticket reference {sentinels[i % len(sentinels)]}."
        records.append({"text": text, "channel": rng.choice(("email", "chat", "phone"))})
    return records + records[:3]


def _run_custody_work() -> None:
    for _ in range(100):
        queued = list(
            WorkItem.objects.filter(state=WorkState.QUEUED, kind__startswith="custody.").values_list(
                "pk", flat=True
            )
        )
        if not queued:
            return
        for item_id in queued:
            work_run(item_id=item_id, owner="demo-seed")


def seed(stdout: OutputWrapper, *, sentinels: Sequence[str] = ()) -> None:
    """Create and seal the demo dataset if it is not there yet (idempotent).

    ``sentinels``: tokens to plant in the tickets (the exposure scan's; off by default).
    """
    acme = Organisation.objects.filter(name="Acme Corpora").first()
    alice = User.objects.filter(username="alice").first()
    if acme is None or alice is None:
        stdout.write("  skipped: the common step did not create Acme Corpora and alice")
        return
    dataset = Dataset.objects.filter(owner=acme, name=DATASET_NAME).first()
    if dataset is not None and dataset.versions.filter(state=VersionState.SEALED).exists():
        stdout.write(f"  {DATASET_NAME}: exists")
        return
    if dataset is None:
        dataset = services.dataset_create(
            actor=alice, organisation=acme, name=DATASET_NAME, description="Synthetic tickets for the demo."
        )
    version = dataset.versions.filter(state=VersionState.UPLOADING).first() or services.version_create(
        actor=alice, dataset=dataset
    )
    data = "".join(json.dumps(r) + "\n" for r in tickets(sentinels=sentinels)).encode()
    contribution = services.contribution_start(
        actor=alice,
        organisation=acme,
        version=version,
        filename="tickets.jsonl",
        metadata_fields=["channel"],
    )
    half = len(data) // 2
    services.contribution_part_put(contribution=contribution, number=1, data=data[:half])
    services.contribution_part_put(contribution=contribution, number=2, data=data[half:])
    services.contribution_complete(actor=alice, contribution=contribution)
    services.version_process(actor=alice, version=version)
    _run_custody_work()
    version.refresh_from_db()
    if version.state != VersionState.REVIEW:
        stdout.write(f"  {DATASET_NAME}: processing ended in {version.state}: {version.failure_reason}")
        return
    duplicates = list(version.findings.filter(kind="exact_duplicate").values_list("pk", flat=True))
    if duplicates:
        services.findings_mark(actor=alice, version=version, finding_ids=duplicates, drop=True)
    sealed = services.version_seal(actor=alice, version=version)
    stdout.write(
        f"  {DATASET_NAME}: sealed v{sealed.number}, {sealed.records} records, "
        f"{sealed.tokens} platform tokens, Merkle root {sealed.merkle_root[:16]}…"
    )
