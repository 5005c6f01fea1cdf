"""The lm-evaluation-harness task definitions agree with the harness's own evaluator.

With greedy decoding, `lm_eval.simple_evaluate(model="hf", ...)` on `harness_tiny_math` and
`evaluate_checkpoint(..., temperature=0)` on `tiny_math` see the same chat-formatted prompt,
generate the same text for every problem and grade it the same way (Math-Verify), so the
scores agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evaluators
from evaluators.registry import get_suite
from evaluators.checkpoint_eval import evaluate_checkpoint

pytestmark = pytest.mark.slow  # lm-eval and harness eval on the tiny model

TASKS_DIR = Path(evaluators.__file__).parent / "lm_eval_tasks"
N_PROBLEMS = 16
MAX_NEW_TOKENS = 48


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_task_definitions_are_discoverable_and_use_the_suite_prompts():
    from lm_eval.tasks import TaskManager

    import importlib.util

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert {"harness_math500", "harness_amc23", "harness_numinamath", "harness_tiny_math"} <= set(manager.all_tasks)
    spec = importlib.util.spec_from_file_location("harness_lm_eval_utils", TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = {"problem": "What is $13 + 14$?", "answer": 27.0}
    assert utils.doc_to_text_paper(doc) == get_suite("amc23").render_prompt(doc)
    assert utils.doc_to_text_tiny(doc) == get_suite("tiny_math").render_prompt(doc)
    assert utils.process_results(doc, ["... $\\boxed{27}$"]) == {"pass_at_1": 1.0}
    assert utils.process_results(doc, ["... $\\boxed{28}$"]) == {"pass_at_1": 0.0}


def test_lm_eval_greedy_score_equals_harness_evaluator(tiny_assets, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    rows = [json.loads(line) for line in (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()]
    data = tmp_path / "tiny16.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows[:N_PROBLEMS]))

    ours = evaluate_checkpoint(
        tiny_assets.policy_dir,
        ["tiny_math"],
        samples=1,
        temperature=0.0,
        data_paths={"tiny_math": str(data)},
        max_new_tokens=MAX_NEW_TOKENS,
        batch_size=N_PROBLEMS,
        out_dir=tmp_path / "ours",
        show_progress=False,
    )["tiny_math"]
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_file": str(data)})
    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_assets.policy_dir), "dtype": "float32", "device": "cpu"},
        tasks=["harness_tiny_math"],
        task_manager=manager,
        apply_chat_template=True,
        gen_kwargs={"do_sample": False, "temperature": 0.0, "max_gen_toks": MAX_NEW_TOKENS},
        batch_size=N_PROBLEMS,
        log_samples=True,
    )

    # Same text for every problem...
    lm_outputs = {str(s["doc"]["id"]): s["resps"][0][0] for s in theirs["samples"]["harness_tiny_math"]}
    generations = [
        json.loads(line) for line in (tmp_path / "ours" / "tiny_math" / "generations.jsonl").read_text().splitlines()
    ]
    assert len(lm_outputs) == len(generations) == N_PROBLEMS
    assert {g["id"]: g["output"] for g in generations} == lm_outputs
    # ...hence the same score (lm-eval reports a fraction, the harness percent).
    lm_score = theirs["results"]["harness_tiny_math"]["pass_at_1,none"]
    assert 100.0 * lm_score == pytest.approx(ours["pass_at_1"])
    assert ours["pass_at_1"] > 0.0  # the comparison is not between two all-wrong runs
