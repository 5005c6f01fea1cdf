"""Loading and checking evaluation data: a local file (`--data PATH`) or the suite's hub data set.

Local files are JSONL (one object per line) or a JSON list of objects, in the benchmark's
published format; every record is checked against the suite's required keys and types, and a
bad one is a `DataError` naming the file, line (or list index), key and what was expected.
Without a file, the suite's `default_data` (the embedded tiny task) or its hub data set is used;
the hub is only tried when `HF_HUB_OFFLINE` is unset, and any failure there becomes a
`DataError` saying exactly which file to download and how to pass it.

Predictions files (`harness score`) are JSONL rows `{"id": ..., "output": "..."}` or
`{"id": ..., "outputs": ["...", ...]}`; `match_predictions` lines them up with the records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.files import parse_json, read_jsonl, read_text_file
from evaluators.registry import Suite

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}


def read_json_records(path: str | Path, what: str = "data file") -> list[tuple[str, Any]]:
    """(location, value) pairs from a JSONL file or a JSON list; location is 'line N' / 'item N'.
    Reading is harness.files' (the project's one reader): a missing file, a directory, non-UTF-8
    bytes and bad JSON are DataErrors naming the file and line."""
    text = read_text_file(path, what)
    if text.lstrip().startswith("["):
        items = parse_json(text, str(path), "a JSON list of objects, or JSONL")
        if not isinstance(items, list):
            raise DataError(f"{path}: holds a JSON {type(items).__name__}; expected a JSON list of objects or JSONL.")
        return [(f"item {i}", item) for i, item in enumerate(items)]
    return [(f"line {number}", value) for number, value in read_jsonl(path, what)]


def _describe_types(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int subclass, but `true` is never a valid answer or id
    return isinstance(value, types) and not isinstance(value, bool)


def validate_record(suite: Suite, record: Any, where: str) -> dict:
    """Check one record against the suite's fields; `where` is e.g. 'data.jsonl, line 3'."""
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: expected a JSON object with keys {sorted(suite.required_fields)} ({suite.name} format), got {type(record).__name__}."
        )
    for alias, key in suite.key_aliases.items():
        if alias in record and key not in record:
            record = {**record, key: record[alias]}
    for key, types in suite.required_fields.items():
        if key not in record or record[key] is None:
            raise DataError(
                f"{where}: record has no key {key!r}; every {suite.name} record needs "
                f"{', '.join(sorted(suite.required_fields))} ({suite.data_format})."
            )
        if not _type_ok(record[key], types):
            raise DataError(
                f"{where}: key {key!r} is {record[key]!r} ({type(record[key]).__name__}); expected {_describe_types(types)}."
            )
    for key, types in suite.optional_fields.items():
        if record.get(key) is not None and not _type_ok(record[key], types):
            raise DataError(
                f"{where}: key {key!r} is {record[key]!r} ({type(record[key]).__name__}); expected {_describe_types(types)}."
            )
    return record


def how_to_supply(suite: Suite) -> str:
    """The sentence every 'no data' message ends with."""
    return (
        f"Supply the {suite.name} data as a local file: {suite.data_format}. Pass it with "
        f"`--data {suite.name}=PATH` to `harness eval` (or `--data PATH` to `harness score`)."
    )


def load_from_hub(suite: Suite) -> list[dict]:
    """The suite's hub split as plain dicts; every way this can fail becomes a DataError."""
    if suite.hub_name is None:
        raise DataError(f"Suite {suite.name} has no hub data set and no --data file was given. {how_to_supply(suite)}")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        raise DataError(
            f"Suite {suite.name} needs data set {suite.hub_name} (split {suite.hub_split!r}) but "
            f"HF_HUB_OFFLINE is set, so the hub is not tried. {how_to_supply(suite)}"
        )
    try:
        import datasets

        split = datasets.load_dataset(suite.hub_name, suite.hub_config, split=suite.hub_split)
    except Exception as err:  # network down, gated repo, renamed split: all tell the user the same
        raise DataError(
            f"Could not load {suite.hub_name} (split {suite.hub_split!r}) from the Hugging Face hub "
            f"for suite {suite.name}: {type(err).__name__}: {err}. {how_to_supply(suite)}"
        ) from None
    return [dict(row) for row in split]


def load_records(suite: Suite, path: str | Path | None = None) -> list[dict]:
    """The suite's records, validated: from `path`, else `suite.default_data()`, else the hub."""
    if path is None and suite.default_data is not None:
        path = suite.default_data()
    if path is not None:
        rows = read_json_records(path)
        records = [validate_record(suite, value, f"{path}, {where}") for where, value in rows]
        source = str(path)
    else:
        records = [validate_record(suite, row, f"{suite.hub_name}[{i}]") for i, row in enumerate(load_from_hub(suite))]
        source = suite.hub_name
    if not records:
        raise DataError(f"{source}: no records found; expected {suite.data_format}.")
    record_ids(suite, records, source)  # fails early on duplicate ids
    return records


def record_ids(suite: Suite, records: list[dict], source: str = "data") -> list[str] | None:
    """String ids of the records (by `suite.id_key`), or None when the data carries no ids and
    must be matched by order. Ids are compared as strings, so 3 and "3" are the same id."""
    key = suite.id_key
    if key is None or any(record.get(key) is None for record in records):
        return None
    ids = [str(record[key]) for record in records]
    seen: set[str] = set()
    for index, value in enumerate(ids):
        if value in seen:
            raise DataError(f"{source}: record {index} repeats {key} {value!r}; ids must be unique.")
        seen.add(value)
    return ids


def read_predictions(path: str | Path) -> list[tuple[str, str | None, list[str]]]:
    """(location, id or None, outputs) per predictions row, checked."""
    parsed = []
    for where, row in read_json_records(path, "predictions file"):
        where = f"{path}, {where}"
        if not isinstance(row, dict):
            raise DataError(f'{where}: expected an object {{"id": ..., "output": "..."}}, got {type(row).__name__}.')
        if "outputs" in row:
            outputs = row["outputs"]
            if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
                raise DataError(f"{where}: key 'outputs' must be a non-empty list of strings, got {outputs!r:.80}.")
        elif "output" in row:
            if not isinstance(row["output"], str):
                raise DataError(f"{where}: key 'output' must be a string, got {type(row['output']).__name__}.")
            outputs = [row["output"]]
        else:
            raise DataError(f"{where}: prediction has neither 'output' (a string) nor 'outputs' (a list of strings).")
        pid = row.get("id")
        parsed.append((where, None if pid is None else str(pid), outputs))
    if not parsed:
        raise DataError(f"{path}: no predictions found.")
    return parsed


def match_predictions(suite: Suite, records: list[dict], predictions_path: str | Path) -> list[list[str]]:
    """outputs[i] = the predicted samples for records[i], matched by id or else by line order.

    Every record needs a prediction and every prediction a record: a missing, unknown or
    repeated id is a DataError naming it.
    """
    predictions = read_predictions(predictions_path)
    ids = record_ids(suite, records)
    if ids is None:
        if len(predictions) != len(records):
            raise DataError(
                f"{predictions_path}: {len(predictions)} predictions for {len(records)} records; the data has "
                f"no ids, so predictions are matched by line order and the counts must agree."
            )
        return [outputs for _, _, outputs in predictions]
    by_id: dict[str, list[str]] = {}
    for where, pid, outputs in predictions:
        if pid is None:
            raise DataError(
                f"{where}: prediction has no 'id'; the {suite.name} data is matched by its {suite.id_key!r}."
            )
        if pid in by_id:
            raise DataError(f"{where}: id {pid!r} appears twice in the predictions.")
        by_id[pid] = outputs
    known = set(ids)
    unknown = [pid for pid in by_id if pid not in known]
    if unknown:
        raise DataError(
            f"{predictions_path}: prediction id {unknown[0]!r} matches no record's {suite.id_key!r} in the data ({len(unknown)} unmatched)."
        )
    missing = [rid for rid in ids if rid not in by_id]
    if missing:
        raise DataError(
            f"{predictions_path}: no prediction for id {missing[0]!r} ({len(missing)} records without predictions)."
        )
    return [by_id[rid] for rid in ids]
