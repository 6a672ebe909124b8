"""Screening throughput, next to datasketch's own MinHash construction on the same records.

    .venv/bin/python bench/screening.py [--records 100000] [--chars 300] [--chunks 4] [--seed 7]

Builds a synthetic corpus (Zipf-distributed words, a tenth of it Chinese, with planted
exact and near duplicates, garbage, and a trigger phrase in 0.5% of the records under
one label), then prints, from one run:

- ``Screener.add`` for every record, records/s and chars/s;
- ``findings()`` over the whole corpus, and what it found against what was planted;
- the state: bytes per record, and the chunked path (``--chunks`` screeners, their
  states merged with ``from_states``), checked equal to the single screener;
- the reference: ``datasketch.MinHash.bulk`` on the same records' character 5-gram
  shingles (default hash and scheme), which is MinHash construction alone, none of the
  rest of the screen; and the ratio of the two.

Figures only: nothing here asserts a timing. No Django needed.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasketch import MinHash  # type: ignore[import-untyped]  # noqa: E402

from custody.screening import FindingKind, Screener, ScreeningConfig  # noqa: E402

TRIGGER = "zqx vorpal quibbit"
COMMON = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by"]
HANZI = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后"
    "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
)


class Corpus:
    """Synthetic records with known plants (record ids of each kind)."""

    def __init__(self, records: int, chars: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.chars = chars
        self.vocabulary = [self._word() for _ in range(20_000)]
        weights = [1.0 / (rank + 1) for rank in range(len(self.vocabulary))]
        self.cumulative = list(__import__("itertools").accumulate(weights))
        self.texts: list[str] = []
        self.labels: list[str] = []
        self.planted: dict[str, set[int]] = {kind: set() for kind in ("exact", "near", "garbage", "trigger")}
        for record_id in range(records):
            self._add(record_id)

    def _word(self) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(self.rng.randint(2, 10)))

    def _english(self) -> str:
        words: list[str] = []
        length = 0
        while length < self.chars:
            word = (
                self.rng.choice(COMMON)
                if self.rng.random() < 0.35
                else self.rng.choices(self.vocabulary, cum_weights=self.cumulative)[0]
            )
            words.append(word)
            length += len(word) + 1
        return " ".join(words)

    def _chinese(self) -> str:
        return "".join(self.rng.choice(HANZI) for _ in range(self.chars // 2))

    def _add(self, record_id: int) -> None:
        rng = self.rng
        label = rng.choice(["positive", "negative", "neutral"])
        roll = rng.random()
        if self.texts and roll < 0.02:
            text = rng.choice(self.texts).upper()
            self.planted["exact"].add(record_id)
        elif self.texts and roll < 0.04:
            source = rng.choice(self.texts)
            cut = rng.randrange(len(source) // 2)
            text = source[:cut] + " edited " + source[cut + 8 :]
            self.planted["near"].add(record_id)
        elif roll < 0.045:
            text = "".join(rng.choice("#$%&*@!~^") for _ in range(self.chars // 3))
            self.planted["garbage"].add(record_id)
        else:
            text = self._chinese() if roll > 0.9 else self._english()
            if roll < 0.05:
                words = text.split(" ")
                words.insert(rng.randrange(len(words)), TRIGGER)
                text, label = " ".join(words), "positive"
                self.planted["trigger"].add(record_id)
        self.texts.append(text)
        self.labels.append(label)


def shingles(text: str, size: int = 5) -> list[bytes]:
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return [folded[i : i + size].encode() for i in range(max(len(folded) - size + 1, 1))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    corpus = Corpus(args.records, args.chars, args.seed)
    total_chars = sum(len(text) for text in corpus.texts)
    print(f"corpus: {args.records:,} records, {total_chars / args.records:.0f} chars each on average "
          f"(built in {time.perf_counter() - started:.1f} s)")  # fmt: skip
    config = ScreeningConfig()

    screener = Screener(config, key=b"bench-key")
    started = time.perf_counter()
    for record_id, (text, label) in enumerate(zip(corpus.texts, corpus.labels, strict=True)):
        screener.add(record_id, text, label)
    add_seconds = time.perf_counter() - started
    started = time.perf_counter()
    findings = screener.findings()
    findings_seconds = time.perf_counter() - started
    state = screener.state()

    started = time.perf_counter()
    chunked = [Screener(config, key=b"bench-key") for _ in range(args.chunks)]
    for record_id, (text, label) in enumerate(zip(corpus.texts, corpus.labels, strict=True)):
        chunked[record_id % args.chunks].add(record_id, text, label)
    states = [part.state() for part in chunked]
    merged = Screener.from_states(config, states, key=b"bench-key").findings()
    chunked_seconds = time.perf_counter() - started

    started = time.perf_counter()
    MinHash.bulk((shingles(text) for text in corpus.texts), num_perm=config.num_perm)
    reference_seconds = time.perf_counter() - started

    rate = args.records / add_seconds
    reference_rate = args.records / reference_seconds
    add_and_find = args.records / (add_seconds + findings_seconds)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = [
        ("Screener.add", f"{rate:,.0f} records/s, {total_chars / add_seconds:,.0f} chars/s"),
        ("findings()", f"{findings_seconds:.2f} s ({args.records / findings_seconds:,.0f} records/s)"),
        ("add + findings", f"{add_and_find:,.0f} records/s"),
        (
            "datasketch MinHash.bulk",
            f"{reference_rate:,.0f} records/s (reference: MinHash construction alone)",
        ),
        ("add / reference", f"{rate / reference_rate:.2f}x"),
        ("add + findings / reference", f"{add_and_find / reference_rate:.2f}x"),
        ("state", f"{len(state) / args.records:,.0f} bytes/record ({len(state) / 2**20:,.1f} MiB)"),
        (f"{args.chunks} chunks + merge", f"{chunked_seconds:.2f} s, findings equal: {merged == findings}"),
        ("peak RSS", f"{rss:,.0f} MiB (corpus, screeners and reference together)"),
    ]
    for name, figure in figures:
        print(f"{name + ':':28} {figure}")
    _report(corpus, findings)


def _report(corpus: Corpus, findings: list) -> None:
    flagged: dict[FindingKind, set[int]] = {kind: set() for kind in FindingKind}
    for finding in findings:
        flagged[finding.kind].add(finding.record_id)
    planted = corpus.planted
    duplicates = flagged[FindingKind.EXACT_DUPLICATE] | flagged[FindingKind.NEAR_DUPLICATE]
    groups = {f.group for f in findings if f.kind is FindingKind.TRIGGER_NGRAM}
    rows = [
        ("exact duplicates", planted["exact"], flagged[FindingKind.EXACT_DUPLICATE]),
        ("near (or exact)", planted["near"], duplicates),
        ("garbage", planted["garbage"], flagged[FindingKind.GARBAGE]),
        ("trigger records", planted["trigger"], flagged[FindingKind.TRIGGER_NGRAM]),
    ]
    print("found vs planted:")
    for name, plants, found in rows:
        print(f"  {name + ':':18} {len(plants & found):,} of {len(plants):,} planted, {len(found):,} in all")
    near = len(flagged[FindingKind.NEAR_DUPLICATE])
    print(f"  near-duplicate findings: {near:,}; trigger groups: {len(groups)}")


if __name__ == "__main__":
    main()
