"""Rebuild the English part of Sealroom's desensitization development set from its public sources.

    python bench/data/devset/build.py --wnut DIR --presidio-synth FILE --nano FILE [--out DIR]
                                      [--split-wnut-dev]

``DIR`` holds WNUT-17's ``wnut17train.conll``, ``emerging.dev.conll`` and
``emerging.test.annotated`` (github.com/leondz/emerging_entities_17);
``--presidio-synth`` is presidio-research's ``data/synth_dataset_v2.json``
(github.com/microsoft/presidio-research); ``--nano`` is
``dataset/pii_syn_nano_en.json`` (github.com/Nannigalaxy/PII-synthetic_dataset).
Writes ``en-train.jsonl``, ``en-dev.jsonl`` and ``en-test.jsonl`` (the Chinese
files are built separately; see README.md). Deterministic: the same sources
give byte-identical files.

Each output line is ``{"id", "source", "language", "text", "spans": [{start,
end, type}]}``, with the canonical types of README.md. Splits are by source
document: WNUT-17 keeps its own train/dev/test; the presidio-research records
split by the template that generated them (so no template is in two splits);
the nano records, each written separately, split one by one. Both synthetic
splits are seeded (``SEED``), 60/20/20.

``--split-wnut-dev`` (an experiment of the ninth round of issue 12, not the
shipped set) moves half of WNUT-17's dev posts, seeded by post
(``wnut_dev_split``), into train: WNUT-17's train file is tweets only while its
dev and test files are Reddit, YouTube and Stack Overflow posts, so a tagger
trained on that train split has seen none of the test's kind of text. The test
split is the same either way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEED = "sealroom-devset-1"
HERE = Path(__file__).resolve().parent

# WNUT-17: person, location, corporation, group are PII-bearing names;
# products and creative works are not personal data and stay unlabelled.
WNUT_TYPES = {
    "person": "PERSON",
    "location": "LOCATION",
    "corporation": "ORGANIZATION",
    "group": "ORGANIZATION",
}
# presidio-research: TITLE (job titles, honorifics), AGE and NRP (nationalities,
# religions, political groups) are not identifying on their own and are not
# labelled; a domain name is a URL; a ZIP code is part of a location.
PRESIDIO_TYPES = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "LOCATION",
    "GPE": "LOCATION",
    "ZIP_CODE": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
    "CREDIT_CARD": "CREDIT_CARD",
    "DATE_TIME": "DATE_TIME",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "DOMAIN_NAME": "URL",
    "IBAN_CODE": "ID",
    "US_SSN": "ID",
    "US_DRIVER_LICENSE": "ID",
    "IP_ADDRESS": "IP_ADDRESS",
}
# The nano set's free-form labels: identifiers of every kind are ID; a
# password is a secret (OTHER); system names, job titles, events are not PII.
NANO_TYPES = {
    "PERSON": "PERSON",
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "ORGANIZATION": "ORGANIZATION",
    "ORG": "ORGANIZATION",
    "BANK": "ORGANIZATION",
    "PASSWORD": "OTHER",
    "USERNAME": "PERSON",
}
NANO_DROPPED = frozenset({"SYSTEM", "TITLE", "MISC", "EVENT"})
_HANDLE = re.compile(r"@[A-Za-z0-9_]{1,30}")
_URL_TOKEN = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def split_of(key: str) -> str:
    """Return the seeded split of a source document: 60% train, 20% dev, 20% test."""
    bucket = int(hashlib.sha256(f"{SEED}\x00{key}".encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 6 else "dev" if bucket < 8 else "test"


def wnut_dev_split(index: int) -> str:
    """Return the split of WNUT-17's dev post ``index`` under ``--split-wnut-dev``: seeded, half
    train, half dev. The post keeps its id (``wnut17-dev-NNNNN``, naming its file) either way."""
    bucket = int(hashlib.sha256(f"{SEED}\x00wnut17-dev\x00{index}".encode()).hexdigest()[:8], 16) % 2
    return "train" if bucket == 0 else "dev"


def _sentences(path: Path) -> Iterator[list[tuple[str, str]]]:
    sentence: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if sentence:
                yield sentence
            sentence = []
            continue
        token, _, tag = line.rpartition("\t")
        sentence.append((token, tag.strip()))
    if sentence:
        yield sentence


def wnut_records(path: Path, split: str) -> Iterator[dict[str, Any]]:
    """Yield WNUT-17 posts, tokens joined by single spaces (offsets are exact in that text).

    WNUT-17 leaves ``@handles`` and links unlabelled; here a handle is a
    PERSON (it names an account holder) and a link a URL, as the canonical
    types say. A handle inside a labelled person span stays in that span.
    """
    for index, sentence in enumerate(_sentences(path)):
        text_parts: list[str] = []
        spans: list[dict[str, Any]] = []
        offset = 0
        current: dict[str, Any] | None = None
        for token, tag in sentence:
            start, end = offset, offset + len(token)
            text_parts.append(token)
            offset = end + 1
            kind = tag[2:] if tag[:2] in ("B-", "I-") else ""
            canonical = WNUT_TYPES.get(kind)
            if canonical and tag.startswith("I-") and current and current["type"] == canonical:
                current["end"] = end
                continue
            current = None
            if canonical:
                current = {"start": start, "end": end, "type": canonical}
                spans.append(current)
            elif kind == "" and _HANDLE.fullmatch(token):
                spans.append({"start": start, "end": end, "type": "PERSON"})
            elif kind == "" and _URL_TOKEN.fullmatch(token):
                spans.append({"start": start, "end": end, "type": "URL"})
        yield {
            "id": f"wnut17-{split}-{index:05d}",
            "source": "wnut17",
            "language": "en",
            "text": " ".join(text_parts),
            "spans": spans,
        }


def presidio_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (split, record) for presidio-research's synthetic records, split by template."""
    for index, sample in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        spans = [
            {"start": s["start_position"], "end": s["end_position"], "type": PRESIDIO_TYPES[s["entity_type"]]}
            for s in sample["spans"]
            if s["entity_type"] in PRESIDIO_TYPES
        ]
        record = {
            "id": f"presidio-synth-{index:05d}",
            "source": "presidio-synth",
            "language": "en",
            "text": sample["full_text"],
            "spans": sorted(spans, key=lambda s: s["start"]),
        }
        yield split_of(f"presidio-template-{sample['template_id']}"), record


def nano_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (split, record) for the nano set; its labels name strings, found here in the text."""
    for index, sample in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        text = sample["text"]
        spans: list[dict[str, Any]] = []
        for item in sample["NER"]:
            label = item["label"]
            if label in NANO_DROPPED:
                continue
            canonical = NANO_TYPES.get(label, "ID")
            # One item is written {"=": value} instead of {"entity": value}.
            value = item.get("entity", item.get("="))
            if not value:
                continue
            for match in re.finditer(re.escape(value), text):
                spans.append({"start": match.start(), "end": match.end(), "type": canonical})
        record_id = f"nano-{index:05d}"
        yield (
            split_of(record_id),
            {
                "id": record_id,
                "source": "nano-synth",
                "language": "en",
                "text": text,
                "spans": _disjoint(spans),
            },
        )


def _disjoint(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop spans nested in or overlapping an earlier, longer one (labels sometimes repeat)."""
    kept: list[dict[str, Any]] = []
    for span in sorted(spans, key=lambda s: (s["start"], s["start"] - s["end"])):
        if kept and span["start"] < kept[-1]["end"]:
            continue
        kept.append(span)
    return kept


def build(
    wnut: Path, presidio: Path, nano: Path, out: Path, *, split_wnut_dev: bool = False
) -> dict[str, int]:
    """Write the three English split files; return the record count of each."""
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for split, name in (
        ("train", "wnut17train.conll"),
        ("dev", "emerging.dev.conll"),
        ("test", "emerging.test.annotated"),
    ):
        for index, record in enumerate(wnut_records(wnut / name, split)):
            moved = split_wnut_dev and split == "dev"
            splits[wnut_dev_split(index) if moved else split].append(record)
    for split, record in presidio_records(presidio):
        splits[split].append(record)
    for split, record in nano_records(nano):
        splits[split].append(record)
    counts = {}
    for split, records in splits.items():
        target = out / f"en-{split}.jsonl"
        with target.open("w", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
        counts[split] = len(records)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wnut", type=Path, required=True, help="directory with the three WNUT-17 files")
    parser.add_argument("--presidio-synth", type=Path, required=True, help="synth_dataset_v2.json")
    parser.add_argument("--nano", type=Path, required=True, help="pii_syn_nano_en.json")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--split-wnut-dev",
        action="store_true",
        help="move half of WNUT-17's dev posts (seeded) into train: an experiment, not the shipped set",
    )
    args = parser.parse_args()
    counts = build(args.wnut, args.presidio_synth, args.nano, args.out, split_wnut_dev=args.split_wnut_dev)
    for split, count in counts.items():
        print(f"en-{split}.jsonl: {count} records")


if __name__ == "__main__":
    main()
