"""``manage.py desensitize_eval``: score the default policy on the labelled development set.

    manage.py desensitize_eval [--split test] [--language en|zh|all] [--devset DIR] [--json]

Reads ``DIR/{language}-{split}.jsonl`` (bench/data/devset by default; format in
its README.md), desensitizes every record with the default policy (language
detected per record, as ingest does) and prints character recall, span
recall, leak-view precision and the fraction of non-PII characters kept,
overall, per language, per source and per entity type
(``custody.desensitize.evaluation`` defines them), then precision and kept with
the predictions of what a source does not annotate set apart (its dates, Weibo
NER's unlabelled handles; the headline figures count them). Figures for the
README come from ``--split test`` only.
"""

from __future__ import annotations

import json
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from custody.desensitize import Desensitizer, policy_named
from custody.desensitize.evaluation import (
    DEVSET_LANGUAGES,
    DEVSET_SPLITS,
    DevRecord,
    DevsetError,
    Scores,
    devset_path,
    load_devset_file,
    score,
)

DEFAULT_DEVSET = Path(settings.BASE_DIR) / "bench" / "data" / "devset"
# The pseudonym key does not change what is detected; a fixed one keeps runs comparable.
EVAL_KEY = b"desensitize-eval-key-0123456789"
BATCH = 256


class Command(BaseCommand):
    help = (
        "Score Sealroom's desensitizer (default policy) on the labelled development set: character "
        "recall, span recall, leak-view precision and non-PII characters kept, per language, source "
        "and entity type."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--split", default="test", choices=DEVSET_SPLITS, help="default: test")
        parser.add_argument(
            "--language", default="all", choices=(*DEVSET_LANGUAGES, "all"), help="default: all"
        )
        parser.add_argument(
            "--devset", default=str(DEFAULT_DEVSET), help=f"directory of the set (default: {DEFAULT_DEVSET})"
        )
        parser.add_argument("--policy", default="default", help="a named policy (default: default)")
        parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        devset = Path(options["devset"])
        if not devset.is_dir():
            raise CommandError(f"--devset {devset}: no such directory")
        records = self._load(devset, options["language"], options["split"])
        desensitizer = Desensitizer(policy_named(options["policy"]), EVAL_KEY)
        started = time.perf_counter()
        predictions = []
        for index in range(0, len(records), BATCH):
            batch = [r.text for r in records[index : index + BATCH]]
            for result in desensitizer.desensitize_batch(batch):
                predictions.append([(s.start, s.end, s.entity_type) for s in result.spans])
        elapsed = time.perf_counter() - started
        scores = score(records, predictions)
        if options["json"]:
            payload = {
                "split": options["split"],
                "policy": options["policy"],
                "records": len(records),
                "seconds": round(elapsed, 2),
                **scores.to_dict(),
            }
            self.stdout.write(json.dumps(payload, indent=2))
            return
        self.stdout.write(
            f"{len(records)} records of the {options['split']} split ({devset}), "
            f"policy {options['policy']}, {elapsed:.1f} s"
        )
        self._print(scores)

    def _load(self, devset: Path, language: str, split: str) -> list[DevRecord]:
        languages = DEVSET_LANGUAGES if language == "all" else (language,)
        records: list[DevRecord] = []
        for lang in languages:
            path = devset_path(devset, lang, split)
            if language == "all" and not path.exists():
                self.stderr.write(f"note: {path} does not exist; {lang} is not scored")
                continue
            try:
                records.extend(load_devset_file(path))
            except DevsetError as exc:
                raise CommandError(str(exc)) from None
        if not records:
            raise CommandError(f"no records for --language {language} --split {split} in {devset}")
        return records

    def _print(self, scores: Scores) -> None:
        data = scores.to_dict()
        header = f"  {'':<32} {'char R':>7} {'span R':>7} {'prec.':>7} {'kept':>7} {'gold':>6} {'pred':>6}"
        for title, rows in (
            ("Overall", {"all": data["overall"]}),
            ("Per language", data["languages"]),
            ("Per source", data["sources"]),
            ("Per entity type (recall by gold type, precision by predicted type)", data["types"]),
        ):
            self.stdout.write(f"\n{title}\n{header}")
            for name, figures in rows.items():
                cells = " ".join(
                    f"{_cell(figures[k]):>7}"
                    for k in ("char_recall", "span_recall", "precision", "non_pii_kept")
                )
                self.stdout.write(
                    f"  {name:<32} {cells} {figures['gold_spans']:>6} {figures['predicted_spans']:>6}"
                )
        aside = data["set_aside"]
        self.stdout.write(
            "\nSet aside: predictions of what a source does not annotate (dates in wnut17,"
            "\nuner-gsdsimp, weibo-ner; handles weibo-ner left unlabelled): precision and kept"
            "\nwithout them; recall as above"
            f"\n  {'':<32} {'prec.':>7} {'kept':>7} {'aside':>6} {'pred':>6}"
        )
        for name, figures in {"all": aside["overall"], **aside["languages"], **aside["sources"]}.items():
            self.stdout.write(
                f"  {name:<32} {_cell(figures['precision']):>7} {_cell(figures['non_pii_kept']):>7}"
                f" {figures['set_aside_spans']:>6} {figures['predicted_spans']:>6}"
            )


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"
