"""Logging filters for the server log (wired in ``config/settings.py``'s ``LOGGING``)."""

from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """A refused request (4xx) is one line: the exception's text, without its traceback.

    Django logs a 403 page (``PermissionDenied``) and a refused body
    (``RequestDataTooBig``, ``django.security``) with the exception attached,
    so every refusal wrote a full traceback, two when the error was re-raised
    from a domain error. The caller's mistake is not our bug; the line keeps
    the status, the path and what was refused.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.exc_info:
            error = record.exc_info[1]
            if error is not None and str(error) and str(error) not in record.getMessage():
                record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
