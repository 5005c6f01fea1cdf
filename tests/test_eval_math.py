"""Math suites: data loading and checking, Math-Verify scoring, pass@1 and its SE, score_predictions,
and tiny_math end to end through evaluate_checkpoint on the tiny policy."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from evaluators.data import load_records
from evaluators.math_suites import pass_at_1
from evaluators.registry import get_suite, list_suites
from evaluators.checkpoint_eval import evaluate_checkpoint
from evaluators.run import parse_data_flags, score_predictions
from harness.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
MATH500 = FIXTURES / "math500.jsonl"
AMC23 = FIXTURES / "amc23.jsonl"
NUMINA = FIXTURES / "numinamath_test.jsonl"


def boxed(answer: str) -> str:
    return f"Let me think step by step. The final answer is $\\boxed{{{answer}}}$."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def data_ids(path: Path, key: str) -> list:
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------ pass@1 / SE


def test_pass_at_1_and_standard_error_match_hand_computation():
    # per-problem accuracy 0.5, 0.25, 0 -> mean 0.25; std(ddof=1) = 0.25; SE = 0.25 / sqrt(3)
    value, se = pass_at_1([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert value == pytest.approx(25.0)
    assert se == pytest.approx(100 * 0.25 / math.sqrt(3))  # 14.4338 %


def test_pass_at_1_single_problem_has_undefined_se():
    value, se = pass_at_1([[1, 0]])
    assert value == 50.0 and math.isnan(se)


# --------------------------------------------------------------------------- scoring, by suite


def test_math500_equivalent_answers_are_correct(tmp_path):
    # golds: 27, \frac{1}{2}, \dfrac{3}{4}, 4 -- predictions written differently but equal
    answers = ["27.0", "0.5", "3/4", "4"]
    preds = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": uid, "output": boxed(a)} for uid, a in zip(data_ids(MATH500, "unique_id"), answers)],
    )
    result = score_predictions("math500", MATH500, preds)
    assert result["score"] == pytest.approx(100.0)
    assert result["stderr"] == pytest.approx(0.0)
    assert (result["suite"], result["n_problems"], result["n_samples"]) == ("math500", 4, 4)


def test_amc23_float_golds_match_integer_predictions_and_wrong_ones_fail(tmp_path):
    # gold 27.0 vs "27" right; gold 6.0 vs "6" right; gold 99.0 vs "98" wrong
    preds = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": 0, "output": boxed("27")}, {"id": "1", "output": boxed("6")}, {"id": 2, "output": boxed("98")}],
    )
    result = score_predictions("amc23", AMC23, preds, out_path=tmp_path / "scored.jsonl")
    assert result["score"] == pytest.approx(200 / 3)
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [row["correct"] for row in rows] == [True, True, False]
    assert [row["gold"] for row in rows] == ["27.0", "6.0", "99.0"]
    assert set(rows[0]) >= {"id", "sample_index", "prompt", "output", "length", "score", "correct"}


def test_amc23_accepts_math_ai_question_key(tmp_path):
    data = write_jsonl(tmp_path / "amc.jsonl", [{"id": 7, "question": "What is $3^3$?", "answer": 27.0}])
    records = load_records(get_suite("amc23"), data)
    assert records[0]["problem"] == "What is $3^3$?"


def test_numinamath_without_ids_matches_by_line_order_and_averages_samples(tmp_path):
    preds = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"outputs": [boxed("42"), boxed("41")]},  # 1/2
            {"outputs": [boxed("\\dfrac{1}{2}"), boxed("0.5")]},  # 2/2
            {"outputs": [boxed("-3"), boxed("2")]},  # 0/2
        ],
    )
    result = score_predictions("numinamath", NUMINA, preds)
    assert result["score"] == pytest.approx(50.0)
    assert result["stderr"] == pytest.approx(100 * 0.5 / math.sqrt(3))
    assert result["n_samples"] == 6


def test_predictions_shifted_by_one_line_score_wrong(tmp_path):
    ids = data_ids(MATH500, "unique_id")
    answers = ["27", "\\frac{1}{2}", "\\frac{3}{4}", "4"]
    shifted = [{"id": ids[i], "output": boxed(answers[(i + 1) % 4])} for i in range(4)]
    result = score_predictions("math500", MATH500, write_jsonl(tmp_path / "p.jsonl", shifted))
    assert result["score"] == 0.0


def test_json_list_data_file_is_accepted(tmp_path):
    rows = [json.loads(line) for line in NUMINA.read_text().splitlines()]
    data = tmp_path / "numina.json"
    data.write_text(json.dumps(rows))
    preds = write_jsonl(tmp_path / "p.jsonl", [{"output": boxed(a)} for a in ["42", "1/2", "3"]])
    assert score_predictions("numinamath", data, preds)["score"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------- user errors


def test_missing_prediction_id_is_named(tmp_path):
    ids = data_ids(MATH500, "unique_id")
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": uid, "output": boxed("1")} for uid in ids[:3]])
    with pytest.raises(DataError, match="test/algebra/1004.json"):
        score_predictions("math500", MATH500, preds)


def test_unknown_prediction_id_is_named(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "output": boxed("1")} for i in (0, 1, 2, 3)])
    with pytest.raises(DataError, match="'3' matches no record"):
        score_predictions("amc23", AMC23, preds)


def test_prediction_without_id_for_data_with_ids_names_the_line(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": 0, "output": "x"}, {"output": "y"}, {"id": 2, "output": "z"}])
    with pytest.raises(DataError, match=r"line 2: prediction has no 'id'"):
        score_predictions("amc23", AMC23, preds)


def test_line_order_count_mismatch_is_an_error(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"output": "x"}, {"output": "y"}])
    with pytest.raises(DataError, match="2 predictions for 3 records"):
        score_predictions("numinamath", NUMINA, preds)


def test_malformed_data_record_names_file_line_and_key(tmp_path):
    lines = AMC23.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["answer"] = [6]
    data = tmp_path / "amc.jsonl"
    data.write_text("\n".join([lines[0], json.dumps(bad), lines[2]]) + "\n")
    with pytest.raises(DataError) as err:
        load_records(get_suite("amc23"), data)
    message = str(err.value)
    assert "amc.jsonl, line 2" in message and "'answer'" in message and "a number or a string" in message


def test_missing_key_and_bad_json_are_data_errors(tmp_path):
    data = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "answer": "1"}])  # no unique_id
    with pytest.raises(DataError, match=r"m.jsonl, line 1: record has no key 'unique_id'"):
        load_records(get_suite("math500"), data)
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"id": 1, "problem": "p", "answer": 2}\n{"id": 2,\n')
    with pytest.raises(DataError, match=r"b.jsonl, line 2: not valid JSON"):
        load_records(get_suite("amc23"), broken)


def test_duplicate_ids_in_data_are_rejected(tmp_path):
    data = write_jsonl(
        tmp_path / "a.jsonl", [{"id": 1, "problem": "p", "answer": 2.0}, {"id": 1, "problem": "q", "answer": 3.0}]
    )
    with pytest.raises(DataError, match="repeats id '1'"):
        load_records(get_suite("amc23"), data)


def test_offline_without_file_says_how_to_supply_it():
    with pytest.raises(DataError) as err:
        load_records(get_suite("math500"))
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "HuggingFaceH4/MATH-500" in message
    assert "test.jsonl" in message and "--data math500=PATH" in message


def test_numinamath_has_no_hub_and_names_the_carved_split():
    with pytest.raises(DataError, match=r"numinamath/test.jsonl.*--data numinamath=PATH"):
        load_records(get_suite("numinamath"))


def test_unknown_suite_lists_known_names(tmp_path):
    with pytest.raises(ConfigError, match="Known suites: .*amc23.*math500.*numinamath.*tiny_math"):
        score_predictions("gsm8k", MATH500, MATH500)
    with pytest.raises(ConfigError, match="SUITE=PATH"):
        parse_data_flags(["math500"])
    assert parse_data_flags(["amc23=/x.jsonl"]) == {"amc23": "/x.jsonl"}
    assert {"math500", "amc23", "numinamath", "tiny_math"} <= set(list_suites())


def test_paper_prompt_asks_for_literal_boxed_answer_not_the_gold():
    suite = get_suite("amc23")
    prompt = suite.render_prompt({"id": 0, "problem": "What is $3^3$ {not a field}?", "answer": 27.0})
    assert prompt.startswith("What is $3^3$ {not a field}?\n\nPlease reason step by step")
    assert prompt.endswith('end your answer with "The final answer is $\\boxed{answer}$".')
    assert "27" not in prompt


# ------------------------------------------------------------------ tiny_math, end to end


@pytest.mark.slow
def test_tiny_math_end_to_end_on_tiny_policy(tiny_assets, tmp_path):
    test_file = tiny_assets.data_dir / "math" / "test.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()][:6]
    data = write_jsonl(tmp_path / "tiny.jsonl", rows)
    results = evaluate_checkpoint(
        tiny_assets.policy_dir,
        ["tiny_math"],
        samples=2,
        data_paths={"tiny_math": str(data)},
        max_new_tokens=24,
        batch_size=16,
        out_dir=tmp_path / "out",
        show_progress=False,
    )
    metrics = results["tiny_math"]
    assert 0.0 <= metrics["pass_at_1"] <= 100.0 and metrics["n_problems"] == 6 and metrics["n_samples"] == 12
    generations = [
        json.loads(line) for line in (tmp_path / "out" / "tiny_math" / "generations.jsonl").read_text().splitlines()
    ]
    assert len(generations) == 12
    assert {g["id"] for g in generations} == {str(r["id"]) for r in rows}
    assert all(0 < g["length"] <= 24 and isinstance(g["correct"], bool) for g in generations)
    # pass@1 is the mean of the per-problem means of the saved verdicts
    by_id: dict[str, list[float]] = {}
    for g in generations:
        by_id.setdefault(g["id"], []).append(g["score"])
    assert metrics["pass_at_1"] == pytest.approx(100 * sum(sum(v) / len(v) for v in by_id.values()) / len(by_id))


# ------------------------------------------------------------ evaluate_run against MLflow


@pytest.mark.slow
def test_evaluate_run_logs_selected_and_final_checkpoint(tiny_assets, tmp_path):
    from mlflow.tracking import MlflowClient

    from evaluators.run import evaluate_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("eval-test", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    output_dir = tmp_path / "out"
    for step in (10, 20, 30):  # copies of the tiny policy stand in for the run's checkpoints
        shutil.copytree(tiny_assets.policy_dir, output_dir / "checkpoints" / f"step_{step}")
    client.log_param(run_id, "train.output_dir", str(output_dir))
    # step 30 has the best raw reward but only through length: len_norm must pick step 20
    for step, reward, length in [(10, 0.30, 20.0), (20, 0.50, 20.0), (30, 0.60, 60.0)]:
        client.log_metric(run_id, "val/reward", reward, step=step)
        client.log_metric(run_id, "val/response_len", length, step=step)
        client.log_metric(run_id, "val/len_norm_reward", reward / length, step=step)
    checkpoints = [
        {"step": s, "path": f"checkpoints/step_{s}", "validated": True} for s in (10, 20, 30)
    ]  # relative to output_dir
    (tmp_path / "checkpoints.json").write_text(json.dumps(checkpoints))
    client.log_artifact(run_id, str(tmp_path / "checkpoints.json"))
    client.set_terminated(run_id)

    rows = [json.loads(line) for line in (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()][:4]
    data = write_jsonl(tmp_path / "tiny4.jsonl", rows)
    summary = evaluate_run(
        run_id,
        ["tiny_math"],
        samples=2,
        tracking_uri=uri,
        data_paths={"tiny_math": str(data)},
        max_new_tokens=16,
        batch_size=8,
        show_progress=False,
    )

    assert (summary["selected_step"], summary["final_step"]) == (20, 30)
    run = client.get_run(run_id)
    assert run.data.metrics["selected_step"] == 20
    assert run.data.tags["selection_rule"] == "len_norm"
    for prefix in ("eval", "eval_final"):
        value = run.data.metrics[f"{prefix}/tiny_math/pass_at_1"]
        assert value == pytest.approx(summary[prefix]["tiny_math"]["pass_at_1"])
        assert f"{prefix}/tiny_math/pass_at_1_se" in run.data.metrics
        listed = [a.path for a in client.list_artifacts(run_id, f"{prefix}/tiny_math")]
        assert listed == [f"{prefix}/tiny_math/generations.jsonl"]
    local = client.download_artifacts(run_id, "eval/tiny_math/generations.jsonl", str(tmp_path / "dl"))
    generations = [json.loads(line) for line in Path(local).read_text().splitlines()]
    assert len(generations) == 8 and {g["id"] for g in generations} == {str(r["id"]) for r in rows}

    # the same store, asked for a run it does not hold: a user error, not a traceback
    with pytest.raises(ConfigError, match="neither a checkpoint folder nor a run id"):
        evaluate_run("0123456789abcdef", ["tiny_math"], samples=1, tracking_uri=uri)
