"""Property: whatever bytes or YAML/JSON values a user's file holds, every loader either loads it or
raises the project's user error (HarnessError). Never any other exception."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "sweeps" / "runs" / "tiny.yaml"
# 60 examples per property keeps the file under a minute; HARNESS_PROPERTY_EXAMPLES=1000 digs deeper
SETTINGS = settings(
    max_examples=int(os.environ.get("HARNESS_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# scalars with the awkward ones: infinities, nan, huge ints, odd strings (braces, non-ASCII)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            "inf",
            "-inf",
            "auto",
            "{problem}",
            "{",
            "}",
            "tiny",
            "",
            "dpo",
            "grpo",
            "cuda",
            "math_verify",
            "verifiable",
            "1e400",
            "日本",
        ]
    )
    | st.text(max_size=12)
)
KEYS = st.sampled_from(
    [
        "method",
        "sync_every",
        "ref_sync_every",
        "task_mix",
        "seed",
        "model",
        "data",
        "train",
        "dpo",
        "grpo",
        "rollout",
        "rewards",
        "validation",
        "checkpoint",
        "eval",
        "tracking",
        "policy",
        "device",
        "lr",
        "steps",
        "every",
        "top_p",
        "math_prompt_template",
        "name",
        "base",
        "grid",
        "set",
        "search",
        "params",
        "type",
        "low",
        "high",
        "log",
        "step",
        "exclude",
        "overrides",
        "when",
        "objective",
        "rule",
        "suites",
        "samples",
        "id",
        "problem",
        "answer",
        "unique_id",
        "output",
        "outputs",
        "prompt",
        "instruction",
        "uid",
        "question_id",
        "messages",
        "choices",
        "turns",
        "content",
    ]
) | st.text(max_size=6)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=20
)
MAPPINGS = st.dictionaries(KEYS, VALUES, max_size=6)


_SCRATCH: list[Path] = []  # this module's one scratch folder, removed when the module ends


@pytest.fixture(scope="module", autouse=True)
def _scratch_folder():
    # @given tests cannot take a function-scoped tmp_path (hypothesis refuses it: one test call runs
    # many examples), so the module has one folder, removed at its end, and each example a subfolder
    # (before, every example left a harness-prop-* folder in /tmp: 1,620 after a day of runs)
    with tempfile.TemporaryDirectory(prefix="harness-prop-") as folder:
        _SCRATCH.append(Path(folder))
        yield
        _SCRATCH.pop()


def _folder(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[-1]))


def _file(content: bytes, name: str) -> Path:
    folder = _folder("file-")
    path = folder / name
    path.write_bytes(content)
    return path


def _yaml_bytes(value) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8")


def _loads_or_user_error(load, *args) -> None:
    try:
        load(*args)
    except HarnessError:
        pass


def _jsonl_bytes(values) -> bytes:
    return "".join(json.dumps(v) + "\n" for v in values).encode("utf-8")


# -- run config and sweep --------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=200))
def test_run_config_loader_on_arbitrary_bytes(content):
    from harness.config import load_run_config

    _loads_or_user_error(load_run_config, _file(content, "run.yaml"))


@SETTINGS
@given(MAPPINGS)
def test_run_config_loader_on_arbitrary_yaml_values(value):
    from harness.config import load_run_config

    _loads_or_user_error(load_run_config, _file(_yaml_bytes(value), "run.yaml"))


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "train.lr",
                    "seed",
                    "sync_every",
                    "ref_sync_every",
                    "model.device",
                    "data.math_prompt_template",
                    "eval.judge",
                    "train",
                    "x.y",
                ]
            ),
            st.text(max_size=10),
        ),
        max_size=3,
    )
)
def test_run_config_overrides_on_arbitrary_text(pairs):
    from harness.config import load_run_config

    _loads_or_user_error(load_run_config, TINY, [f"{key}={text}" for key, text in pairs])


@SETTINGS
@given(st.binary(max_size=200))
def test_sweep_loader_on_arbitrary_bytes(content):
    from harness.sweep.spec import load_sweep

    _loads_or_user_error(load_sweep, _file(content, "sweep.yaml"))


@SETTINGS
@given(
    MAPPINGS,
    st.dictionaries(
        st.sampled_from(["method", "sync_every", "ref_sync_every", "seed", "train.lr"]),
        st.lists(SCALARS, max_size=3),
        max_size=3,
    ),
)
def test_sweep_loader_on_arbitrary_yaml_values(value, grid):
    from harness.sweep.spec import load_sweep

    document = {"name": "prop", "base": str(TINY), **value}
    if grid:
        document["grid"] = grid
    _loads_or_user_error(load_sweep, _file(_yaml_bytes(document), "sweep.yaml"))


# -- data and predictions --------------------------------------------------------------------


def _suites():
    from evaluators.registry import get_suite, list_suites

    return [get_suite(name) for name in list_suites()]


CONTENTS = (
    st.binary(max_size=160)
    | st.lists(VALUES, max_size=4).map(_jsonl_bytes)
    | st.lists(MAPPINGS, min_size=1, max_size=3).map(lambda rows: json.dumps(rows).encode())
)


@SETTINGS
@given(CONTENTS)
def test_every_suite_data_loader(content):
    from evaluators.data import load_records

    path = _file(content, "data.jsonl")
    for suite in _suites():
        _loads_or_user_error(load_records, suite, path)


@SETTINGS
@given(CONTENTS, st.lists(MAPPINGS, max_size=3).map(_jsonl_bytes))
def test_predictions_loader_and_matching(predictions, data):
    from evaluators.data import load_records, match_predictions, read_predictions
    from evaluators.registry import get_suite

    pred_path = _file(predictions, "pred.jsonl")
    _loads_or_user_error(read_predictions, pred_path)
    suite = get_suite("math500")
    try:
        records = load_records(suite, _file(data, "data.jsonl"))
    except HarnessError:
        records = [{"unique_id": "a", "problem": "p", "answer": "1"}]
    _loads_or_user_error(match_predictions, suite, records, pred_path)


@SETTINGS
@given(CONTENTS, CONTENTS)
def test_training_prompt_loaders(train, validation):
    from harness.tasks import load_split

    root = _folder("data-")
    for source in ("numinamath", "wildchat"):
        (root / source).mkdir()
        (root / source / "train.jsonl").write_bytes(train)
        (root / source / "validation.jsonl").write_bytes(validation)
        for split in ("train", "validation"):
            _loads_or_user_error(load_split, source, split, str(root))


@SETTINGS
@given(CONTENTS)
def test_pairwise_side_files(content):
    from evaluators.arena_hard import load_baseline_answers
    from evaluators.pairwise import load_instruction_difficulty

    path = _file(content, "side.jsonl")
    _loads_or_user_error(load_baseline_answers, path)
    _loads_or_user_error(load_instruction_difficulty, path, 3)
