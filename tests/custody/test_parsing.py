"""Upload parsing: every format streams into records, and bad input says what and where."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from common.exceptions import DomainError, Invalid, TooLarge, UnsupportedFormat
from custody.parsing import (
    FieldSpec,
    Format,
    ParsedRecord,
    ParseFailure,
    detect_format,
    iter_records,
    sanitize_filename,
)
from custody.parsing.streams import READ_CHUNK

TEXT = FieldSpec(text_fields=("text",))
LIMITS = {"max_records": 1000, "max_record_chars": 1000, "max_bytes": 10 * 1024**2, "max_gzip_ratio": 200}


def parse(data: bytes, fmt: Format, fields: FieldSpec = TEXT, *, gzipped: bool = False, **limits: int):
    stream = io.BytesIO(gzip.compress(data) if gzipped else data)
    return list(iter_records(stream, fmt, gzipped, fields, **{**LIMITS, **limits}))


def failure(
    kind: type[DomainError], data: bytes, fmt: Format, fields: FieldSpec = TEXT, **kwargs
) -> DomainError:
    with pytest.raises(kind) as caught:
        parse(data, fmt, fields, **kwargs)
    error = caught.value
    assert len(error.errors) == 1
    assert error.errors[0]["code"] == error.code
    assert error.errors[0]["detail"] == error.detail
    return error


def pointer(error: DomainError) -> str:
    return error.errors[0]["pointer"]


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return buffer.getvalue()


class CountingStream(io.BytesIO):
    """An endless stream of one byte value, counting what was read from it."""

    def __init__(self, fill: bytes) -> None:
        super().__init__()
        self.fill = fill
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        size = READ_CHUNK if size is None or size < 0 else size
        self.read_bytes += size
        return self.fill * size


class TestJsonLines:
    def test_reads_text_and_declared_metadata_and_drops_the_rest(self):
        data = (
            b'{"text": "first", "id": 7, "tags": {"lang": ["en"]}, "secret_extra": "x"}\n'
            b"\n"
            b'{"text": "", "id": null}\n'
            b'{"text": "third"}\n'
        )
        records = parse(data, Format.JSONL, FieldSpec(("text",), ("id", "tags")))
        assert records == [
            ParsedRecord(0, "line 1", {"text": "first"}, {"id": 7, "tags": {"lang": ["en"]}}),
            ParsedRecord(1, "line 3", {"text": ""}, {"id": None}),
            ParsedRecord(2, "line 4", {"text": "third"}, {}),
        ]

    def test_accepts_crlf_a_bom_gzip_and_several_text_fields(self):
        data = b'\xef\xbb\xbf{"title": "T", "body": "B\\u00e9"}\r\n{"title": "U", "body": "C"}\r\n'
        records = parse(data, Format.JSONL, FieldSpec(("title", "body")), gzipped=True)
        assert [record.text for record in records] == [
            {"title": "T", "body": "Bé"},
            {"title": "U", "body": "C"},
        ]

    def test_reads_concatenated_gzip_members(self):
        data = gzip.compress(b'{"text": "a"}\n') + gzip.compress(b'{"text": "b"}\n') + b"\0\0"
        records = list(iter_records(io.BytesIO(data), Format.JSONL, True, TEXT, **LIMITS))
        assert [record.text["text"] for record in records] == ["a", "b"]

    def test_broken_json_names_the_line_and_column(self):
        error = failure(ParseFailure, b'{"text": "ok"}\n{"text": "no comma" "id": 1}\n', Format.JSONL)
        assert error.code == "custody.invalid_json"
        assert error.detail.startswith("line 2, column 21: not valid JSON")
        assert pointer(error) == "/records/1"

    @pytest.mark.parametrize(
        ("line", "kind"),
        [(b"[1, 2]", "an array"), (b'"text"', "a string"), (b"null", "null"), (b"3", "a number")],
    )
    def test_a_line_that_is_not_an_object_is_named(self, line, kind):
        error = failure(ParseFailure, b'{"text": "ok"}\n\n' + line + b"\n", Format.JSONL)
        assert error.code == "custody.not_an_object"
        assert error.detail == f"line 3: expected a JSON object, got {kind}."
        assert pointer(error) == "/records/1"

    def test_a_missing_text_field_names_line_and_field(self):
        error = failure(ParseFailure, b'{"text": "a"}\n{"body": "b"}\n', Format.JSONL)
        assert error.code == "custody.missing_field"
        assert error.detail == 'line 2: the text field "text" is missing.'
        assert pointer(error) == "/records/1/text"

    def test_a_text_field_must_be_a_string(self):
        error = failure(ParseFailure, b'{"text": ["a"]}\n', Format.JSONL)
        assert error.code == "custody.not_text"
        assert error.detail == 'line 1: the text field "text" must be a string, not an array.'

    def test_pointers_escape_field_names(self):
        error = failure(ParseFailure, b'{"a": 1}\n', Format.JSONL, FieldSpec(("x/y~z",)))
        assert pointer(error) == "/records/0/x~1y~0z"

    @pytest.mark.parametrize(
        "line",
        [
            b'{"text": "a", "n": NaN}',
            b'{"text": "a", "n": 1' + b"9" * 5000 + b"}",
            b'{"text": "' + b"[" * 5 + b'"' + b"[",
        ],
    )
    def test_non_standard_or_hostile_json_is_refused_cleanly(self, line):
        error = failure(
            ParseFailure, line + b"\n", Format.JSONL, FieldSpec(("text",), ("n",)), max_record_chars=9000
        )
        assert error.code == "custody.invalid_json"
        assert error.detail.startswith("line 1")

    def test_deep_nesting_is_a_parse_error_not_a_crash(self):
        error = failure(ParseFailure, b"[" * 100_000, Format.JSONL, max_record_chars=200_000)
        assert error.detail == "line 1: not valid JSON (nested too deeply)."

    def test_a_lone_surrogate_escape_is_refused(self):
        error = failure(ParseFailure, b'{"text": "ok"}\n{"text": "bad \\udc80"}\n', Format.JSONL)
        assert error.code == "custody.invalid_unicode"
        assert pointer(error) == "/records/1/text"


class TestCsv:
    def test_reads_rows_and_keeps_formula_looking_cells_verbatim(self):
        data = b"text,id,notes\r\n=SUM(A1:A9),1,x\r\n\"+cmd|' /C calc'!A0\",2,y\r\n-2,3,z\r\n@user,4,w\r\n"
        records = parse(data, Format.CSV, FieldSpec(("text",), ("id",)))
        assert [record.text["text"] for record in records] == [
            "=SUM(A1:A9)",
            "+cmd|' /C calc'!A0",
            "-2",
            "@user",
        ]
        assert records[0] == ParsedRecord(0, "row 2", {"text": "=SUM(A1:A9)"}, {"id": "1"})
        assert records[3].location == "row 5"

    def test_a_quoted_cell_may_span_lines_and_locations_follow(self):
        data = b'text,id\n"two\nlines",1\n\nafter,2\n'
        records = parse(data, Format.CSV, FieldSpec(("text",), ("id",)))
        assert [(record.text["text"], record.location) for record in records] == [
            ("two\nlines", "row 2"),
            ("after", "row 4 (line 5)"),
        ]

    @pytest.mark.parametrize("delimiter", [b";", b"\t"])
    def test_semicolon_and_tab_are_recognised(self, delimiter):
        data = delimiter.join([b"id", b"text"]) + b"\n" + delimiter.join([b"1", b"hello, world"]) + b"\n"
        records = parse(data, Format.CSV, gzipped=True)
        assert records[0].text == {"text": "hello, world"}

    def test_a_missing_column_is_named_with_the_columns_found(self):
        error = failure(ParseFailure, b"body,id\nhello,1\n", Format.CSV, FieldSpec(("text",), ("id",)))
        assert error.code == "custody.missing_column"
        assert error.detail == 'The CSV header has no column "text"; the columns found are: "body", "id".'
        assert pointer(error) == "/file"

    def test_a_missing_metadata_column_is_an_error_too(self):
        error = failure(ParseFailure, b"text\nhello\n", Format.CSV, FieldSpec(("text",), ("lang",)))
        assert 'no column "lang"' in error.detail

    def test_a_ragged_row_is_named(self):
        error = failure(ParseFailure, b"text,id\na,1\nb,2,extra\n", Format.CSV)
        assert error.code == "custody.ragged_row"
        assert error.detail == "row 3: has 3 columns, but the header has 2."
        assert pointer(error) == "/records/1"

    def test_an_unterminated_quote_is_named(self):
        error = failure(ParseFailure, b'text\nok\n"never closed\n', Format.CSV)
        assert error.code == "custody.invalid_csv"
        assert error.detail.startswith("row 3: malformed CSV")

    def test_a_header_alone_is_an_empty_file(self):
        assert failure(ParseFailure, b"text,id\r\n\r\n", Format.CSV).code == "custody.empty_file"

    def test_a_row_over_the_record_limit_is_too_large_even_across_lines(self):
        data = b'text\nshort\n"' + b"x\n" * 600 + b'"\n'
        error = failure(TooLarge, data, Format.CSV)
        assert error.code == "custody.record_too_large"
        assert error.detail.startswith("Row 3 is too long")
        assert pointer(error) == "/records/1"


class TestPlainText:
    def test_one_record_per_non_blank_line(self):
        records = parse(b"first\r\n\r\n  \r\nsecond =1+1\r\n", Format.TEXT_LINES)
        assert records == [
            ParsedRecord(0, "line 1", {"text": "first"}),
            ParsedRecord(1, "line 4", {"text": "second =1+1"}),
        ]

    def test_documents_are_separated_by_blank_lines(self):
        data = b"Title\nbody one\n\n\n \nSecond\r\nbody two\r\n\r\nlast"
        records = parse(data, Format.TEXT_DOCUMENTS, gzipped=True)
        assert records == [
            ParsedRecord(0, "document starting at line 1", {"text": "Title\nbody one"}),
            ParsedRecord(1, "document starting at line 6", {"text": "Second\nbody two"}),
            ParsedRecord(2, "document starting at line 9", {"text": "last"}),
        ]

    def test_an_over_long_document_is_named_by_its_first_line(self):
        data = b"short\n\n" + b"line of forty characters, more or less.\n" * 30
        error = failure(TooLarge, data, Format.TEXT_DOCUMENTS)
        assert error.detail == "The document starting at line 3 is too long; a record may have at most 1,000."
        assert pointer(error) == "/records/1"

    @pytest.mark.parametrize("fmt", [Format.TEXT_LINES, Format.TEXT_DOCUMENTS])
    def test_plain_text_has_only_the_text_field(self, fmt):
        with pytest.raises(Invalid) as caught:
            iter_records(io.BytesIO(b"a\n"), fmt, False, FieldSpec(("body",)), **LIMITS)
        assert caught.value.code == "custody.invalid_fields"


class TestParquet:
    def test_reads_row_groups_with_locations_and_json_metadata(self):
        table = pa.table(
            {
                "text": ["a", "b", "c"],
                "id": [1, 2, 3],
                "at": [dt.datetime(2024, 1, 2, 3, 4, 5)] * 3,
                "ignored": [b"x", b"y", b"z"],
            }
        )
        data = parquet_bytes(table, row_group_size=2)
        records = parse(data, Format.PARQUET, FieldSpec(("text",), ("id", "at")))
        assert [record.location for record in records] == [
            "row group 0 row 0",
            "row group 0 row 1",
            "row group 1 row 0",
        ]
        assert records[2] == ParsedRecord(
            2, "row group 1 row 0", {"text": "c"}, {"id": 3, "at": "2024-01-02T03:04:05"}
        )
        json.dumps([record.metadata for record in records])

    def test_a_missing_column_is_named_with_the_columns_found(self):
        data = parquet_bytes(pa.table({"body": ["a"], "id": [1]}))
        error = failure(ParseFailure, data, Format.PARQUET)
        assert error.code == "custody.missing_column"
        assert error.detail == 'The Parquet file has no column "text"; the columns found are: "body", "id".'
        assert pointer(error) == "/file"

    def test_a_text_column_must_hold_strings(self):
        error = failure(ParseFailure, parquet_bytes(pa.table({"text": [1, 2]})), Format.PARQUET)
        assert error.code == "custody.not_text"
        assert "type int64" in error.detail

    def test_a_null_text_names_the_row(self):
        data = parquet_bytes(pa.table({"text": ["a", "b", None]}), row_group_size=2)
        error = failure(ParseFailure, data, Format.PARQUET)
        assert error.detail == 'row group 1 row 0: the text field "text" is null.'
        assert pointer(error) == "/records/2/text"

    def test_bytes_that_are_not_parquet_are_refused(self):
        error = failure(ParseFailure, b"PAR1 but nothing else", Format.PARQUET)
        assert error.code == "custody.invalid_parquet"

    def test_too_many_rows_are_refused_before_reading_them(self):
        data = parquet_bytes(pa.table({"text": ["a"] * 11}))
        assert failure(TooLarge, data, Format.PARQUET, max_records=10).code == "custody.too_many_records"

    def test_gzipped_parquet_is_unsupported(self):
        with pytest.raises(UnsupportedFormat):
            iter_records(io.BytesIO(b""), Format.PARQUET, True, TEXT, **LIMITS)


class TestBadBytes:
    def test_invalid_utf8_names_line_and_byte_offset(self):
        data = b'{"text": "ok"}\n\n{"text": "caf\xe9"}\n'
        error = failure(ParseFailure, data, Format.JSONL)
        assert error.code == "custody.invalid_utf8"
        assert error.detail == (
            "line 3: not valid UTF-8 at byte 14 of the line (byte offset 29 in the file): "
            "invalid continuation byte."
        )
        assert pointer(error) == "/records/1"

    def test_invalid_utf8_in_a_csv_header_points_at_the_file(self):
        error = failure(ParseFailure, b"te\xffxt\nhello\n", Format.CSV, gzipped=True)
        assert error.detail.startswith(
            "line 1: not valid UTF-8 at byte 3 of the line (byte offset 2 in the file)"
        )
        assert pointer(error) == "/file"

    def test_an_encoded_surrogate_is_invalid_utf8(self):
        assert failure(ParseFailure, b"ok\n\xed\xa0\x80\n", Format.TEXT_LINES).code == "custody.invalid_utf8"

    @pytest.mark.parametrize(
        ("fmt", "data"),
        [
            (Format.JSONL, b""),
            (Format.JSONL, b"\n  \r\n"),
            (Format.CSV, b""),
            (Format.TEXT_LINES, b"\xef\xbb\xbf\n"),
            (Format.TEXT_DOCUMENTS, b"\n\n"),
        ],
    )
    def test_an_empty_file_is_refused(self, fmt, data):
        error = failure(ParseFailure, data, fmt)
        assert error.code == "custody.empty_file"
        assert pointer(error) == "/file"

    def test_an_over_size_line_names_the_record(self):
        data = b'{"text": "a"}\n{"text": "' + b"x" * 1000 + b'"}\n'
        error = failure(TooLarge, data, Format.JSONL)
        assert error.code == "custody.record_too_large"
        assert error.detail == "Line 2 has 1,012 characters; a record may have at most 1,000."
        assert pointer(error) == "/records/1"

    def test_an_endless_line_is_refused_without_reading_the_stream(self):
        stream = CountingStream(b"x")
        with pytest.raises(TooLarge) as caught:
            next(iter_records(stream, Format.TEXT_LINES, False, TEXT, **LIMITS))
        assert caught.value.code == "custody.record_too_large"
        assert caught.value.detail == "Line 1 is longer than a record may be (1,000 characters)."
        assert stream.read_bytes <= 2 * READ_CHUNK

    def test_too_many_records(self):
        assert len(parse(b"a\nb\nc\n", Format.TEXT_LINES, max_records=3)) == 3
        error = failure(TooLarge, b"a\nb\nc\nd\n", Format.TEXT_LINES, max_records=3)
        assert error.code == "custody.too_many_records"
        assert error.detail == "The file has more than 3 records, the limit."

    def test_a_file_over_the_byte_limit_is_refused_while_streaming(self):
        stream = CountingStream(b"\n")
        with pytest.raises(TooLarge) as caught:
            list(iter_records(stream, Format.TEXT_LINES, False, TEXT, **{**LIMITS, "max_bytes": 200_000}))
        assert caught.value.code == "custody.too_large"
        assert "200,000 bytes" in caught.value.detail
        assert stream.read_bytes <= 200_000 + READ_CHUNK


@pytest.fixture(scope="module")
def zeros_bomb() -> bytes:
    return gzip.compress(bytes(50 * 1024**2), compresslevel=9)


class TestGzip:
    def test_a_decompression_bomb_is_stopped(self, zeros_bomb):
        assert len(zeros_bomb) < 100_000
        # Lines may be long here, so that the bomb check, not the line check, fires.
        with pytest.raises(TooLarge) as caught:
            list(
                iter_records(
                    io.BytesIO(zeros_bomb),
                    Format.TEXT_LINES,
                    True,
                    TEXT,
                    **{**LIMITS, "max_bytes": 10 * 1024**3, "max_record_chars": 10 * 1024**2},
                )
            )
        error = caught.value
        assert error.code == "custody.decompression_bomb"
        assert "200x" in error.detail

    def test_a_bomb_of_valid_records_is_stopped_too(self):
        bomb = gzip.compress((b'{"text": "' + b"a" * 500 + b'"}\n') * 10_000, compresslevel=9)
        with pytest.raises(TooLarge) as caught:
            list(iter_records(io.BytesIO(bomb), Format.JSONL, True, TEXT, **{**LIMITS, "max_records": 10**7}))
        assert caught.value.code == "custody.decompression_bomb"

    def test_small_repetitive_files_are_not_bombs(self):
        records = parse(b'{"text": "same"}\n' * 900, Format.JSONL, gzipped=True)
        assert len(records) == 900

    def test_inflating_past_the_byte_limit_is_too_large(self):
        data = b"".join(b"%d %x\n" % (n, n * 7919) for n in range(20_000))
        error = failure(TooLarge, data, Format.TEXT_LINES, gzipped=True, max_bytes=100_000, max_records=10**6)
        assert error.code == "custody.too_large"
        assert error.detail == "Decompressed, the file is larger than the limit of 100,000 bytes."

    @pytest.mark.parametrize("flag", [True, False])
    def test_the_content_decides_whether_to_inflate(self, flag):
        for data in (gzip.compress(b"zipped\n"), b"plain\n"):
            records = list(iter_records(io.BytesIO(data), Format.TEXT_LINES, flag, TEXT, **LIMITS))
            assert [record.text["text"] for record in records] == ["zipped" if data[0] == 0x1F else "plain"]

    def test_a_truncated_gzip_is_refused(self):
        data = gzip.compress(b'{"text": "a"}\n' * 10)[:-6]
        with pytest.raises(ParseFailure) as caught:
            list(iter_records(io.BytesIO(data), Format.JSONL, True, TEXT, **LIMITS))
        assert caught.value.code == "custody.truncated_gzip"
        assert pointer(caught.value) == "/file"

    @pytest.mark.parametrize(
        "data",
        [
            b"\x1f\x8b but not really gzip\n",
            gzip.compress(b"a\n")[:-8] + b"\0\0\0\0" + gzip.compress(b"a\n")[-4:],  # wrong CRC
            gzip.compress(b"a\n") + b"trailing garbage",
        ],
    )
    def test_corrupt_gzip_is_refused(self, data):
        with pytest.raises(ParseFailure) as caught:
            list(iter_records(io.BytesIO(data), Format.TEXT_LINES, True, TEXT, **LIMITS))
        assert caught.value.code == "custody.corrupt_gzip"


class TestDetectFormat:
    @pytest.mark.parametrize(
        ("name", "head", "expected"),
        [
            ("corpus.jsonl", b"{", (Format.JSONL, False)),
            ("corpus.NDJSON", b"{", (Format.JSONL, False)),
            ("corpus.jsonl.gz", b"\x1f\x8b\x08", (Format.JSONL, True)),
            ("table.csv", b"text", (Format.CSV, False)),
            ("table.tsv.GZ", b"\x1f\x8b\x08", (Format.CSV, True)),
            ("notes.txt", b"hello", (Format.TEXT_LINES, False)),
            ("rows.parquet", b"PAR1\x15", (Format.PARQUET, False)),
            ("export", b"PAR1\x15", (Format.PARQUET, False)),
            ("renamed.csv", b"\x1f\x8b\x08", (Format.CSV, True)),
            ("empty.jsonl.gz", b"", (Format.JSONL, True)),
        ],
    )
    def test_from_extension_and_magic_bytes(self, name, head, expected):
        assert detect_format(name, None, head) == expected

    def test_a_declared_format_wins_over_the_extension(self):
        assert detect_format("essays.txt", "text_documents", b"Once") == (Format.TEXT_DOCUMENTS, False)
        assert detect_format("data.bin", " CSV ", b"\x1f\x8b") == (Format.CSV, True)

    @pytest.mark.parametrize(
        ("name", "declared", "head", "words"),
        [
            ("data.xlsx", None, b"PK\x03\x04", "Cannot tell the format of 'data.xlsx'"),
            ("data", None, b"{", "Cannot tell the format of 'data'"),
            ("data.json", "xml", b"<", "Unknown format 'xml'"),
            ("rows.parquet.gz", None, b"\x1f\x8b", "without gzip"),
            ("rows.parquet", None, b"text", "does not start as a Parquet file"),
            ("rows.jsonl", None, b"PAR1", "its content is Parquet"),
        ],
    )
    def test_refuses_what_it_cannot_read_with_415(self, name, declared, head, words):
        with pytest.raises(UnsupportedFormat) as caught:
            detect_format(name, declared, head)
        assert caught.value.code == "custody.unsupported_format"
        assert words in caught.value.detail
        assert caught.value.errors[0]["pointer"] in ("/format", "/file")

    def test_a_hostile_name_is_sanitized_in_the_detail(self):
        with pytest.raises(UnsupportedFormat) as caught:
            detect_format("../../etc/\x1b[31mpasswd\x00", None, b"root:x")
        assert "'[31mpasswd'" in caught.value.detail
        assert "\x1b" not in caught.value.detail and ".." not in caught.value.detail


class TestSanitizeFilename:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("corpus.jsonl", "corpus.jsonl"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\ann\\data.csv", "data.csv"),
            ("a\x00b\r\n.csv", "ab.csv"),
            ("invoice\u202egpj.exe", "invoicegpj.exe"),
            ("...", "unnamed"),
            ("", "unnamed"),
            ("dir/", "unnamed"),
            (" .hidden. ", "hidden"),
            ('<script>"x".txt', "_script__x_.txt"),
            ("many    spaces\there.txt", "many spaceshere.txt"),
        ],
    )
    def test_hostile_names_become_safe_display_names(self, name, expected):
        assert sanitize_filename(name) == expected

    def test_long_names_are_shortened_keeping_the_extension(self):
        shown = sanitize_filename("x" * 10_000 + ".jsonl.gz")
        assert len(shown) <= 120
        assert shown.endswith("….jsonl.gz")
