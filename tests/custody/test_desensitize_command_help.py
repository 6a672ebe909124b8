"""``manage.py desensitize --help`` documents the input and output formats."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
from django.core.management import call_command


def test_help_shows_the_input_format_with_an_example():
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        call_command("desensitize", "--help")
    text = out.getvalue()
    assert '{"id": "ticket-1", "text": "Call Maria Lopez at +1 415 555 0100."}' in text
    assert '"id" (required): a string or an integer' in text
    assert "naming its line number" in text
    assert '"spans" are offsets into the input text' in text
