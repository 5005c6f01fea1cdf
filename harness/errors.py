"""User-facing errors.

Every error a user can cause (bad config, bad data, missing weights) is a `HarnessError`.
The CLI prints its message as one paragraph and exits with status 2, without a traceback.
The message names the file, the key path, the value and what was expected.
Passwords in URLs never reach a user's screen or a log (`redact`, `redact_logs`).
"""

import logging
import re


# A run that stopped on a preemption signal after writing a checkpoint exits with this (EX_TEMPFAIL);
# the sweep's launchers start it again with --resume, into the same MLflow run (harness/preemption.py).
REQUEUE_EXIT_CODE = 75


class HarnessError(Exception):
    """An error caused by input the user controls; shown without a traceback."""

    exit_code = 2  # what the CLI exits with (harness.preemption.Preempted: 75, requeue me)


class ConfigError(HarnessError):
    """A config or sweep file (or a command-line override) is invalid."""


class DataError(HarnessError):
    """A data file or record is missing or malformed."""


class AssetMissingError(HarnessError):
    """Model weights or a data set the config asks for are not on disk."""


# -- secrets never reach a user's screen or a log ------------------------------------------------

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]+):[^@/\s'\"]+@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|token|api_key)=)[^&;\s'\"]+", re.I)


def redact(text: str) -> str:
    """`text` with every password in a URL replaced by ***: `postgresql://user:***@host/db`,
    `...?password=***`. The one rule for storage and tracking URLs shown in logs, errors and reports."""
    text = _URL_PASSWORD.sub(r"\g<head>:***@", str(text))
    return _QUERY_PASSWORD.sub(r"\g<head>***", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts passwords from every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs() -> None:
    """Redact passwords in everything the root logger's handlers write (call after basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
