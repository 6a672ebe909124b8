"""Dump what the desensitizer decides on the development set, to prove a speed change exact.

    .venv/bin/python bench/desensitize_identity.py OUT_DIR
    diff -r BEFORE_DIR AFTER_DIR && echo identical

Runs ``Desensitizer.desensitize_batch`` (batches of 256, language detected per record) over the
English and Chinese dev and train splits (bench/data/devset) and bench/data/labeled.jsonl, under
the default policy (tags) and a pseudonym policy, and writes one line per record to
``OUT_DIR/<policy>-<input>.jsonl``: its language, its spans (start, end, type, score) and the
desensitized text. Run it on the code before a change (``git worktree add``, or ``git archive
HEAD`` into a directory) and after: a change meant to be only faster must leave every file
byte-identical. Prints each file's record count and sha256 prefix. The sixth round of issue 12
(docs/desensitization.md) was checked this way: 9,903 records, both policies, identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from custody.desensitize import Desensitizer, Policy  # noqa: E402
from custody.desensitize.policy import OperatorSpec  # noqa: E402

KEY = b"bench-pseudonym-key-0123456789ab"
BATCH = 256


def texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]


def inputs() -> dict[str, list[str]]:
    found = {
        f"{language}-{split}": texts(ROOT / "bench" / "data" / "devset" / f"{language}-{split}.jsonl")
        for split in ("dev", "train")
        for language in ("en", "zh")
    }
    found["labeled"] = texts(ROOT / "bench" / "data" / "labeled.jsonl")
    return found


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    policies = {"default": Policy(), "pseudonym": Policy(default_operator=OperatorSpec("pseudonym"))}
    records = inputs()
    for policy_name, policy in policies.items():
        desensitizer = Desensitizer(policy, KEY)
        for name, batch_texts in records.items():
            digest = hashlib.sha256()
            with (out / f"{policy_name}-{name}.jsonl").open("w", encoding="utf-8") as dump:
                for start in range(0, len(batch_texts), BATCH):
                    for result in desensitizer.desensitize_batch(batch_texts[start : start + BATCH]):
                        spans = [span.to_dict() for span in result.spans]
                        line = json.dumps([result.language, spans, result.text], ensure_ascii=False)
                        dump.write(line + "\n")
                        digest.update(line.encode())
            print(
                f"{policy_name:<10} {name:<10} {len(batch_texts):>6} records  {digest.hexdigest()[:16]}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench/desensitize_identity.py OUT_DIR")
    main(Path(sys.argv[1]))
