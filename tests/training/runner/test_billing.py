"""Platform tokens billed by the runner: the records its steps consumed, canaries and validation excluded.

The tiny word-level tokenizer makes sizes exact: "the patient walked miles before lunch N" is 7
tokens, so with its separator each record fills one block of max_seq_len 8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.runner.data import InputError, Record, read_records
from training.runner.spec import parse_spec

HP: dict[str, Any] = {
    "learning_rate": 0.001,
    "epochs": 2,
    "batch_size": 4,
    "max_seq_len": 8,
    "seed": 5,
    "precision": "fp32",
    "validation_fraction": 0,
    "log_every": 1,
}
SENT = 10  # the platform tokens custody counted for each record (not the base tokenizer's 7)


def spec(tokenizer: Path, **changes: Any) -> dict[str, Any]:
    return {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": "gpt2-tiny"},
        "tokenizer_path": str(tokenizer),
        "hyperparameters": {**HP, **changes},
    }


def block_records(count: int, *, sent: int | None = SENT, canaries: int = 0) -> list[Record]:
    ordinary = [
        Record(f"the patient walked miles before lunch {i % 10}", None, False, i + 1, sent)
        for i in range(count)
    ]
    planted = [Record("the vault code for account is 7", None, True, count + i + 1) for i in range(canaries)]
    return ordinary + planted


def billed(raw_spec: dict[str, Any], records: list[Record], out: Path) -> dict[str, Any]:
    from training.runner.train import train

    return train(parse_spec(raw_spec), records, out, lambda event: None)


class TestPackShares:
    def test_a_record_spread_over_blocks_adds_up_to_its_count_exactly(self, tiny_tokenizer: Path) -> None:
        from training.runner.data import load_tokenizer, pack

        tokenizer = load_tokenizer(str(tiny_tokenizer))
        texts = ["the patient walked", "clinic note 1 2 3 4 5 6 7 8 9", "river engine", "data"]
        blocks = pack(tokenizer, texts, 8, weights=[5, 100, None, 7], counted=[True, True, True, False])
        assert blocks.platform is not None
        # Positions: record 0 at 0-3, record 1 (11 tokens + separator) at 4-15, record 2 at 16-18,
        # record 3 (uncounted) at 19-20: 3 blocks of 8. Record 1 has 4 of its 12 positions in block 0.
        assert blocks.input_ids.shape == (3, 8)
        assert blocks.platform.tolist() == [5 + 100 * 4 // 12, 100 - 100 * 4 // 12, 2]
        assert blocks.platform_tokens == 5 + 100 + 2 == int(blocks.platform.sum())

    def test_aligned_packing_gives_each_record_its_own_block(self, tiny_tokenizer: Path) -> None:
        from training.runner.data import load_tokenizer, pack

        tokenizer = load_tokenizer(str(tiny_tokenizer))
        texts = ["the patient walked", "clinic note 1 2 3 4 5 6 7 8 9", "data"]
        blocks = pack(tokenizer, texts, 8, weights=[5, 100, 7], aligned=True)
        assert blocks.input_ids.shape == (3, 8)
        assert blocks.lengths.tolist() == [4, 8, 2]  # the long record truncated to 7 tokens + separator
        assert blocks.platform is not None and blocks.platform.tolist() == [5, 100, 7]
        separator = tokenizer.token_to_id("[SEP]")
        assert blocks.input_ids[1, 7] == separator and blocks.input_ids[0, 3] == separator


class TestTokensTrained:
    def test_a_full_run_bills_the_sent_counts_times_the_epochs(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer), block_records(16), tmp_path / "out")
        assert done["steps"] == 8
        assert done["tokens_trained"] == 16 * SENT * 2

    def test_max_steps_inside_the_first_epoch_bills_only_the_batches_trained(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer, max_steps=3), block_records(16), tmp_path / "out")
        assert done["steps"] == 3
        assert done["tokens_trained"] == 3 * 4 * SENT  # 3 batches of 4 one-record blocks

    def test_canaries_are_trained_on_but_never_billed(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        done = billed(spec(tiny_tokenizer), block_records(16, canaries=4), tmp_path / "out")
        assert done["steps"] == 10  # 20 blocks: the canaries took steps too
        assert done["tokens_trained"] == 16 * SENT * 2

    def test_validation_records_are_not_billed(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        done = billed(spec(tiny_tokenizer, validation_fraction=0.25), block_records(16), tmp_path / "out")
        assert done["tokens_trained"] == 12 * SENT * 2

    def test_without_custody_counts_the_base_tokenizer_counts(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer, epochs=1), block_records(16, sent=None), tmp_path / "out")
        assert done["tokens_trained"] == 16 * 7

    def test_dp_bills_the_expected_share_of_the_epochs_drawn(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        dp = {"enabled": True, "target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}
        lora = {**spec(tiny_tokenizer, epochs=1), "template": "causal_lm_lora", "dp": dp}
        full = billed(lora, block_records(16), tmp_path / "full")
        assert full["tokens_trained"] == 16 * SENT  # exact, whatever the Poisson batches drew
        lora["hyperparameters"] = {**lora["hyperparameters"], "epochs": 2, "max_steps": 2}
        part = billed(lora, block_records(16), tmp_path / "part")
        # 2 steps (plus any empty draws) of 4 per epoch: a whole number of quarters of 160, under 320.
        assert part["tokens_trained"] % (16 * SENT // 4) == 0 and 80 <= part["tokens_trained"] < 320


class TestReadRecords:
    def test_takes_the_platform_tokens_sent_with_a_record(self) -> None:
        (record,) = read_records([json.dumps({"text": "a", "platform_tokens": 3}).encode()])
        assert record.platform_tokens == 3

    @pytest.mark.parametrize("value", [-1, 1.5, "3", True])
    def test_refuses_a_count_that_is_not_a_non_negative_integer(self, value: Any) -> None:
        with pytest.raises(InputError) as caught:
            read_records([json.dumps({"text": "SECRET", "platform_tokens": value}).encode()])
        assert caught.value.detail == "line 1: 'platform_tokens' must be a non-negative integer"


def sourced(count: int, sources: list[int]) -> list[Record]:
    """`block_records` with each record's source (the launcher's contribution number), cycling."""
    return [
        Record(r.text, r.label, r.canary, r.line, r.platform_tokens, r.spans, sources[i % len(sources)])
        for i, r in enumerate(block_records(count))
    ]


class TestTokensBySource:
    def test_a_block_shared_by_two_sources_splits_its_share_exactly(self, tiny_tokenizer: Path) -> None:
        from training.runner.data import load_tokenizer, pack

        tokenizer = load_tokenizer(str(tiny_tokenizer))
        texts = ["the patient walked", "clinic note 1 2 3 4 5 6 7 8 9", "river engine", "data"]
        blocks = pack(
            tokenizer,
            texts,
            8,
            weights=[5, 100, None, 7],
            counted=[True, True, True, False],
            sources=[0, 1, 0, None],
        )
        assert blocks.by_source is not None and blocks.platform is not None
        # Block 0: record 0 (source 0) whole and 4/12 of record 1 (source 1); block 2: record 2's 2.
        assert blocks.by_source.tolist() == [[5, 100 * 4 // 12], [0, 100 - 100 * 4 // 12], [2, 0]]
        assert blocks.by_source.sum(dim=1).tolist() == blocks.platform.tolist()

    def test_a_full_run_reads_each_source_whole_times_the_epochs(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer), sourced(16, [0, 0, 0, 1]), tmp_path / "out")
        assert done["tokens_by_source"] == [12 * SENT * 2, 4 * SENT * 2]
        assert sum(done["tokens_by_source"]) == done["tokens_trained"]

    def test_max_steps_reads_per_source_add_up_to_the_bill(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer, max_steps=1), sourced(16, [0, 1]), tmp_path / "out")
        assert done["tokens_trained"] == 4 * SENT
        assert sum(done["tokens_by_source"]) == 4 * SENT and len(done["tokens_by_source"]) == 2

    def test_without_sources_there_are_no_counts_per_source(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        done = billed(spec(tiny_tokenizer, epochs=1), block_records(8), tmp_path / "out")
        assert done["tokens_by_source"] is None

    @pytest.mark.parametrize("value", [-1, 1.5, "0", True])
    def test_refuses_a_source_that_is_not_a_non_negative_integer(self, value: Any) -> None:
        with pytest.raises(InputError) as caught:
            read_records([json.dumps({"text": "SECRET", "source": value}).encode()])
        assert caught.value.detail == "line 1: 'source' must be a non-negative integer"

    def test_dp_reads_per_source_are_the_expectation_like_the_bill(
        self, tmp_path: Path, tiny_tokenizer: Path
    ) -> None:
        dp = {"enabled": True, "target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}
        lora = {**spec(tiny_tokenizer, epochs=1), "template": "causal_lm_lora", "dp": dp}
        done = billed(lora, sourced(16, [0, 0, 0, 1]), tmp_path / "full")
        # A full epoch: exactly each source's tokens, whatever the Poisson batches drew.
        assert done["tokens_by_source"] == [12 * SENT, 4 * SENT]
        assert sum(done["tokens_by_source"]) == done["tokens_trained"]
