"""AlpacaEval LC against the public leaderboard: 56 real models' weighted_alpaca_eval_gpt4_turbo
annotations (tests/fixtures/lc_real, from alpaca_eval's repository) and their official LC; the
method every LC carries; the official path's loud fallbacks."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from evaluators.lc_winrate import length_controlled_winrate

REAL = Path(__file__).parent / "fixtures" / "lc_real" / "alpaca_eval_weighted_gpt4_turbo.json.gz"
ANNOTATOR, BASELINE = "weighted_alpaca_eval_gpt4_turbo", "gpt4_1106_preview"


@pytest.fixture(scope="module")
def real():
    with gzip.open(REAL, "rt") as handle:
        return json.load(handle)


def model_rows(real: dict, name: str):
    entry = real["models"][name]
    index = entry.get("index", list(range(len(entry["preference"]))))
    baseline = [real["baseline_length"][i] for i in index]
    return entry["preference"], ["x" * n for n in entry["model_length"]], ["y" * n for n in baseline], index


def lc_of(real, name, **kw):
    p, model, baseline, index = model_rows(real, name)
    return length_controlled_winrate(p, model, baseline, instruction_index=index, use_alpaca_eval=False, **kw)


def test_fixture_reproduces_the_leaderboard_plain_win_rates(real):
    for name, entry in real["models"].items():
        assert np.mean(entry["preference"]) * 100 == pytest.approx(entry["official_winrate"], abs=2e-3), name


def test_regularised_lc_is_within_3_points_on_average_and_6_at_most_of_the_official(real):
    official, ours = [], []
    for name, entry in real["models"].items():
        result = lc_of(real, name, annotator=ANNOTATOR, baseline=BASELINE)
        assert result["lc_method"] == "regularised" and "length slope fixed" in result["notes"]
        official.append(entry["official_lc"])
        ours.append(result["lc_winrate"])
    gaps = np.abs(np.array(ours) - np.array(official))
    assert len(gaps) == 56
    assert gaps.mean() < 3.0 and gaps.max() < 6.0, (gaps.mean(), gaps.max())
    assert spearmanr(ours, official)[0] > 0.975


def test_gamed_model_is_caught_only_by_the_regularised_glm(real):
    # gpt4_gamed: official LC 12.19; without the gamed baselines its own slope runs away (~14)
    official = real["models"]["gpt4_gamed"]["official_lc"]
    regularised = lc_of(real, "gpt4_gamed", annotator=ANNOTATOR, baseline=BASELINE)
    unregularised = lc_of(real, "gpt4_gamed", annotator=None, baseline=BASELINE)
    assert abs(regularised["lc_winrate"] - official) < 3
    assert unregularised["lc_method"] == "unregularised" and "length_controlled_minimal" in unregularised["notes"]
    assert unregularised["lc_winrate"] - official > 20


def test_other_baseline_is_unregularised_and_says_which_glm(real):
    result = lc_of(real, "claude-2", annotator=ANNOTATOR, baseline="seed_policy")
    assert result["lc_method"] == "unregularised"
    assert "no published gamed baselines" in result["notes"] and "'seed_policy'" in result["notes"]


def test_regularised_with_difficulty_fits_the_difficulty_weight():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0, 1, size=400)
    delta = rng.integers(-600, 600, size=400)
    feature = np.tanh(delta / delta.std(ddof=1))
    slope = (1.5835274219761557 + 1.6424856171097677) / 2
    prefs = 1 / (1 + np.exp(-(slope * feature - 0.8 * difficulty - 1.0)))  # a judge with exactly that slope
    result = length_controlled_winrate(
        prefs,
        ["x" * (1000 + d) for d in delta],
        ["y" * 1000] * 400,
        instruction_difficulty=difficulty,
        use_alpaca_eval=False,
        annotator=ANNOTATOR,
        baseline=BASELINE,
    )
    assert result["glm_weights"]["instruction_difficulty"] == pytest.approx(-0.8, abs=1e-6)
    assert result["glm_weights"]["model"] == pytest.approx(-1.0, abs=1e-6)
    expected = 100 * np.mean(1 / (1 + np.exp(0.8 * difficulty + 1.0)))
    assert result["lc_winrate"] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------- the official path's fallbacks


@pytest.fixture
def stand_in_alpaca_eval(tmp_path, monkeypatch):
    """A stand-in for the alpaca_eval package (not installable offline) that records its calls;
    `behaviour["raise"]` makes it fail as the real one does without its hub files."""
    package = tmp_path / "site" / "alpaca_eval"
    (package / "metrics").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "metrics" / "__init__.py").write_text("")
    (package / "metrics" / "glm_winrate.py").write_text(
        "CALLS = []\nBEHAVIOUR = {}\n"
        "def get_length_controlled_winrate(frame, **kw):\n"
        "    CALLS.append(len(frame))\n"
        "    if BEHAVIOUR.get('raise'):\n"
        "        raise RuntimeError(BEHAVIOUR['raise'])\n"
        "    frame['glm_preference'] = 0.25\n"
        "    return {'length_controlled_winrate': 25.0, 'lc_standard_error': 1.5}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m.startswith("alpaca_eval")]:
        monkeypatch.delitem(sys.modules, name)
    import alpaca_eval.metrics.glm_winrate as module

    return module


def small_case(**kw):
    return length_controlled_winrate(
        [1, 0, 1, 0.5, 1, 0],
        ["aaaa", "b", "cc", "ddd", "eeeee", "f"],
        ["xx"] * 6,
        annotator=ANNOTATOR,
        baseline=BASELINE,
        **kw,
    )


def test_missing_package_is_a_warning_naming_the_reason(caplog):
    with caplog.at_level(logging.WARNING):
        result = small_case(instruction_difficulty=[0.1, -0.2, 0.3, 0.0, 0.5, -0.1])
    # the difficulty file no longer switches the official attempt off
    assert "alpaca_eval package is not importable" in caplog.text
    assert result["lc_method"] == "regularised"


def test_hub_offline_skips_the_attempt_at_once(stand_in_alpaca_eval, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        result = small_case()
    assert time.monotonic() - start < 2.0
    assert stand_in_alpaca_eval.CALLS == [] and "HF_HUB_OFFLINE is set" in caplog.text
    assert result["lc_method"] == "regularised"


def test_unreachable_hub_is_one_short_probe(stand_in_alpaca_eval, monkeypatch, caplog):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING):
        result = small_case()
    assert stand_in_alpaca_eval.CALLS == [] and f"127.0.0.1:{port}) is unreachable" in caplog.text
    assert result["lc_method"] == "regularised"


@pytest.fixture
def reachable_hub(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield
    server.close()


def test_official_path_runs_with_difficulty_given_and_says_so(stand_in_alpaca_eval, reachable_hub):
    result = small_case(instruction_difficulty=[0.1, -0.2, 0.3, 0.0, 0.5, -0.1])
    assert stand_in_alpaca_eval.CALLS == [6]
    assert (result["lc_method"], result["lc_winrate"], result["lc_winrate_se"]) == ("official", 25.0, 1.5)


def test_official_failure_is_loud_and_falls_back(stand_in_alpaca_eval, reachable_hub, caplog):
    stand_in_alpaca_eval.BEHAVIOUR["raise"] = "LogisticRegressionCV got an unexpected keyword argument 'penalty'"
    with caplog.at_level(logging.WARNING):
        result = small_case()
    assert "alpaca_eval raised RuntimeError: LogisticRegressionCV got an unexpected keyword" in caplog.text
    assert result["lc_method"] == "regularised"


def test_lc_method_is_logged_as_an_mlflow_tag(tmp_path):
    from mlflow.tracking import MlflowClient

    from evaluators.run import log_results

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lc", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    log_results(
        client, run.info.run_id, "eval", {"alpaca_eval": {"lc_winrate": 31.0, "lc_method": "regularised"}}, tmp_path
    )
    data = client.get_run(run.info.run_id).data
    assert data.tags["eval/alpaca_eval/lc_method"] == "regularised"
    assert data.metrics == {"eval/alpaca_eval/lc_winrate": 31.0}
