"""``manage.py desensitize``: try a desensitization policy on a JSON Lines file.

    manage.py desensitize --input IN.jsonl --output OUT.jsonl [--policy NAME|PATH.json]
                          [--language auto|en|zh] [--processes N] [--key-file PATH]

Each input line is ``{"id": ..., "text": "..."}``; each output line is
``{"id", "text" (desensitized), "spans": [{start, end, entity_type, score}]}``
with offsets into the input text, in input order. The input streams through
(it is never read whole); the output appears only when every line succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, DjangoHelpFormatter

from common.exceptions import Invalid
from custody.desensitize import LANGUAGE_CHOICES, NAMED_POLICIES, Policy, policy_named
from custody.desensitize.core import MIN_KEY_BYTES
from custody.desensitize.parallel import desensitize_stream, process_count

INPUT_FORMAT = """\
input (--input): JSON Lines, UTF-8, one record a line:
  {"id": "ticket-1", "text": "Call Maria Lopez at +1 415 555 0100."}
  {"id": 2, "text": "请联系王小明，手机13812345678。"}
  "id" (required): a string or an integer, copied to the output as given;
  "text" (required): a string, the text to desensitize; other keys are ignored.
  Blank lines and a leading byte order mark are skipped. A bad line (invalid
  JSON or UTF-8, no "id", no "text", or one of the wrong type) stops the run
  with a message naming its line number, and no output is written.

output (--output): one line per record, in input order:
  {"id": "ticket-1", "text": "Call <PERSON> at <PHONE_NUMBER>.",
   "spans": [{"start": 5, "end": 16, "entity_type": "PERSON", "score": 0.85}, ...]}
  "spans" are offsets into the input text. The file appears only when every
  line succeeded.
"""


class _HelpFormatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order, with the input format's layout kept."""


class Command(BaseCommand):
    help = (
        "Desensitize a JSON Lines file of {id, text} records with a policy, writing "
        "{id, text, spans} lines in input order. Uses every core unless --processes says otherwise."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = _HelpFormatter
        parser.epilog = INPUT_FORMAT
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--input", required=True, type=Path, help="JSON Lines file of {id, text} records (format below)"
        )
        parser.add_argument(
            "--output", required=True, type=Path, help="where to write the desensitized lines"
        )
        parser.add_argument(
            "--policy",
            default="default",
            help=f"a named policy ({', '.join(NAMED_POLICIES)}) or a policy JSON file (default: default)",
        )
        parser.add_argument(
            "--language", default="auto", choices=LANGUAGE_CHOICES, help="default: auto, per record"
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help="worker processes (default: DESENSITIZE_PROCESSES; 0 = every core)",
        )
        parser.add_argument(
            "--key-file",
            default=None,
            help=f"pseudonym key ({MIN_KEY_BYTES}+ bytes); default: a random key for this run only",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # call_command() passes options as given, without the parser's type conversion.
        source, target = Path(options["input"]), Path(options["output"])
        if not source.is_file():
            raise CommandError(f"--input {source}: no such file")
        if target.resolve() == source.resolve():
            raise CommandError("--output must not be the input file")
        if not target.parent.is_dir():
            raise CommandError(f"--output {target}: directory {target.parent} does not exist")
        if options["processes"] is not None and options["processes"] < 0:
            raise CommandError("--processes must be 0 (every core) or more")
        policy = load_policy(options["policy"])
        key = load_key(Path(options["key_file"]) if options["key_file"] else None)
        processes = process_count(options["processes"])
        started = time.perf_counter()
        counts = self._run(source, target, policy, key, options["language"], processes)
        elapsed = time.perf_counter() - started
        records = counts.pop("", 0)
        found = ", ".join(f"{entity} {n}" for entity, n in counts.most_common()) or "nothing"
        self.stdout.write(
            f"desensitized {records} records with policy {policy.name!r} on {processes} process(es) "
            f"in {elapsed:.1f} s into {target}; found: {found}"
        )

    def _run(
        self, source: Path, target: Path, policy: Policy, key: bytes, language: str, processes: int
    ) -> Counter[str]:
        counts: Counter[str] = Counter()
        ids: deque[Any] = deque()
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                texts = _texts(source, ids)
                for result in desensitize_stream(texts, policy, key, language=language, processes=processes):
                    line = {
                        "id": ids.popleft(),
                        "text": result.text,
                        "spans": [s.to_dict() for s in result.spans],
                    }
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    counts[""] += 1
                    counts.update(s.entity_type for s in result.spans)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return counts


def _texts(source: Path, ids: deque[Any]) -> Iterator[str]:
    """Yield each record's text, remembering its id; raise CommandError naming the line of any bad one."""
    with source.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                raise CommandError(f"{source}, line {number}: invalid UTF-8 ({bad})") from None
            if number == 1:
                decoded = decoded.removeprefix("\ufeff")
            if not decoded.strip():
                continue
            try:
                record = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise CommandError(
                    f"{source}, line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            ids.append(_checked_id(source, number, record))
            yield record["text"]


def _checked_id(source: Path, number: int, record: Any) -> Any:
    where = f"{source}, line {number}"
    if not isinstance(record, dict):
        raise CommandError(f'{where}: expected an object with "id" and "text"')
    if "id" not in record:
        raise CommandError(f'{where}: missing "id"')
    if not isinstance(record["id"], str | int) or isinstance(record["id"], bool):
        raise CommandError(f'{where}: "id" must be a string or an integer')
    if "text" not in record:
        raise CommandError(f'{where}: missing "text"')
    if not isinstance(record["text"], str):
        raise CommandError(f'{where}: "text" must be a string')
    return record["id"]


def load_policy(value: str) -> Policy:
    """Return the named policy, or the one in a JSON file.

    :raises CommandError: when there is no such policy, or the file is not a valid policy.
    """
    path = Path(value)
    if value.endswith(".json") or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"--policy {value}: no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"--policy {value}: not a JSON file ({exc})") from None
        try:
            return Policy.from_dict(data)
        except Invalid as exc:
            problems = "; ".join(f"{e['pointer']}: {e['detail']}" for e in exc.errors) or exc.detail
            raise CommandError(f"--policy {value}: {problems}") from None
    try:
        return policy_named(value)
    except Invalid as exc:
        raise CommandError(f"--policy: {exc.detail}") from None


def load_key(path: Path | None) -> bytes:
    """Return the pseudonym key from the file, or a fresh random key.

    :raises CommandError: when the file cannot be read or is too short.
    """
    if path is None:
        return secrets.token_bytes(32)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"--key-file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise CommandError(f"--key-file {path}: a key needs at least {MIN_KEY_BYTES} bytes")
    return key
