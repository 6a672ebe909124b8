"""JSON parsing with a size limit, so an oversized body is a 413, not a memory spike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser

from common.exceptions import TooLarge


class LimitedJSONParser(JSONParser):
    """Reads at most ``API_MAX_JSON_BYTES`` (+1 to detect overflow) before parsing."""

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
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None


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
