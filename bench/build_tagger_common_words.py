"""Rebuild the taggers' common-word lists from the development set's train split (issue 12).

A span the English or Chinese tagger finds is dropped when it is one of these: words (English)
and Han n-grams (Chinese) that the train split's text holds often outside any labelled entity
and seldom inside one. Only the **train** split is read (never dev or test).

    .venv/bin/python bench/build_tagger_common_words.py            # writes both lists
    .venv/bin/python bench/build_tagger_common_words.py --check    # exit 1 if they differ

English: a word (``[A-Za-z]+``, lower-cased, two letters or more, not a spaCy stop word: those
are refused already) seen at least 10 times outside gold spans, with at most 10% of its
occurrences inside one. Chinese: a run of 2-4 Han characters seen at least 5 times wholly
outside gold spans, with at most 10% of its occurrences wholly inside one. The thresholds were
chosen on train and checked on dev: docs/desensitization.md, "Fifth round: tagger acceptance".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVSET = ROOT / "bench" / "data" / "devset"
DATA = ROOT / "custody" / "recognizers" / "data"
EN_FILE = DATA / "en_common_words.txt"
ZH_FILE = DATA / "zh_common_ngrams.txt"
EN_MIN_COUNT, EN_MAX_SHARE = 10, 0.1
ZH_MIN_COUNT, ZH_MAX_SHARE = 5, 0.1
_WORD = re.compile(r"[A-Za-z]+")
_HAN = re.compile(r"[\u4e00-\u9fff]+")

EN_HEADER = f"""\
# Common English words the English tagger's single-word spans may not be (custody/recognizers/en_model.py).
# Built by bench/build_tagger_common_words.py from bench/data/devset/en-train.jsonl (train split only):
# words seen >= {EN_MIN_COUNT} times outside labelled entities, <= {EN_MAX_SHARE:.0%} of their occurrences
# inside one, spaCy stop words left out. Sources of that text: WNUT-17 (CC BY 4.0),
# presidio-research synth (MIT), PII-synthetic_dataset nano (MIT); see bench/data/devset/README.md.
"""
ZH_HEADER = f"""\
# Common Han n-grams the Chinese tagger's spans may not be (custody/recognizers/zh_model.py).
# Built by bench/build_tagger_common_words.py from bench/data/devset/zh-train.jsonl (train split only):
# runs of 2-4 Han characters seen >= {ZH_MIN_COUNT} times wholly outside labelled entities,
# <= {ZH_MAX_SHARE:.0%} of their occurrences wholly inside one. Sources of that text: Weibo NER
# (annotations CC BY-SA 3.0), UNER Chinese-GSDSIMP (CC BY-SA 4.0), build_zh.py's synthetic records;
# see bench/data/devset/README.md.
"""


def _records(name: str) -> list[dict[str, object]]:
    with (DEVSET / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _inside(record: dict[str, object]) -> list[bool]:
    text = str(record["text"])
    inside = [False] * len(text)
    for span in record["spans"]:  # type: ignore[attr-defined]
        for i in range(span["start"], span["end"]):
            inside[i] = True
    return inside


def english_words() -> list[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    outside, within = Counter[str](), Counter[str]()
    for record in _records("en-train.jsonl"):
        inside = _inside(record)
        for m in _WORD.finditer(str(record["text"])):
            word = m.group().lower()
            (within if any(inside[m.start() : m.end()]) else outside)[word] += 1
    return sorted(
        w
        for w, n in outside.items()
        if n >= EN_MIN_COUNT
        and within[w] <= EN_MAX_SHARE * (n + within[w])
        and len(w) > 1
        and w not in STOP_WORDS
    )


def chinese_ngrams() -> list[str]:
    outside, within = Counter[str](), Counter[str]()
    for record in _records("zh-train.jsonl"):
        text, inside = str(record["text"]), _inside(record)
        for m in _HAN.finditer(text):
            for n in (2, 3, 4):
                for i in range(m.start(), m.end() - n + 1):
                    marks = inside[i : i + n]
                    if not any(marks):
                        outside[text[i : i + n]] += 1
                    elif all(marks):
                        within[text[i : i + n]] += 1
    return sorted(
        g for g, n in outside.items() if n >= ZH_MIN_COUNT and within[g] <= ZH_MAX_SHARE * (n + within[g])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped lists, write nothing")
    args = parser.parse_args()
    lists = {EN_FILE: (EN_HEADER, english_words()), ZH_FILE: (ZH_HEADER, chinese_ngrams())}
    differ = False
    for path, (header, entries) in lists.items():
        content = header + "\n".join(entries) + "\n"
        if args.check:
            same = path.is_file() and path.read_text(encoding="utf-8") == content
            print(f"{path.relative_to(ROOT)}: {'up to date' if same else 'DIFFERS'}")
            differ |= not same
        else:
            path.write_text(content, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {len(entries)} entries")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
