"""Desensitization throughput and accuracy: Sealroom against stock Presidio and the NER ceiling.

    .venv/bin/python bench/desensitize.py [--records 1500] [--repeat 3] [--processes 0]
    .venv/bin/python bench/desensitize.py --devset bench/data/devset --split test [--skip-throughput]
        [--language en|zh|all] [--skip-pool]
    .venv/bin/python bench/desensitize.py --devset bench/data/devset --split dev --stages [--repeat 3]

With ``--devset`` the records are the development set's split (every
language file present), and the accuracy part prints the development-set
figures of ``manage.py desensitize_eval`` (character recall, span recall,
leak-view precision, non-PII characters kept) for Sealroom and for stock
Presidio side by side, overall, per language, per source and per entity type.

Prints, from one run on the same records (bench/data/labeled.jsonl, cycled
to ``--records``; "mixed" means the whole set: English, Chinese and mixed
records; "English" its English records):

(a) Sealroom's desensitizer, one process (default policy, tag operator);
(b) Sealroom on all cores (``--processes``, 0 = every core; worker start-up
    is reported apart, as a long-running worker pays it once);
(c) stock Presidio: ``BatchAnalyzerEngine`` over an ``AnalyzerEngine`` with the
    default recognizers and the same spaCy model, batch size 32, one process;
(d) the ceiling: the spaCy model's NER pass alone (``nlp.pipe`` with only the
    components NER needs) over the English records;

then the ratios (a)/(d) per core on English records and (b)/(c) on mixed
records, and precision and recall per entity type and per language for
Sealroom and for stock Presidio at the same score threshold (0.5), overlaps
resolved the same way for both. A gold span counts as found when at least
half of its characters are covered by predictions of a compatible type
(BANK_CARD and CREDIT_CARD are compatible); a prediction is correct when at
least half of its characters fall on gold spans of a compatible type, and is
ignored when it falls on gold types that neither system claims (street
addresses, organisations, ages). Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerResult  # noqa: E402

from custody.desensitize import Desensitizer, Policy  # noqa: E402
from custody.desensitize.engine import NER_BATCH_SIZE, engine_for, load_spacy_engine, resolve  # noqa: E402
from custody.desensitize.evaluation import (  # noqa: E402
    DEVSET_LANGUAGES,
    DevRecord,
    devset_path,
    load_devset_file,
)
from custody.desensitize.evaluation import score as devset_score  # noqa: E402
from custody.desensitize.parallel import DesensitizerPool, process_count  # noqa: E402
from custody.recognizers import Candidate  # noqa: E402
from custody.recognizers.offline import patch_presidio_tldextract  # noqa: E402

DATA = ROOT / "bench" / "data" / "labeled.jsonl"
THRESHOLD = 0.5
IGNORED_GOLD = frozenset({"STREET_ADDRESS", "ORGANIZATION", "AGE"})
COMPATIBLE = {"BANK_CARD": {"BANK_CARD", "CREDIT_CARD"}, "CREDIT_CARD": {"BANK_CARD", "CREDIT_CARD"}}
KEY = b"bench-pseudonym-key-0123456789ab"

Spans = list[tuple[int, int, str]]


def load_records() -> list[dict[str, Any]]:
    with DATA.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def cycled(texts: Sequence[str], count: int) -> list[str]:
    return list(itertools.islice(itertools.cycle(texts), count))


class Rate(NamedTuple):
    """Throughput of one measurement: by wall clock, and per CPU-second of this process."""

    records: float
    chars: float
    cpu_records: float


Run = tuple[Callable[[], object], list[str]]


def best_rates(runs: Sequence[Run], repeat: int) -> list[Rate]:
    """Run each of ``runs`` in turn for ``repeat`` rounds; return each one's best wall and CPU rates.

    Interleaving keeps a burst of load from another process on this shared
    machine from landing on one side of a ratio only; CPU time (this
    process's own) is what "per core" means, and other processes do not
    inflate it.
    """
    wall = [float("inf")] * len(runs)
    cpu = [float("inf")] * len(runs)
    for _ in range(repeat):
        for index, (run, _texts) in enumerate(runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            wall[index] = min(wall[index], time.perf_counter() - started)
            cpu[index] = min(cpu[index], time.process_time() - started_cpu)
    rates = []
    for (_run, texts), w, c in zip(runs, wall, cpu, strict=True):
        rates.append(Rate(len(texts) / w, sum(map(len, texts)) / w, len(texts) / c))
    return rates


def line(label: str, rate: Rate, *, cpu: bool = True) -> None:
    per_cpu = f"{rate.cpu_records:>9.1f} records per CPU-second" if cpu else ""
    print(f"  {label:<56} {rate.records:>8.1f} records/s {rate.chars:>10,.0f} chars/s  {per_cpu}")


# --- throughput -------------------------------------------------------------------------------


def workers_cpu(pool: DesensitizerPool) -> float:
    """Return the CPU seconds the pool's workers have used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pool.worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def ner_ceiling(texts: list[str]) -> Callable[[], object]:
    """The spaCy model with only what NER needs, as Sealroom's engine runs it."""
    nlp = engine_for(settings.SPACY_MODEL).nlp
    print(f"  NER-only pipeline: {nlp.pipe_names}, batch size {NER_BATCH_SIZE}")
    return lambda: [None for _ in nlp.pipe(texts, batch_size=NER_BATCH_SIZE)]


def stock_analyzer() -> tuple[AnalyzerEngine, BatchAnalyzerEngine]:
    patch_presidio_tldextract()  # the stock e-mail recognizer would fetch the suffix list
    nlp_engine = load_spacy_engine(settings.SPACY_MODEL)
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    return analyzer, BatchAnalyzerEngine(analyzer)


def stock_run(
    batch: BatchAnalyzerEngine, texts: list[str], threshold: float = 0.0
) -> list[list[RecognizerResult]]:
    return list(batch.analyze_iterator(texts, language="en", batch_size=32, score_threshold=threshold))


def throughput(args: argparse.Namespace, records: list[dict[str, Any]], batch: BatchAnalyzerEngine) -> None:
    mixed = cycled([r["text"] for r in records], args.records)
    english = cycled([r["text"] for r in records if r["language"] == "en"], args.records)
    repeat = args.repeat
    desensitizer = Desensitizer(Policy(), KEY)
    desensitizer.desensitize_batch(mixed[:200])  # warm up: engine, regex caches
    stock_run(batch, mixed[:64])
    ceiling = ner_ceiling(english)
    d_en, a_en = best_rates(
        [(ceiling, english), (lambda: desensitizer.desensitize_batch(english), english)], repeat
    )
    a_mixed, c_mixed, c_en = best_rates(
        [
            (lambda: desensitizer.desensitize_batch(mixed), mixed),
            (lambda: stock_run(batch, mixed), mixed),
            (lambda: stock_run(batch, english), english),
        ],
        repeat,
    )

    processes = process_count(args.processes)
    pool_rates = None if args.skip_pool else _pool_rates(processes, mixed, english, repeat)

    print(
        f"\nThroughput ({len(mixed)} mixed and {len(english)} English records; best of {repeat}, interleaved)"
    )
    line("(a) Sealroom, 1 process, English", a_en)
    line("(a) Sealroom, 1 process, mixed", a_mixed)
    if pool_rates is not None:
        b_mixed, b_en, startup, per_worker_cpu = pool_rates
        line(f"(b) Sealroom, {processes} processes, English", b_en, cpu=False)
        line(f"(b) Sealroom, {processes} processes, mixed", b_mixed, cpu=False)
        print(f"      worker start-up (spawn, load model): {startup:.1f} s, not counted")
        print(
            f"      workers: {per_worker_cpu:.1f} records per worker CPU-second "
            f"(x {processes} free cores = {per_worker_cpu * processes:.0f} records/s, an estimate)"
        )
    line("(c) stock Presidio BatchAnalyzerEngine, batch 32, English", c_en)
    line("(c) stock Presidio BatchAnalyzerEngine, batch 32, mixed", c_mixed)
    line("(d) spaCy NER pass alone, English (ceiling)", d_en)
    print("\nRatios")
    if english:  # --language zh has no English records to compare
        per_cpu, per_wall = a_en.cpu_records / d_en.cpu_records, a_en.records / d_en.records
        print(
            f"  (a)/(d) per core, English records: {per_cpu:.2f} per CPU-second, "
            f"{per_wall:.2f} wall (goal 0.85)"
        )
    if pool_rates is not None:
        b_ratio = pool_rates[0].records / c_mixed.records
        print(f"  (b)/(c) all cores vs stock, mixed records: {b_ratio:.2f} (goal 3)")
    print(f"  (a)/(c) one process vs stock, mixed records: {a_mixed.records / c_mixed.records:.2f} wall")
    english_ratio = f"{a_en.cpu_records / c_en.cpu_records:.2f}" if english else "-"
    print(
        f"  (a)/(c) per CPU-second vs stock: mixed {a_mixed.cpu_records / c_mixed.cpu_records:.2f}, "
        f"English {english_ratio} (goal 3)"
    )
    if pool_rates is not None:
        print(
            f"  (b)/(a) scaling on {processes} processes, mixed records: "
            f"{pool_rates[0].records / a_mixed.records:.2f}"
        )
    print(f"  load average now (other processes on this machine): {os.getloadavg()[0]:.2f}")


def _pool_rates(
    processes: int, mixed: list[str], english: list[str], repeat: int
) -> tuple[Rate, Rate, float, float]:
    """(b): the mixed and English rates on ``processes`` workers, their start-up and CPU per record."""
    started = time.perf_counter()
    with DesensitizerPool(Policy(), KEY, processes=processes) as pool:
        pool.warm_up()
        startup = time.perf_counter() - started
        workers_before = workers_cpu(pool)
        b_mixed, b_en = best_rates(
            [
                (lambda: list(pool.desensitize(mixed)), mixed),
                (lambda: list(pool.desensitize(english)), english),
            ],
            repeat,
        )
        # All rounds of both runs: what the workers spent per record, on whatever cores they got.
        per_worker_cpu = 2 * repeat * len(mixed) / (workers_cpu(pool) - workers_before)
    return b_mixed, b_en, startup, per_worker_cpu


# --- accuracy ---------------------------------------------------------------------------------


def compatible(predicted: str, gold: str) -> bool:
    return predicted == gold or predicted in COMPATIBLE.get(gold, ())


def accepts(gold: str, predicted: str) -> bool:
    return compatible(predicted, gold)


def covered(start: int, end: int, spans: Spans, accept: Callable[[str], bool]) -> int:
    chars: set[int] = set()
    for s, e, t in spans:
        if accept(t):
            chars.update(range(max(start, s), min(end, e)))
    return len(chars)


def score(records: list[dict[str, Any]], predictions: list[Spans]) -> dict[tuple[str, str], list[int]]:
    """Return counts[(language, type)] = [tp_pred, fp, found_gold, gold]."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for record, predicted in zip(records, predictions, strict=True):
        language = record["language"]
        gold = [(g["start"], g["end"], g["entity_type"]) for g in record["spans"]]
        for start, end, entity in predicted:
            half = (end - start) / 2
            if covered(start, end, gold, partial(compatible, entity)) >= half:
                counts[(language, entity)][0] += 1
            elif covered(start, end, gold, lambda t: t in IGNORED_GOLD) >= half:
                continue
            else:
                counts[(language, entity)][1] += 1
        for start, end, entity in gold:
            if entity in IGNORED_GOLD:
                continue
            counts[(language, entity)][3] += 1
            if covered(start, end, predicted, partial(accepts, entity)) * 2 >= end - start:
                counts[(language, entity)][2] += 1
    return counts


def pr(c: list[int]) -> str:
    precision = f"{c[0] / (c[0] + c[1]):.2f}" if c[0] + c[1] else "  - "
    recall = f"{c[2] / c[3]:.2f}" if c[3] else "  - "
    return f"{precision:>5} {recall:>5}"


def accuracy(records: list[dict[str, Any]], batch: BatchAnalyzerEngine) -> None:
    texts = [r["text"] for r in records]
    ours = [
        [(s.start, s.end, s.entity_type) for s in d.spans]
        for d in Desensitizer(Policy(), KEY).desensitize_batch(texts)
    ]
    stock = []
    for results in stock_run(batch, texts):
        candidates = [Candidate(r.start, r.end, r.entity_type, r.score, "stock") for r in results]
        kept = resolve(candidates, frozenset(r.entity_type for r in results), THRESHOLD)
        stock.append([(c.start, c.end, c.entity_type) for c in kept])
    ours_counts, stock_counts = score(records, ours), score(records, stock)
    keys = sorted(set(ours_counts) | set(stock_counts), key=lambda k: (k[0], k[1]))
    print(f"\nPrecision / recall at threshold {THRESHOLD} on {len(records)} labeled records")
    print(f"  {'language':<8} {'entity type':<18} {'gold':>5}   {'Sealroom P   R':>14}   {'stock P   R':>12}")
    for language in ("en", "zh", "mixed"):
        for key in [k for k in keys if k[0] == language]:
            o, s = ours_counts[key], stock_counts[key]
            print(f"  {language:<8} {key[1]:<18} {max(o[3], s[3]):>5}   {pr(o):>14}   {pr(s):>12}")
        total_o = [sum(ours_counts[k][i] for k in keys if k[0] == language) for i in range(4)]
        total_s = [sum(stock_counts[k][i] for k in keys if k[0] == language) for i in range(4)]
        print(f"  {language:<8} {'(all types)':<18} {total_o[3]:>5}   {pr(total_o):>14}   {pr(total_s):>12}")


def load_devset(devset: Path, split: str, languages: Sequence[str] = DEVSET_LANGUAGES) -> list[DevRecord]:
    records: list[DevRecord] = []
    for language in languages:
        path = devset_path(devset, language, split)
        if path.exists():
            records.extend(load_devset_file(path))
        else:
            print(f"note: {path} does not exist; {language} is left out")
    return records


def stock_predictions(batch: BatchAnalyzerEngine, texts: list[str]) -> list[Spans]:
    """Stock Presidio's results, resolved like Sealroom's (threshold, then highest score, longest span)."""
    out = []
    for results in stock_run(batch, texts):
        candidates = [Candidate(r.start, r.end, r.entity_type, r.score, "stock") for r in results]
        kept = resolve(candidates, frozenset(r.entity_type for r in results), THRESHOLD)
        out.append([(c.start, c.end, c.entity_type) for c in kept])
    return out


def devset_accuracy(records: list[DevRecord], batch: BatchAnalyzerEngine) -> None:
    texts = [r.text for r in records]
    ours = [
        [(s.start, s.end, s.entity_type) for s in d.spans]
        for d in Desensitizer(Policy(), KEY).desensitize_batch(texts)
    ]
    mine, stock = (
        devset_score(records, ours).to_dict(),
        devset_score(records, stock_predictions(batch, texts)).to_dict(),
    )
    keys = ("char_recall", "span_recall", "precision", "non_pii_kept")
    print(
        f"\nDevelopment set, {len(records)} records: Sealroom (default"
        f" policy) | stock Presidio (threshold {THRESHOLD})"
    )
    print(
        f"  {'':<30} {'char R':>7} {'span R':>7} {'prec.':>7} {'kept':>7}"
        f" | {'char R':>7} {'span R':>7} {'prec.':>7} {'kept':>7}  gold"
    )
    for section in ("overall", "languages", "sources", "types"):
        rows = {"all": mine["overall"]} if section == "overall" else mine[section]
        others = {"all": stock["overall"]} if section == "overall" else stock[section]
        for name, figures in rows.items():
            other = others.get(name, {})
            left = " ".join(f"{_fig(figures.get(k)):>7}" for k in keys)
            right = " ".join(f"{_fig(other.get(k)):>7}" for k in keys)
            print(f"  {name:<30} {left} | {right}  {figures['gold_spans']:>4}")


def _fig(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1500, help="records per throughput run (default 1500)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement, best kept (default 3)")
    parser.add_argument(
        "--processes", type=int, default=settings.DESENSITIZE_PROCESSES, help="0 = every core"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--devset", type=Path, default=None, help="score on a development set directory")
    parser.add_argument("--split", default="test", help="the development set split (default: test)")
    parser.add_argument(
        "--language",
        default="all",
        choices=(*DEVSET_LANGUAGES, "all"),
        help="with --devset: one language's records only (default: all)",
    )
    parser.add_argument(
        "--skip-pool", action="store_true", help="leave out (b), Sealroom on several processes"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="with --devset: only the CPU per record of the desensitizer's costly stages",
    )
    args = parser.parse_args()
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if args.devset is not None and args.stages:
        stages(args)
        return
    if args.devset is not None:
        run_devset(args)
        return
    records = load_records()
    print(
        f"spaCy model {settings.SPACY_MODEL}; {os.cpu_count()} CPUs; labeled set {len(records)} records ("
        + ", ".join(f"{sum(r['language'] == lang for r in records)} {lang}" for lang in ("en", "zh", "mixed"))
        + f"); load average {os.getloadavg()[0]:.2f}"
    )
    _, batch = stock_analyzer()
    if not args.skip_throughput:
        throughput(args, records, batch)
    accuracy(records, batch)


def run_devset(args: argparse.Namespace) -> None:
    records = load_devset(
        args.devset, args.split, DEVSET_LANGUAGES if args.language == "all" else (args.language,)
    )
    if not records:
        raise SystemExit(f"no records in {args.devset} for split {args.split}")
    counts = ", ".join(f"{sum(r.language == lang for r in records)} {lang}" for lang in DEVSET_LANGUAGES)
    print(
        f"spaCy model {settings.SPACY_MODEL}; {os.cpu_count()} CPUs; development set {args.devset}, "
        f"split {args.split}: {len(records)} records ({counts}); load average {_load()}"
    )
    _, batch = stock_analyzer()
    if not args.skip_throughput:
        as_dicts = [{"text": r.text, "language": r.language} for r in records]
        throughput(args, as_dicts, batch)
    devset_accuracy(records, batch)
    print(f"\nload average at the end: {_load()}")


def stages(args: argparse.Namespace) -> None:
    """CPU per record of the whole desensitizer and of its costly stages, per language, one process.

    Each figure is the best of ``--repeat`` rounds over the split's records of one language: the
    English tagger (tokenizer, windows, decoding) and its encoder alone, on the English records'
    Latin text; jieba and the Chinese character tagger on the Chinese records.
    """
    from custody.language import latin_view
    from custody.recognizers import zh_model, zh_segmenter

    desensitizer = Desensitizer(Policy(), KEY)
    engine = engine_for(settings.SPACY_MODEL)
    texts = {
        lang: [r.text for r in load_devset(args.devset, args.split, (lang,))] for lang in DEVSET_LANGUAGES
    }
    desensitizer.desensitize_batch(texts["en"][:100] + texts["zh"][:100])  # warm up

    def show(label: str, run: Callable[[], object], count: int) -> None:
        best = float("inf")
        for _ in range(args.repeat):
            started = time.process_time()
            run()
            best = min(best, time.process_time() - started)
        print(f"    {label:<40} {best / max(1, count) * 1e3:6.2f} ms")

    print(f"CPU per record, {args.split} split, best of {args.repeat}; load average {_load()}")
    en, zh = texts["en"], texts["zh"]
    print(f"  English, {len(en)} records")
    show("whole desensitizer", lambda: desensitizer.desensitize_batch(en), len(en))
    tagger = engine.en_tagger
    if tagger is not None:
        latin = [latin_view(t) for t in en]
        windows = tagger._windows(latin)
        show(f"English tagger ({tagger.precision})", lambda: tagger.tag(latin), len(en))
        show("  of which encoder and head", lambda: tagger._probabilities(windows), len(en))
    print(f"  Chinese, {len(zh)} records")
    show("whole desensitizer", lambda: desensitizer.desensitize_batch(zh), len(zh))
    show("jieba segmentation", lambda: [zh_segmenter._cut(t) for t in zh], len(zh))
    words = [zh_segmenter._cut(t) for t in zh]
    chinese = zh_model.tagger()
    show(
        "Chinese character tagger",
        lambda: [chinese.probabilities(t, w) for t, w in zip(zh, words, strict=True)],
        len(zh),
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"


if __name__ == "__main__":
    main()
