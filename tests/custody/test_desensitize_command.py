"""``manage.py desensitize`` end to end, through call_command with files in a temporary directory."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

RECORDS: list[dict[str, Any]] = [
    {"id": 1, "text": "Please call John Smith at (212) 555-0143."},
    {"id": "b", "text": "身份证号110101199003078515，电话13812345678联系"},
    {"id": 3, "text": "Nothing to see here."},
    {"id": 4, "text": "联系人：张伟，邮箱zhang.wei@example.cn"},
]


def write_lines(path: Path, lines: list[str] | list[bytes]) -> Path:
    data = b"".join(line if isinstance(line, bytes) else line.encode() + b"\n" for line in lines)
    path.write_bytes(data)
    return path


def desensitize(tmp_path: Path, lines: list[str] | list[bytes], **options: object) -> list[dict]:
    source = write_lines(tmp_path / "in.jsonl", lines)
    target = tmp_path / "out.jsonl"
    call_command("desensitize", input=str(source), output=str(target), stdout=StringIO(), **options)
    return [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]


class TestDesensitizeCommand:
    def test_writes_desensitized_records_in_input_order(self, tmp_path: Path) -> None:
        out = desensitize(tmp_path, [json.dumps(r, ensure_ascii=False) for r in RECORDS], processes=1)
        assert [line["id"] for line in out] == [1, "b", 3, 4]
        assert out[0]["text"] == "Please call <PERSON> at <PHONE_NUMBER>."
        assert out[1]["text"] == "身份证号<CN_RESIDENT_ID>，电话<PHONE_NUMBER>联系"
        assert out[2] == {"id": 3, "text": "Nothing to see here.", "spans": []}
        for record, line in zip(RECORDS, out, strict=True):
            for span in line["spans"]:
                assert set(span) == {"start", "end", "entity_type", "score"}
                assert record["text"][span["start"] : span["end"]]  # offsets into the input
        assert [RECORDS[3]["text"][s["start"] : s["end"]] for s in out[3]["spans"]] == [
            "张伟",
            "zhang.wei@example.cn",
        ]

    def test_several_processes_give_the_same_output_as_one(self, tmp_path: Path) -> None:
        key = tmp_path / "key"
        key.write_bytes(b"k" * 32)
        lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS * 40]
        one = desensitize(tmp_path, lines, processes=1, policy="pseudonym", key_file=str(key))
        two = desensitize(tmp_path, lines, processes=2, policy="pseudonym", key_file=str(key))
        assert one == two
        assert len(two) == len(lines)
        assert "<PERSON_" in two[0]["text"]

    def test_reads_a_policy_file(self, tmp_path: Path) -> None:
        policy = tmp_path / "policy.json"
        policy.write_text(
            json.dumps({"name": "mine", "entities": ["PHONE_NUMBER"], "default_operator": "redact"})
        )
        out = desensitize(tmp_path, [json.dumps(RECORDS[0])], processes=1, policy=str(policy))
        assert out[0]["text"] == "Please call John Smith at ."

    def test_language_option(self, tmp_path: Path) -> None:
        out = desensitize(tmp_path, [json.dumps(RECORDS[0])], processes=1, language="zh")
        assert [s["entity_type"] for s in out[0]["spans"]] == ["PHONE_NUMBER"]

    def test_skips_blank_lines_and_a_byte_order_mark(self, tmp_path: Path) -> None:
        lines = ["\ufeff" + json.dumps(RECORDS[2]), "", "  ", json.dumps(RECORDS[0])]
        assert [line["id"] for line in desensitize(tmp_path, lines, processes=1)] == [3, 1]


class TestDesensitizeCommandErrors:
    @pytest.mark.parametrize(
        ("bad_line", "message"),
        [
            ('{"id": 2, "text": "unterminated}', "line 2: invalid JSON"),
            ('{"text": "no id"}', 'line 2: missing "id"'),
            ('{"id": 2}', 'line 2: missing "text"'),
            ('{"id": 2, "text": 42}', 'line 2: "text" must be a string'),
            ('{"id": null, "text": "x"}', 'line 2: "id" must be a string or an integer'),
            ('["id", "text"]', "line 2: expected an object"),
        ],
    )
    def test_names_the_line_of_a_bad_record(self, tmp_path: Path, bad_line: str, message: str) -> None:
        with pytest.raises(CommandError, match=message):
            desensitize(tmp_path, [json.dumps(RECORDS[0]), bad_line, json.dumps(RECORDS[2])], processes=1)
        assert not (tmp_path / "out.jsonl").exists()
        assert list(tmp_path.glob(".out.jsonl.*")) == []

    def test_names_the_line_of_invalid_utf8(self, tmp_path: Path) -> None:
        lines = [json.dumps(RECORDS[0]).encode() + b"\n", b'{"id": 2, "text": "caf\xe9"}\n']
        with pytest.raises(CommandError, match=r"line 2: invalid UTF-8 \(byte 0xe9"):
            desensitize(tmp_path, lines, processes=1)
        assert not (tmp_path / "out.jsonl").exists()

    def test_a_bad_line_stops_a_parallel_run_too(self, tmp_path: Path) -> None:
        lines = [json.dumps(RECORDS[0])] * 300 + ["not json"]
        with pytest.raises(CommandError, match="line 301: invalid JSON"):
            desensitize(tmp_path, lines, processes=2)
        assert not (tmp_path / "out.jsonl").exists()

    def test_names_the_field_of_an_invalid_policy_file(self, tmp_path: Path) -> None:
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps({"operators": {"PERSON": {"kind": "shred"}}}))
        with pytest.raises(CommandError, match="/operators/PERSON/kind"):
            desensitize(tmp_path, [json.dumps(RECORDS[0])], processes=1, policy=str(policy))

    def test_refuses_an_unknown_policy_name(self, tmp_path: Path) -> None:
        with pytest.raises(CommandError, match="no desensitization policy named 'lenient'"):
            desensitize(tmp_path, [json.dumps(RECORDS[0])], processes=1, policy="lenient")

    def test_refuses_a_missing_input_and_a_short_key(self, tmp_path: Path) -> None:
        with pytest.raises(CommandError, match="no such file"):
            call_command(
                "desensitize", input=str(tmp_path / "nope.jsonl"), output=str(tmp_path / "out.jsonl")
            )
        key = tmp_path / "key"
        key.write_bytes(b"short")
        with pytest.raises(CommandError, match="at least 16 bytes"):
            desensitize(tmp_path, [json.dumps(RECORDS[0])], processes=1, key_file=str(key))
