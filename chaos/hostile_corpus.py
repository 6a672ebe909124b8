"""A seeded corpus of hostile uploads: every file in it must be refused with a clear reason.

``corpus(profile, seed)`` returns the same files for the same arguments, byte
for byte: ``"proof"`` gives at least 200, ``"quick"`` a representative 40 (one
or more of every class). Each file says where the custody upload API catches
it (``stage``) and which problem statuses and codes are acceptable; the
limits it was built against are ``LIMITS`` (tests apply them as settings, so
an over-size file is a few megabytes, not gigabytes).

Stages (where each class is caught, with the default settings):

- ``start``: ``POST /versions/{id}/contributions`` — a file name with NUL, a
  format that cannot be told from the name, a declared size over the limit,
  gzipped Parquet by name;
- ``part``: ``PUT /contributions/{id}/parts/{n}`` — a part over
  ``UPLOAD_PART_MAX_BYTES``, parts adding up to more than ``UPLOAD_MAX_BYTES``;
- ``complete``: ``POST /contributions/{id}/complete`` — everything about the
  content (encoding, shape, bombs, truncation, Parquet schemas), parsed in the
  request for files up to ``SYNC_VALIDATE_MAX_BYTES``; above that size the
  same checks run in the ingest worker and end as a failed contribution with
  the same code and reason (tests/proving/test_hostile_uploads.py runs the
  content classes through both paths).

Not Django: run ``python -m chaos.hostile_corpus --profile proof --out DIR``
to write the files and a manifest for other tools.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
LIMITS: dict[str, int] = {
    "UPLOAD_MAX_BYTES": 2 * MiB,
    "UPLOAD_PART_MAX_BYTES": 1 * MiB,
    "RECORD_MAX_CHARS": 10_000,
    "UPLOAD_MAX_RECORDS": 5_000,
    "GZIP_MAX_RATIO": 200,
}
DEFAULT_SEED = 20261128
QUICK_SIZE = 40
PROOF_MIN = 200

STAGES = ("start", "part", "complete")
TOO_LARGE = 413
INVALID = 422
UNSUPPORTED = 415


@dataclass(frozen=True)
class HostileFile:
    """One hostile upload: what to send, and how it must be refused."""

    name: str  # unique, stable: "<class>-<variant>"
    kind: str  # the class, e.g. "gzip_bomb"
    filename: str
    parts: tuple[bytes, ...]  # PUT as parts 1..n; () sends none
    statuses: tuple[int, ...]
    codes: tuple[str, ...]  # acceptable problem codes
    stage: str
    start: dict[str, Any] = field(default_factory=dict)  # extra fields for the start request

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "filename": self.filename,
            "size": self.size,
            "parts": len(self.parts),
            "statuses": list(self.statuses),
            "codes": list(self.codes),
            "stage": self.stage,
            "start": self.start,
        }


def _file(
    name: str,
    kind: str,
    filename: str,
    data: bytes | tuple[bytes, ...],
    statuses: int | tuple[int, ...],
    codes: str | tuple[str, ...],
    stage: str = "complete",
    **start: Any,
) -> HostileFile:
    parts = data if isinstance(data, tuple) else ((data,) if data else ())
    return HostileFile(
        name=f"{kind}-{name}",
        kind=kind,
        filename=filename,
        parts=parts,
        statuses=statuses if isinstance(statuses, tuple) else (statuses,),
        codes=codes if isinstance(codes, tuple) else (codes,),
        stage=stage,
        start=start,
    )


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _sentences(rng: random.Random, n: int) -> list[str]:
    words = ("report", "ledger", "harbour", "invoice", "weather", "river", "quarterly", "late", "north")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _stream_gzip(pattern: bytes, total: int, level: int = 9) -> bytes:
    """Gzip ``total`` bytes of ``pattern`` repeated, without holding them in memory."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0) as handle:
        block = pattern * max(1, (256 * 1024) // max(1, len(pattern)))
        written = 0
        while written < total:
            chunk = block[: total - written]
            handle.write(chunk)
            written += len(chunk)
    return out.getvalue()


# --- classes --------------------------------------------------------------------------
# Each generator yields files for the proof profile; the first ones of each class
# are the quick profile's picks, so order matters (most representative first).


def oversize(rng: random.Random) -> Iterator[HostileFile]:
    part_max, total_max = LIMITS["UPLOAD_PART_MAX_BYTES"], LIMITS["UPLOAD_MAX_BYTES"]
    line = b'{"text": "an ordinary line of text"}\n'
    big_part = (line * (part_max // len(line) + 2))[: part_max + 1]
    yield _file(
        "one-part-over-limit", "oversize", "big.jsonl", big_part, TOO_LARGE, "common.part_too_large", "part"
    )
    half = (line * (part_max // len(line)))[:part_max]
    for n, name in ((3, "parts-add-up"), (4, "parts-add-up-more")):
        yield _file(
            name, "oversize", "many.jsonl", (half,) * n, TOO_LARGE, "custody.upload_too_large", "part"
        )
    for declared in (total_max + 1, 2**40, 2**62):
        yield _file(
            f"declared-{declared}",
            "oversize",
            "declared.jsonl",
            line,
            TOO_LARGE,
            "custody.upload_too_large",
            "start",
            size=declared,
        )
    many = LIMITS["UPLOAD_MAX_RECORDS"] + 1
    yield _file(
        "too-many-lines", "oversize", "lines.txt", b"x\n" * many, TOO_LARGE, "custody.too_many_records"
    )
    yield _file(
        "too-many-jsonl",
        "oversize",
        "rows.jsonl",
        b'{"text":"a"}\n' * many,
        TOO_LARGE,
        "custody.too_many_records",
    )
    yield _file(
        "too-many-csv",
        "oversize",
        "rows.csv",
        b"text\n" + b"a\n" * many,
        TOO_LARGE,
        "custody.too_many_records",
    )
    yield _file(
        "too-many-documents",
        "oversize",
        "docs.txt",
        b"d\n\n" * many,
        TOO_LARGE,
        "custody.too_many_records",
        format="text_documents",
    )
    for k in range(6):
        extra = rng.randint(1, 4096)
        data = (line * (part_max // len(line) + 2))[: part_max + extra]
        yield _file(
            f"part-over-by-{extra}", "oversize", f"p{k}.csv", data, TOO_LARGE, "common.part_too_large", "part"
        )


# A bomb may trip another limit first (a line too long, too many records): refused all the same.
BOMB_CODES = (
    "custody.decompression_bomb",
    "custody.too_large",
    "custody.record_too_large",
    "custody.too_many_records",
)


def gzip_bombs(rng: random.Random) -> Iterator[HostileFile]:
    total = 64 * MiB
    # Lines well under the record limit, so the inflation ratio is what trips.
    long_line = b"a" * (LIMITS["RECORD_MAX_CHARS"] // 2) + b"\n"
    only_bomb = "custody.decompression_bomb"
    yield _file(
        "long-lines", "gzip_bomb", "long.txt.gz", _stream_gzip(long_line, total), TOO_LARGE, only_bomb
    )
    yield _file("zeros", "gzip_bomb", "zeros.jsonl.gz", _stream_gzip(b"\0", total), TOO_LARGE, BOMB_CODES)
    yield _file(
        "csv-long-rows",
        "gzip_bomb",
        "rows.csv.gz",
        gzip.compress(b"text\n", mtime=0) + _stream_gzip(long_line, total),
        TOO_LARGE,
        only_bomb,
    )
    yield _file(
        "valid-lines",
        "gzip_bomb",
        "lines.jsonl.gz",
        _stream_gzip(b'{"text": "a"}\n', total),
        TOO_LARGE,
        BOMB_CODES,
    )
    yield _file(
        "jsonl-long-records",
        "gzip_bomb",
        "long.jsonl.gz",
        _stream_gzip(b'{"text": "' + long_line[:-1] + b'"}\n', total),
        TOO_LARGE,
        only_bomb,
    )
    member = _stream_gzip(long_line, 4 * MiB)
    yield _file("many-members", "gzip_bomb", "members.txt.gz", member * 8, TOO_LARGE, only_bomb)
    prefix = gzip.compress(_jsonl([{"text": s} for s in _sentences(rng, 50)]), mtime=0)
    yield _file(
        "after-valid-member",
        "gzip_bomb",
        "tail.jsonl.gz",
        prefix + _stream_gzip(b" ", total),
        TOO_LARGE,
        BOMB_CODES,
    )
    yield _file(
        "no-extension-hint",
        "gzip_bomb",
        "quiet.txt",
        _stream_gzip(long_line, total),
        TOO_LARGE,
        only_bomb,
    )
    for k in range(14):
        pattern = bytes(rng.choice(b"abcdefgh \n") for _ in range(rng.randint(1, 8))) or b"a"
        level = rng.choice((1, 6, 9))
        fmt = rng.choice(("txt", "jsonl", "csv"))
        data = _stream_gzip(pattern, rng.choice((16, 32, 64)) * MiB, level)
        yield _file(
            f"pattern-{k}", "gzip_bomb", f"b{k}.{fmt}.gz", data, (TOO_LARGE, INVALID), BOMB_CODES + _CONTENT
        )


_CONTENT = (
    "custody.invalid_utf8",
    "custody.invalid_json",
    "custody.missing_column",
    "custody.missing_field",
    "custody.record_too_large",
    "custody.not_an_object",
    "custody.empty_file",
)


def nested_archives(rng: random.Random) -> Iterator[HostileFile]:
    inner = _stream_gzip(b'{"text": "a"}\n', 32 * MiB)
    yield _file(
        "gzip-in-gzip",
        "nested_archive",
        "nested.jsonl.gz",
        gzip.compress(inner, mtime=0),
        (INVALID, TOO_LARGE),
        ("custody.invalid_utf8", *BOMB_CODES),
    )
    layered = b'{"text": "hello"}\n'
    for depth in range(2, 6):
        layered = gzip.compress(layered, mtime=0)
        yield _file(
            f"gzip-depth-{depth}",
            "nested_archive",
            "deep.jsonl.gz",
            gzip.compress(layered, mtime=0),
            INVALID,
            "custody.invalid_utf8",
        )
    yield _file("zip-as-jsonl", "nested_archive", "data.jsonl", _zip(rng, deflate=True), INVALID, _CONTENT)
    yield _file("zip-as-csv", "nested_archive", "data.csv", _zip(rng, deflate=True), INVALID, _CONTENT)
    yield _file("zip-as-txt", "nested_archive", "data.txt", _zip(rng, deflate=True), INVALID, _CONTENT)
    yield _file(
        "zip-by-name",
        "nested_archive",
        "data.zip",
        _zip(rng, deflate=True),
        UNSUPPORTED,
        "custody.unsupported_format",
        "start",
    )
    yield _file(
        "tar-gz-by-name",
        "nested_archive",
        "data.tar.gz",
        gzip.compress(_tar(), mtime=0),
        UNSUPPORTED,
        "custody.unsupported_format",
        "start",
    )
    yield _file(
        "tar-as-jsonl-gz",
        "nested_archive",
        "data.jsonl.gz",
        gzip.compress(_tar(), mtime=0),
        INVALID,
        _CONTENT,
    )
    yield _file(
        "zip-stored-as-jsonl", "nested_archive", "stored.jsonl", _zip(rng, deflate=False), INVALID, _CONTENT
    )
    yield _file(
        "zip-in-gzip",
        "nested_archive",
        "z.csv.gz",
        gzip.compress(_zip(rng, deflate=True), mtime=0),
        INVALID,
        _CONTENT,
    )


def _zip(rng: random.Random, *, deflate: bool) -> bytes:
    import zipfile

    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for k in range(3):
            info = zipfile.ZipInfo(f"../../evil-{k}.jsonl", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, _jsonl([{"text": s} for s in _sentences(rng, 20)]) + b"\xff" * (k + 1))
    return out.getvalue()


def _tar() -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        body = b'{"text": "inside a tar"}\n'
        info = tarfile.TarInfo("../../../etc/cron.d/evil.jsonl")
        info.size, info.mtime = len(body), 0
        archive.addfile(info, io.BytesIO(body))
    return out.getvalue()


INVALID_SEQUENCES = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",  # overlong
    b"\xed\xa0\x80",  # UTF-8-encoded surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\x80",  # lone continuation
    b"\xc3",  # truncated two-byte sequence
    b"caf\xe9",  # Latin-1
    b"\xf8\x88\x80\x80\x80",  # five-byte form
)


def invalid_utf8(rng: random.Random) -> Iterator[HostileFile]:
    templates: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
        ("jsonl", lambda bad: b'{"text": "ok"}\n{"text": "' + bad + b'"}\n'),
        ("csv", lambda bad: b"text,label\nfine,a\n" + bad + b",b\n"),
        ("txt", lambda bad: b"fine line\n" + bad + b" trailing\n"),
    )
    for k, bad in enumerate(INVALID_SEQUENCES):
        for ext, build in templates:
            if k >= 4 and ext != templates[k % 3][0]:
                continue
            yield _file(
                f"{ext}-{k}", "invalid_utf8", f"bad{k}.{ext}", build(bad), INVALID, "custody.invalid_utf8"
            )
    yield _file(
        "at-eof", "invalid_utf8", "eof.txt", b"fine\nends in \xe2\x82", INVALID, "custody.invalid_utf8"
    )
    utf16 = "text\nhello\n".encode("utf-16")
    yield _file("utf16-bom", "invalid_utf8", "u16.csv", utf16, INVALID, ("custody.invalid_utf8",))
    yield _file(
        "gzipped",
        "invalid_utf8",
        "gz.jsonl.gz",
        gzip.compress(b'{"text": "\xff"}\n', mtime=0),
        INVALID,
        "custody.invalid_utf8",
    )
    for k in range(6):
        good = "\n".join(_sentences(rng, rng.randint(5, 50))).encode()
        cut = rng.randint(0, len(good))
        data = good[:cut] + rng.choice(INVALID_SEQUENCES) + good[cut:] + b"\n"
        yield _file(f"random-{k}", "invalid_utf8", f"r{k}.txt", data, INVALID, "custody.invalid_utf8")


def nul_bytes(rng: random.Random) -> Iterator[HostileFile]:
    yield _file(
        "jsonl-raw-in-string",
        "nul_bytes",
        "n.jsonl",
        b'{"text": "a\x00b"}\n',
        INVALID,
        "custody.invalid_json",
    )
    yield _file(
        "jsonl-between", "nul_bytes", "n2.jsonl", b'{"text": "a"}\x00\n', INVALID, "custody.invalid_json"
    )
    yield _file("jsonl-only-nuls", "nul_bytes", "n3.jsonl", b"\x00" * 4096, INVALID, "custody.invalid_json")
    yield _file(
        "utf16-without-bom-jsonl",
        "nul_bytes",
        "n4.jsonl",
        '{"text": "hi"}\n'.encode("utf-16-le"),
        INVALID,
        "custody.invalid_json",
    )
    for k in range(4):
        at = rng.randint(1, 30)
        data = b'{"text": "' + b"y" * at + b'\x00"}\n'
        yield _file(f"jsonl-{k}", "nul_bytes", f"nul{k}.jsonl", data, INVALID, "custody.invalid_json")


def enormous_lines(rng: random.Random) -> Iterator[HostileFile]:
    limit = LIMITS["RECORD_MAX_CHARS"]
    code = "custody.record_too_large"
    yield _file("txt", "enormous_line", "long.txt", b"a" * (limit * 20) + b"\n", TOO_LARGE, code)
    yield _file(
        "jsonl", "enormous_line", "long.jsonl", b'{"text": "' + b"b" * (limit * 20) + b'"}\n', TOO_LARGE, code
    )
    yield _file("csv", "enormous_line", "long.csv", b"text\n" + b"c" * (limit * 20) + b"\n", TOO_LARGE, code)
    yield _file("no-newline-at-all", "enormous_line", "one.txt", b"d" * (limit * 90), TOO_LARGE, code)
    yield _file(
        "csv-quoted-multiline",
        "enormous_line",
        "q.csv",
        b'text\n"' + b"e\n" * limit + b'"\n',
        TOO_LARGE,
        code,
    )
    yield _file(
        "document", "enormous_line", "doc.txt", b"f\n" * limit, TOO_LARGE, code, format="text_documents"
    )
    yield _file(
        "gzipped",
        "enormous_line",
        "long.txt.gz",
        gzip.compress(b"g" * (limit * 50), mtime=0),
        TOO_LARGE,
        code,
    )
    yield _file(
        "metadata",
        "enormous_line",
        "meta.jsonl",
        _jsonl([{"text": "short", "note": "h" * (limit * 2)}]),
        TOO_LARGE,
        code,
        metadata_fields=["note"],
    )
    multibyte = ("語" * (limit + 1)).encode()
    yield _file("multibyte", "enormous_line", "wide.txt", multibyte + b"\n", TOO_LARGE, code)
    for k in range(3):
        n = limit + rng.randint(1, limit)
        yield _file(f"random-{k}", "enormous_line", f"r{k}.txt", b"ok\n" + b"z" * n + b"\n", TOO_LARGE, code)


def _content_sample(rng: random.Random) -> tuple[str, bytes, tuple[int, ...], tuple[str, ...]]:
    """A small invalid body to pair with a hostile name, so the upload as a whole is refused."""
    choices = (
        ("jsonl", b'{"text": 1}\n', (INVALID,), ("custody.not_text",)),
        ("jsonl", b"[1, 2]\n", (INVALID,), ("custody.not_an_object",)),
        ("csv", b"title\nx\n", (INVALID,), ("custody.missing_column",)),
        ("txt", b"\xff\n", (INVALID,), ("custody.invalid_utf8",)),
    )
    return rng.choice(choices)


HOSTILE_NAMES = (
    "../../../../etc/passwd{ext}",
    "..\\..\\windows\\system32\\{stem}{ext}",
    "/absolute/path/{stem}{ext}",
    "{stem}\x1b[31mred\x1b[0m{ext}",
    "{stem}\r\nSet-Cookie: x=1{ext}",
    "{stem}\u202egnp{ext}",  # right-to-left override
    "{stem}\u0085\u2028{ext}",
    "..{stem}{ext}",
    "CON{ext}",
    "{stem}\t\x07\x08{ext}",
    "  {stem}  {ext}",
    "{stem}" + "x" * 900 + "{ext}",
    '<script>alert(1)</script>{stem}"{ext}',
    "{stem}%2e%2e%2f{ext}",
)


NUL_CODE = "null_characters_not_allowed"  # DRF's field error code


def hostile_names(rng: random.Random) -> Iterator[HostileFile]:
    yield _file("nul-in-name", "hostile_name", "a\x00.jsonl", b'{"text": "x"}\n', INVALID, NUL_CODE, "start")
    yield _file("nul-only", "hostile_name", "\x00", b'{"text": "x"}\n', INVALID, NUL_CODE, "start")
    yield _file(
        "traversal-no-extension",
        "hostile_name",
        "../../etc/passwd",
        b"root:x:0:0\n",
        UNSUPPORTED,
        "custody.unsupported_format",
        "start",
    )
    yield _file(
        "control-only",
        "hostile_name",
        "\x1b\x07\x08",
        b"x\n",
        UNSUPPORTED,
        "custody.unsupported_format",
        "start",
    )
    yield _file("empty-name", "hostile_name", "", b"x\n", INVALID, "blank", "start")
    for k, pattern in enumerate(HOSTILE_NAMES):
        ext, data, statuses, codes = _content_sample(rng)
        yield _file(
            f"pattern-{k}", "hostile_name", pattern.format(stem=f"f{k}", ext="." + ext), data, statuses, codes
        )


WRONG_MAGIC = (
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    ("elf", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x03\x00>\x00"),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
    ("zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00"),
    ("sqlite", b"SQLite format 3\x00\x10\x00\x01\x01"),
    ("bzip2", b"BZh91AY&SY\x8a\x9c"),
    ("xz", b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4F"),
    ("zstd", b"(\xb5/\xfd\x04\x58\x45\x00"),
)


def wrong_magic(rng: random.Random) -> Iterator[HostileFile]:
    for kind, head in WRONG_MAGIC:
        ext = rng.choice(("jsonl", "csv", "txt"))
        body = head + bytes(rng.randrange(256) for _ in range(2048)) + b"\xff\n"
        yield _file(f"{kind}-as-{ext}", "wrong_magic", f"{kind}.{ext}", body, INVALID, _CONTENT)
    for kind, head in WRONG_MAGIC[:5]:
        body = head + bytes(rng.randrange(256) for _ in range(512))
        yield _file(
            f"{kind}-as-parquet", "wrong_magic", f"{kind}.parquet", body, INVALID, "custody.invalid_parquet"
        )
    yield _file(
        "parquet-as-jsonl",
        "wrong_magic",
        "p.jsonl",
        _parquet_bytes(rng, text_rows=5),
        (INVALID, UNSUPPORTED),
        ("custody.invalid_utf8", "custody.invalid_json", "custody.unsupported_format"),
    )
    yield _file(
        "gzip-declared-parquet",
        "wrong_magic",
        "x.parquet.gz",
        gzip.compress(b"PAR1", mtime=0),
        UNSUPPORTED,
        "custody.unsupported_format",
        "start",
    )
    yield _file(
        "gzip-magic-only",
        "wrong_magic",
        "m.jsonl",
        b"\x1f\x8b",
        INVALID,
        ("custody.truncated_gzip", "custody.corrupt_gzip"),
    )
    yield _file(
        "declared-unknown-format",
        "wrong_magic",
        "d.jsonl",
        b'{"text":"a"}\n',
        (UNSUPPORTED, INVALID),
        ("custody.unsupported_format", "invalid_choice"),
        "start",
        format="xlsx",
    )


def truncated_gzip(rng: random.Random) -> Iterator[HostileFile]:
    whole = gzip.compress(_jsonl([{"text": s} for s in _sentences(rng, 400)]), mtime=0)
    codes = ("custody.truncated_gzip", "custody.corrupt_gzip")
    for cut in (3, 10, 11, 20, len(whole) // 2, len(whole) - 8, len(whole) - 1):
        yield _file(f"cut-at-{cut}", "truncated_gzip", "t.jsonl.gz", whole[:cut], INVALID, codes)
    flipped = bytearray(whole)
    flipped[-6] ^= 0xFF  # CRC32
    yield _file("bad-crc", "truncated_gzip", "crc.jsonl.gz", bytes(flipped), INVALID, codes)
    wrong_size = whole[:-4] + struct.pack("<I", 12345)
    yield _file("bad-isize", "truncated_gzip", "isize.jsonl.gz", wrong_size, INVALID, codes)
    deflate = bytearray(whole)
    deflate[12] ^= 0x55
    yield _file("corrupt-deflate", "truncated_gzip", "body.jsonl.gz", bytes(deflate), INVALID, codes)
    second = whole + whole[: len(whole) // 3]
    yield _file("second-member-truncated", "truncated_gzip", "two.jsonl.gz", second, INVALID, codes)
    raw_deflate = zlib.compress(b'{"text": "a"}\n')
    yield _file("zlib-not-gzip", "truncated_gzip", "z.jsonl.gz", raw_deflate, INVALID, _CONTENT)
    for k in range(4):
        cut = rng.randint(11, len(whole) - 2)
        yield _file(f"random-cut-{k}", "truncated_gzip", f"r{k}.jsonl.gz", whole[:cut], INVALID, codes)


def empty_files(rng: random.Random) -> Iterator[HostileFile]:
    code = "custody.empty_file"
    yield _file("no-parts", "empty", "e.jsonl", b"", INVALID, code)
    yield _file("blank-lines", "empty", "b.jsonl", b"\n\n\r\n\n", INVALID, code)
    yield _file("whitespace", "empty", "w.txt", b"   \n\t\n  \n", INVALID, code)
    yield _file("bom-only", "empty", "bom.txt", b"\xef\xbb\xbf", INVALID, code)
    yield _file("csv-header-only", "empty", "h.csv", b"text,label\n", INVALID, code)
    yield _file("gzip-of-nothing", "empty", "g.jsonl.gz", gzip.compress(b"", mtime=0), INVALID, code)
    yield _file("documents-blank", "empty", "d.txt", b"\n\n\n", INVALID, code, format="text_documents")
    yield _file("parquet-zero-rows", "empty", "z.parquet", _parquet_bytes(rng, text_rows=0), INVALID, code)
    yield _file(
        "gzip-padding", "empty", "pad.txt.gz", gzip.compress(b"\n", mtime=0) + b"\0" * 64, INVALID, code
    )


def csv_shapes(rng: random.Random) -> Iterator[HostileFile]:
    yield _file(
        "missing-column", "csv_shape", "m.csv", b"title,body\na,b\n", INVALID, "custody.missing_column"
    )
    yield _file(
        "ragged-long",
        "csv_shape",
        "r.csv",
        b"text,label\na,b\nc,d,e,f\n",
        INVALID,
        "custody.ragged_row",
        metadata_fields=["label"],
    )
    yield _file(
        "ragged-short",
        "csv_shape",
        "s.csv",
        b"text,label\na,b\nc\n",
        INVALID,
        "custody.ragged_row",
        metadata_fields=["label"],
    )
    yield _file(
        "unterminated-quote",
        "csv_shape",
        "u.csv",
        b'text\n"never closed\nmore\n',
        INVALID,
        ("custody.invalid_csv", "custody.ragged_row"),
    )
    yield _file(
        "duplicate-column",
        "csv_shape",
        "d.csv",
        b"text,text\na,b\n",
        INVALID,
        ("custody.duplicate_column", "custody.missing_column", "custody.invalid_csv"),
    )
    yield _file(
        "missing-metadata-column",
        "csv_shape",
        "mm.csv",
        b"text\na\n",
        INVALID,
        "custody.missing_column",
        metadata_fields=["label"],
    )
    yield _file("no-header-newline", "csv_shape", "n.csv", b"body", INVALID, ("custody.missing_column",))
    yield _file(
        "pipe-delimited",
        "csv_shape",
        "p.csv",
        b"text|label\na|b\n",
        INVALID,
        "custody.missing_column",
        metadata_fields=["label"],
    )
    yield _file(
        "quote-in-unquoted",
        "csv_shape",
        "q.csv",
        b'text,label\na"b,"c\n',
        INVALID,
        ("custody.invalid_csv", "custody.ragged_row"),
        metadata_fields=["label"],
    )
    for k in range(5):
        width = rng.randint(3, 12)
        header = ",".join(f"c{i}" for i in range(width)).encode()
        row = ",".join("v" for _ in range(width + rng.choice((-2, -1, 1, 2)))).encode()
        yield _file(
            f"random-ragged-{k}",
            "csv_shape",
            f"rr{k}.csv",
            header + b"\n" + row + b"\n",
            INVALID,
            "custody.ragged_row",
            text_fields=["c0"],
            metadata_fields=["c1"],
        )


def jsonl_shapes(rng: random.Random) -> Iterator[HostileFile]:
    cases: tuple[tuple[str, bytes, str], ...] = (
        ("array", b"[1, 2, 3]\n", "custody.not_an_object"),
        ("string", b'"just text"\n', "custody.not_an_object"),
        ("number", b"42\n", "custody.not_an_object"),
        ("null", b"null\n", "custody.not_an_object"),
        ("text-number", b'{"text": 7}\n', "custody.not_text"),
        ("text-null", b'{"text": null}\n', "custody.not_text"),
        ("text-object", b'{"text": {"nested": "x"}}\n', "custody.not_text"),
        ("text-list", b'{"text": ["a", "b"]}\n', "custody.not_text"),
        ("text-bool", b'{"text": true}\n', "custody.not_text"),
        ("missing-text", b'{"body": "x"}\n', "custody.missing_field"),
        ("trailing-garbage", b'{"text": "a"} trailing\n', "custody.invalid_json"),
        ("two-objects", b'{"text": "a"}{"text": "b"}\n', "custody.invalid_json"),
        ("single-quotes", b"{'text': 'a'}\n", "custody.invalid_json"),
        ("nan", b'{"text": "a", "n": NaN}\n', "custody.invalid_json"),
        ("infinity", b'{"text": "a", "n": -Infinity}\n', "custody.invalid_json"),
        ("huge-number", b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", "custody.invalid_json"),
        ("deep-nesting", b'{"text": "a", "n": ' + b"[" * 4000 + b"]" * 4000 + b"}\n", "custody.invalid_json"),
        (
            "deep-objects",
            b'{"text": "a", "n": ' + b'{"a":' * 1500 + b"1" + b"}" * 1500 + b"}\n",
            "custody.invalid_json",
        ),
        ("lone-surrogate", b'{"text": "\\ud800"}\n', "custody.invalid_unicode"),
        ("raw-control-char", b'{"text": "a\x01b"}\n', "custody.invalid_json"),
        ("unescaped-newline-split", b'{"text": "a\nb"}\n', "custody.invalid_json"),
        ("json-array-file", b'[{"text": "a"}, {"text": "b"}]\n', "custody.not_an_object"),
    )
    for name, data, code in cases:
        meta: dict[str, Any] = {"metadata_fields": ["n"]} if b'"n"' in data else {}
        yield _file(name, "jsonl_shape", f"{name}.jsonl", b'{"text": "fine"}\n' + data, INVALID, code, **meta)
    for k in range(6):
        rows: list[Any] = [{"text": s} for s in _sentences(rng, rng.randint(3, 30))]
        bad_at = rng.randrange(len(rows))
        rows[bad_at] = rng.choice([{"text": rng.randint(0, 9)}, [rows[bad_at]], {"other": "x"}, None])
        yield _file(
            f"random-{k}",
            "jsonl_shape",
            f"r{k}.jsonl",
            _jsonl(rows),
            INVALID,
            ("custody.not_text", "custody.not_an_object", "custody.missing_field"),
        )


def _parquet_bytes(rng: random.Random, *, text_rows: int) -> bytes:
    import pyarrow as pa  # type: ignore[import-untyped]

    table = pa.table({"text": pa.array(_sentences(rng, text_rows), pa.string())})
    return _write_parquet(table)


def _write_parquet(table: Any, **options: Any) -> bytes:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def parquet_schemas(rng: random.Random) -> Iterator[HostileFile]:
    import pyarrow as pa

    n = 5
    not_text = "custody.not_text"
    typed = (
        ("int64", pa.array(range(n), pa.int64())),
        ("float", pa.array([0.5] * n, pa.float64())),
        ("binary", pa.array([b"\xff\x00"] * n, pa.binary())),
        ("bool", pa.array([True] * n, pa.bool_())),
        ("timestamp", pa.array([0] * n, pa.timestamp("s"))),
        ("list-of-string", pa.array([["a", "b"]] * n, pa.list_(pa.string()))),
        ("struct", pa.array([{"a": "x"}] * n, pa.struct([("a", pa.string())]))),
        ("map", pa.array([[("k", "v")]] * n, pa.map_(pa.string(), pa.string()))),
        ("nested-list", pa.array([[["deep"]]] * n, pa.list_(pa.list_(pa.string())))),
        ("dictionary-of-int", pa.array(range(n), pa.int32()).dictionary_encode()),
        ("decimal", pa.array([1] * n, pa.decimal128(10, 2))),
        ("null-type", pa.nulls(n)),
    )
    for name, column in typed:
        yield _file(
            f"text-is-{name}",
            "parquet_schema",
            f"{name}.parquet",
            _write_parquet(pa.table({"text": column})),
            INVALID,
            not_text,
        )
    wide = pa.table({f"col{i}": pa.array(["v"], pa.string()) for i in range(3000)})
    yield _file(
        "3000-columns-no-text",
        "parquet_schema",
        "wide.parquet",
        _write_parquet(wide),
        INVALID,
        "custody.missing_column",
    )
    wide_text = pa.table(
        {**{"text": pa.array([1], pa.int8())}, **{f"c{i}": pa.array([1], pa.int8()) for i in range(2000)}}
    )
    yield _file(
        "2000-columns-int-text",
        "parquet_schema",
        "wide2.parquet",
        _write_parquet(wide_text),
        INVALID,
        not_text,
    )
    empty_wide = pa.table({f"c{i}": pa.array([], pa.string()) for i in range(1000)})
    yield _file(
        "zero-rows-1000-columns",
        "parquet_schema",
        "ew.parquet",
        _write_parquet(empty_wide),
        INVALID,
        ("custody.missing_column", "custody.empty_file"),
    )
    yield _file(
        "zero-rows",
        "parquet_schema",
        "zero.parquet",
        _parquet_bytes(rng, text_rows=0),
        INVALID,
        "custody.empty_file",
    )
    nulls = pa.table({"text": pa.array(["a", None, "c"], pa.string())})
    yield _file(
        "null-text", "parquet_schema", "null.parquet", _write_parquet(nulls), INVALID, "custody.missing_field"
    )
    bad_utf8 = pa.table({"text": pa.array([b"ok", b"caf\xe9"], pa.binary()).view(pa.string())})
    yield _file(
        "string-column-invalid-utf8",
        "parquet_schema",
        "u.parquet",
        _write_parquet(bad_utf8),
        INVALID,
        ("custody.invalid_parquet", "custody.invalid_utf8"),
    )
    limit = LIMITS["UPLOAD_MAX_BYTES"]
    inflating = pa.table({"text": pa.array(["q" * 4096] * (limit // 4096 * 2), pa.string())})
    yield _file(
        "row-group-inflates-past-limit",
        "parquet_schema",
        "inflate.parquet",
        _write_parquet(inflating, compression="zstd", use_dictionary=False),
        TOO_LARGE,
        ("custody.too_large",),
    )
    long_cell = pa.table({"text": pa.array(["r" * (LIMITS["RECORD_MAX_CHARS"] + 1)], pa.string())})
    yield _file(
        "cell-over-record-limit",
        "parquet_schema",
        "cell.parquet",
        _write_parquet(long_cell),
        TOO_LARGE,
        "custody.record_too_large",
    )
    many = pa.table({"text": pa.array(["s"] * (LIMITS["UPLOAD_MAX_RECORDS"] + 1), pa.string())})
    yield _file(
        "too-many-rows",
        "parquet_schema",
        "rows.parquet",
        _write_parquet(many),
        TOO_LARGE,
        "custody.too_many_records",
    )
    whole = _parquet_bytes(rng, text_rows=50)
    yield _file(
        "truncated-footer", "parquet_schema", "cut.parquet", whole[:-10], INVALID, "custody.invalid_parquet"
    )
    yield _file(
        "magic-only", "parquet_schema", "magic.parquet", b"PAR1PAR1", INVALID, "custody.invalid_parquet"
    )
    footer_len = struct.pack("<I", 2**31 - 1)
    yield _file(
        "huge-footer-length",
        "parquet_schema",
        "footer.parquet",
        b"PAR1" + b"\0" * 64 + footer_len + b"PAR1",
        INVALID,
        "custody.invalid_parquet",
    )
    garbage = b"PAR1" + bytes(rng.randrange(256) for _ in range(4096)) + struct.pack("<I", 100) + b"PAR1"
    yield _file(
        "garbage-footer", "parquet_schema", "garbage.parquet", garbage, INVALID, "custody.invalid_parquet"
    )
    meta = pa.table({"text": pa.array(["x"], pa.string()), "m": pa.array([1], pa.int8())})
    yield _file(
        "missing-metadata-column",
        "parquet_schema",
        "mm.parquet",
        _write_parquet(meta),
        INVALID,
        "custody.missing_column",
        metadata_fields=["absent"],
    )
    for k in range(4):
        width = rng.randint(2, 50)
        cols = {f"c{i}": pa.array([rng.randint(0, 9)] * 3, pa.int16()) for i in range(width)}
        yield _file(
            f"random-wide-{k}",
            "parquet_schema",
            f"rw{k}.parquet",
            _write_parquet(pa.table(cols)),
            INVALID,
            "custody.missing_column",
            text_fields=["c0x"],
        )


CLASSES: tuple[Callable[[random.Random], Iterator[HostileFile]], ...] = (
    oversize,
    gzip_bombs,
    nested_archives,
    invalid_utf8,
    nul_bytes,
    enormous_lines,
    hostile_names,
    wrong_magic,
    truncated_gzip,
    empty_files,
    csv_shapes,
    jsonl_shapes,
    parquet_schemas,
)


def corpus(profile: str = "quick", seed: int = DEFAULT_SEED) -> list[HostileFile]:
    """The hostile files for a profile, the same for the same seed.

    The quick profile keeps the first files of each class in turn (round robin)
    until it has ``QUICK_SIZE``, so every class is represented.
    """
    if profile not in ("quick", "proof"):
        raise ValueError(f"unknown profile {profile!r}")
    by_class: list[list[HostileFile]] = []
    for make in CLASSES:
        rng = random.Random(f"{seed}/{make.__name__}")
        by_class.append(list(make(rng)))
    if profile == "proof":
        files = [f for group in by_class for f in group]
        assert len(files) >= PROOF_MIN, len(files)
    else:
        files = []
        depth = 0
        while len(files) < QUICK_SIZE:
            for group in by_class:
                if depth < len(group) and len(files) < QUICK_SIZE:
                    files.append(group[depth])
            depth += 1
    names = [f.name for f in files]
    assert len(set(names)) == len(names), "hostile file names must be unique"
    return files


def benign_formula_csv() -> bytes:
    """Spreadsheet-formula-looking cells: ordinary text on upload (exports neutralise them)."""
    rows = [
        "text,label",
        '"=HYPERLINK(""http://evil.example/"",""click"")",a',
        "=1+2,b",
        "+SUM(A1:A9),c",
        "-2+3,d",
        "@cmd,e",
        "\"=cmd|' /C calc'!A0\",f",
        "\tTAB lead,g",
    ]
    return ("\n".join(rows) + "\n").encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", choices=("quick", "proof"), default="quick")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = corpus(args.profile, args.seed)
    manifest = []
    for number, item in enumerate(files):
        # Stored by number, never by the hostile name.
        for part_number, part in enumerate(item.parts, start=1):
            (args.out / f"{number:04d}.part{part_number}").write_bytes(part)
        manifest.append({"number": number, **item.manifest()})
    (args.out / "manifest.json").write_text(
        json.dumps({"seed": args.seed, "limits": LIMITS, "files": manifest}, indent=1)
    )
    total = sum(f.size for f in files)
    print(f"{len(files)} hostile files, {total:,} bytes, written to {args.out}")


if __name__ == "__main__":
    main()
