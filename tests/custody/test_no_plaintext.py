"""Promise 1: no plaintext at rest. Sentinels go in; none is found anywhere afterwards."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

import pytest

from custody import services
from custody.models import GrantPurpose
from custody.services._keys import system_grant
from tests.custody.conftest import drain, jsonl
from tests.custody.scanner import places_to_scan, scan_database, scan_files


def luhn_card(prefix: str) -> str:
    digits = [int(d) for d in prefix]
    for check in range(10):
        total = 0
        for i, d in enumerate(reversed([*digits, check])):
            total += d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2)
        if total % 10 == 0:
            return prefix + str(check)
    raise AssertionError("unreachable")


@pytest.fixture
def sentinels() -> dict[str, list[str]]:
    # The plain sentinels are fixed words the desensitizer is known to leave alone
    # (a random word is occasionally, and rightly, taken for a name by the NER
    # model); the PII ones are fresh each run.
    tag = "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(10))
    return {
        "plain": [f"zqvmtkwrpsbn{suffix}" for suffix in ("alpha", "beta", "gamma")],
        "pii": [f"qzmail{tag}@example.com", luhn_card("4" + str(secrets.randbelow(10**14)).zfill(14))],
    }


def corpus(s: dict[str, list[str]]) -> bytes:
    plain, pii = s["plain"], s["pii"]
    records = [
        # Not "The word X appears ...": the English tagger reads an unknown word in a subject's
        # place as a name and replaces it, and these sentinels must survive desensitization.
        {"text": f"This ordinary sentence holds the word {plain[0]}."},
        {"text": f"Write to {pii[0]} about the refund, reference {plain[1]}."},
        {"text": f"Card {pii[1]} was charged twice."},
        {"text": f"Nothing special here, only {plain[2]}."},
    ]
    return jsonl(records * 3)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_no_sentinel_is_at_rest_after_the_full_pipeline(
    alice, version, upload, sentinels, compress, caplog, capfd
):
    started = time.time() - 1
    everything = sentinels["plain"] + sentinels["pii"]
    with caplog.at_level(logging.DEBUG):
        upload(version, corpus(sentinels), parts=2, compress=compress)
        services.version_process(actor=alice, version=version)
        drain()
        services.report_samples(actor=alice, version=version)
        services.version_seal(actor=alice, version=version)

    assert scan_database(everything) == {}
    assert scan_files(places_to_scan(), everything, newer_than=started) == {}
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert [s for s in everything if s in logs] == []

    # The desensitized records: plain sentinels survive, PII sentinels do not.
    stream = services.grant_stream_open(
        grant=system_grant(version, GrantPurpose.REVIEW), consumer_ref="scan", purpose="review"
    )
    texts = " ".join(r["text"]["text"] for batch in stream for r in batch)
    assert all(s in texts for s in sentinels["plain"])
    assert [s for s in sentinels["pii"] if s in texts] == []


def test_the_scanner_sees_a_sentinel_planted_in_plaintext(settings, db):
    # A sentinel of its own, not the pipeline test's fixed words: under `make test` that test may
    # run meanwhile in the other pytest process, and it scans the temp folder this file is in.
    sentinel = f"zqvmtkwrpsbn{secrets.token_hex(6)}"
    planted = Path(settings.BLOB_DIR) / "planted.bin"
    planted.parent.mkdir(parents=True, exist_ok=True)
    import gzip

    planted.write_bytes(gzip.compress(f"leak {sentinel} here".encode()))
    found = scan_files([Path(settings.BLOB_DIR)], [sentinel])
    assert found == {str(planted): {sentinel}}
