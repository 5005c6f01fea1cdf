"""Reading the files a user names, and writing the project's own files atomically: one function each.

    read_text_file(path, what, error=DataError) -> str     UTF-8 text, or one clear error
    read_jsonl(path, what, error=DataError) -> [(line_no, value)]   every non-blank line parsed
    read_json_objects(path, what, required=(), error=DataError) -> [dict]   objects with those keys
    atomic_write_text(path, text) / atomic_write_json(path, value)  temp file + rename

Every problem is a HarnessError (DataError by default) naming the file, the line, and what was
expected: missing, a directory where a file is expected, not readable, not UTF-8, a line that is
not JSON, a line that is JSON but not an object, a record without a required key. A reader
crashes on nothing a file can contain. A writer leaves the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import DataError, HarnessError


def read_text_file(path: str | Path, what: str = "file", error: type[HarnessError] = DataError) -> str:
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, but a {what} is expected here; name the file itself.")
    if not path.is_file():
        raise error(f"{path}: {what} not found (no such file).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: the {what} cannot be read ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{path}, line {line}: the {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8."
        ) from None


def parse_json(text: str, where: str, expected: str, error: type[HarnessError] = DataError) -> Any:
    """json.loads, with every failure (bad syntax, numbers too deep or too long) as `error`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); expected {expected}.") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise error(
            f"{where}: cannot be read as JSON ({type(exc).__name__}: {str(exc)[:120]}); expected {expected}."
        ) from None


def read_jsonl(
    path: str | Path,
    what: str = "JSONL file",
    error: type[HarnessError] = DataError,
    expected: str = "one JSON object per line",
) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line."""
    text = read_text_file(path, what, error)
    return [
        (number, parse_json(line, f"{path}, line {number}", expected, error))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def check_object(
    value: Any,
    where: str,
    required: Iterable[str] = (),
    error: type[HarnessError] = DataError,
    expected: str | None = None,
) -> dict:
    """`value` as a dict holding every `required` key, or `error` naming what is wrong."""
    required = list(required)
    shape = expected or (f"a JSON object with keys {required}" if required else "a JSON object")
    if not isinstance(value, dict):
        shown = "null" if value is None else type(value).__name__
        raise error(
            f"{where}: got {shown} ({json.dumps(value)[:60] if _dumpable(value) else '...'}); expected {shape}."
        )
    missing = [key for key in required if key not in value]
    if missing:
        raise error(f"{where}: the record lacks key(s) {missing}; expected {shape}.")
    return value


def read_json_objects(
    path: str | Path, what: str = "JSONL file", required: Iterable[str] = (), error: type[HarnessError] = DataError
) -> list[dict]:
    """Every line of a JSONL file as an object holding the `required` keys; at least one."""
    required = list(required)
    expected = f"one JSON object per line with keys {required}" if required else "one JSON object per line"
    rows = [
        check_object(value, f"{path}, line {number}", required, error, expected)
        for number, value in read_jsonl(path, what, error, expected)
    ]
    if not rows:
        raise error(f"{path}: the {what} holds no records; expected {expected}.")
    return rows


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, value: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=indent))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on `<path>.harness-lock` (made with its folder if needed), held
    for the block: serialises processes that first create or update the same file store."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".harness-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_cache_root(cache_root: str | os.PathLike | None = None) -> Path:
    """The machine's cache for built assets: argument, else ``$HARNESS_CACHE``, else ``~/.cache/harness``."""
    if cache_root is not None:
        return Path(cache_root).expanduser()
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    return Path.home() / ".cache" / "harness"


def writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried: permission bits lie for root and /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def output_dir_of(cfg) -> Path:
    """A run's output folder (absolute): `output_dir`, else `runs/<run_name>` under the working directory."""
    return Path(cfg.output_dir or Path("runs") / cfg.run_name).resolve()
