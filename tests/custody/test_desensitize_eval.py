"""``manage.py desensitize_eval`` on a tiny development set, with figures worked out by hand."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from custody.desensitize.evaluation import canonical_type

# Record a: the e-mail address is found (15 characters); "now" is labelled OTHER
# and nothing finds it (3 characters). Record b: an address nobody labelled, so
# the prediction is wrong and removes 15 of its 24 non-PII characters.
RECORDS: list[dict[str, Any]] = [
    {
        "id": "a1",
        "source": "alpha",
        "language": "en",
        "text": "mail ann@example.com now",
        "spans": [
            {"start": 5, "end": 20, "type": "EMAIL_ADDRESS"},
            {"start": 21, "end": 24, "type": "OTHER"},
        ],
    },
    {"id": "b1", "source": "beta", "language": "en", "text": "write to bob@example.org", "spans": []},
]


def write_devset(directory: Path, lines: list[str], name: str = "en-test.jsonl") -> Path:
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evaluate(directory: Path, **options: Any) -> dict[str, Any]:
    out, err = StringIO(), StringIO()
    call_command("desensitize_eval", devset=str(directory), json=True, stdout=out, stderr=err, **options)
    return json.loads(out.getvalue())


class TestDesensitizeEval:
    def test_scores_a_tiny_set_exactly(self, tmp_path: Path) -> None:
        write_devset(tmp_path, [json.dumps(r) for r in RECORDS])
        result = evaluate(tmp_path, language="en")
        assert result["records"] == 2
        assert result["overall"] == {
            "char_recall": 0.8333,  # 15 of 18 PII characters
            "span_recall": 0.5,  # 1 of 2 gold spans
            "precision": 0.5,  # 1 of 2 predicted spans on PII
            "non_pii_kept": 0.5,  # 15 of 30 other characters removed
            "gold_spans": 2,
            "predicted_spans": 2,
        }
        assert result["sources"]["en/alpha"]["char_recall"] == 0.8333
        assert result["sources"]["en/beta"]["precision"] == 0.0
        assert result["sources"]["en/beta"]["char_recall"] is None
        email, other = result["types"]["en/EMAIL_ADDRESS"], result["types"]["en/OTHER"]
        assert (email["span_recall"], email["precision"], email["predicted_spans"]) == (1.0, 0.5, 2)
        assert (other["char_recall"], other["span_recall"], other["precision"]) == (0.0, 0.0, None)

    def test_all_languages_skips_a_missing_language_with_a_note(self, tmp_path: Path) -> None:
        write_devset(tmp_path, [json.dumps(RECORDS[0])])
        err = StringIO()
        call_command("desensitize_eval", devset=str(tmp_path), stdout=StringIO(), stderr=err)
        assert "zh-test.jsonl does not exist" in err.getvalue()

    def test_prints_a_table(self, tmp_path: Path) -> None:
        write_devset(tmp_path, [json.dumps(RECORDS[0])])
        out = StringIO()
        call_command("desensitize_eval", devset=str(tmp_path), language="en", stdout=out)
        assert "en/EMAIL_ADDRESS" in out.getvalue()
        assert "1.000" in out.getvalue()

    def test_a_missing_file_names_the_file(self, tmp_path: Path) -> None:
        with pytest.raises(CommandError, match=r"zh-dev\.jsonl: no such development set file"):
            evaluate(tmp_path, language="zh", split="dev")

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("{not json", r"en-test\.jsonl:2: invalid JSON"),
            ('["a list"]', r"en-test\.jsonl:2: a record must be a JSON object"),
            (
                json.dumps({**RECORDS[1], "spans": [{"start": 3, "end": 99, "type": "PERSON"}]}),
                r"en-test\.jsonl:2: spans\[0\]: offsets 3\.\.99 are outside the text",
            ),
            (json.dumps({**RECORDS[1], "spans": [{"start": 0, "end": 2, "type": "NAME"}]}), r"type 'NAME'"),
            (json.dumps({**RECORDS[1], "language": "fr"}), r"'language' must be one of en, zh"),
            (json.dumps({k: v for k, v in RECORDS[1].items() if k != "text"}), r"'text' must be a string"),
        ],
    )
    def test_a_malformed_line_names_the_file_and_line(self, tmp_path: Path, line: str, message: str) -> None:
        write_devset(tmp_path, [json.dumps(RECORDS[0]), line])
        with pytest.raises(CommandError, match=message):
            evaluate(tmp_path, language="en")

    def test_a_missing_directory_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(CommandError, match="no such directory"):
            evaluate(tmp_path / "nowhere")


class TestCanonicalTypes:
    @pytest.mark.parametrize(
        ("engine", "canonical"),
        [
            ("PERSON", "PERSON"),
            ("BANK_CARD", "CREDIT_CARD"),
            ("US_SSN", "ID"),
            ("CN_RESIDENT_ID", "ID"),
            ("PASSPORT", "ID"),
            ("ID_NUMBER", "ID"),
            ("IBAN_CODE", "ID"),
            ("NRP", "OTHER"),
            ("PASSWORD", "OTHER"),
        ],
    )
    def test_maps_engine_types(self, engine: str, canonical: str) -> None:
        assert canonical_type(engine) == canonical
