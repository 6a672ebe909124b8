"""JSON parsing with a size and a nesting limit: an oversized body is a 413, a deep one a 400.

Python's ``json`` recurses once per level of nesting, so a small body nested a
thousand levels deep raises ``RecursionError``, which is no ``ValueError``:
the depth is counted before parsing, and refused past ``API_MAX_JSON_DEPTH``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser

from common.exceptions import TooLarge

# String literals (their brackets nest nothing), and whatever is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonTooDeep(ParseError):
    problem_code = "common.json_too_deep"


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` opens more than ``limit`` arrays or objects inside each other."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    # The running depth after each bracket, summed in C (a Python loop is several times slower).
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0)) > limit


class LimitedJSONParser(JSONParser):
    """Reads at most ``API_MAX_JSON_BYTES`` (+1 to detect overflow); nests at most ``API_MAX_JSON_DEPTH``."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.API_MAX_JSON_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise TooLarge(f"The JSON body is larger than {limit} bytes.", code="common.body_too_large")
        try:
            text = raw.decode(settings.DEFAULT_CHARSET)
        except UnicodeDecodeError as exc:
            raise ParseError(f"The body is not valid UTF-8 (byte {exc.start}).") from None
        depth = settings.API_MAX_JSON_DEPTH
        if nesting_exceeds(text, depth):
            raise JsonTooDeep(f"The JSON body nests arrays and objects more than {depth} levels deep.")
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        except RecursionError:
            # Only reachable when API_MAX_JSON_DEPTH is set near the interpreter's recursion limit.
            raise JsonTooDeep("The JSON body nests arrays and objects too deeply.") from None


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    raise ValueError(f"{name} is not allowed in JSON")


class OctetStreamParser(BaseParser):
    """Raw bytes, read in memory up to ``UPLOAD_PART_MAX_BYTES`` (never spooled to disk)."""

    media_type = "application/octet-stream"

    # DRF's stubs say a parser returns a mapping; request.data is bytes here.
    def parse(  # type: ignore[override]
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        limit = settings.UPLOAD_PART_MAX_BYTES
        chunks = []
        size = 0
        while stream is not None:
            chunk = stream.read(min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"A part may be at most {limit} bytes.", code="common.part_too_large")
            chunks.append(chunk)
        return b"".join(chunks)
