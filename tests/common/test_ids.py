"""Ids from text: ASCII digits within a bigint, nothing else."""

from __future__ import annotations

import pytest

from common.ids import MAX_ID, parse_id


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("007", 7), (str(MAX_ID), MAX_ID)])
def test_ids(raw, expected):
    assert parse_id(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "0", "-1", "+1", " 1", "1.0", "²", "٣", "1e3", str(MAX_ID + 1), "9" * 5000, None, 5]
)
def test_not_ids(raw):
    assert parse_id(raw) is None
