"""Arena-Hard-Auto (arena_hard suite): questions judged in both orders against a baseline's answers.

Data: arena-hard-auto's `question.jsonl`, v2.0 rows {"uid", "category", "prompt"} or v0.1 rows
{"question_id", "cluster", "turns": [{"content"}]}; the file's format picks the rules. The
baseline's answers come from `eval.judge.baseline_answers`: an arena-hard-auto
`model_answer/<model>.jsonl` (v2.0: {"uid", "model", "messages": [..., {"role": "assistant",
"content": {"answer"}}], "metadata": {"token_len"}}; v0.1: {"question_id", "choices": [{"turns":
[{"content"}]}]}) or a list of them.

- v0.1 (the paper's, evaluators/bradley_terry.py): answers merged by question id; `[[X]]` verdicts,
  an unparsable game dropped alone; Bradley-Terry against the baseline, score = its point win
  rate, 95% CI from 100 bootstrap rounds; metrics `score`, `score_se`, `ci_low`, `ci_high`.
- v2.0 (evaluators/arena_hard_v2.py): each category against its own baseline (creative_writing:
  gemini-2.0-flash-001's answers, the others o3-mini-2025-01-31's, chosen by the files' `model`);
  `[[X]]` then `[X]` verdicts; a question with an unparsable game dropped whole; score = mean
  of 100 bootstrap means, 90% CI; `score` etc. are hard_prompt's, `<category>_score` etc. each
  category's. Style control needs several models: evaluators/arena_style_control.py.

Both log `n_dropped_games` and the string `arena_hard_version` (an MLflow tag). Rows hold the
verdicts, battle scores, the judge's texts and the token counts style control needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.arena_hard_v2 import choose_baseline_answers, parse_verdict_v2, question_battles_v2, v2_metrics
from evaluators.bradley_terry import BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED, arena_hard_score, game_battles
from evaluators.data import read_json_records
from evaluators.judges import Comparison, make_judge
from evaluators.pairwise import generate_answers, judge_config, warn_stand_in_judge
from evaluators.registry import EvalGenerator, EvalOptions, Suite, register_suite
from harness.errors import DataError

log = logging.getLogger(__name__)

ARENA_PROTOCOL = (
    "one answer per question at T=0.6, top-p 0.9; judged in both orders; v0.1: Bradley-Terry win "
    "rate vs the baseline, 100-round bootstrap 95% CI; v2.0: per-category bootstrap mean, 90% CI"
)


def arena_question(record: dict, index: int) -> tuple[str, str, str | None]:
    """(id, prompt, category) from a v2.0 or v0.1 question record."""
    where = f"arena_hard question record {index} (id {record.get('uid')!r})"
    if isinstance(record.get("prompt"), str):
        prompt = record["prompt"]
    elif "turns" in record:
        turns = record["turns"]
        if not (
            isinstance(turns, list)
            and turns
            and isinstance(turns[0], dict)
            and isinstance(turns[0].get("content"), str)
        ):
            raise DataError(
                f'{where}: key \'turns\' is {turns!r:.100}; expected a list of {{"content": "..."}} (v0.1).'
            )
        prompt = turns[0]["content"]  # arena-hard judges the first turn
    else:
        raise DataError(f"{where}: has neither 'prompt' (v2.0 format) nor 'turns' (v0.1 format).")
    category = record.get("category") or record.get("cluster")
    return str(record["uid"]), prompt, category if isinstance(category, str) else None


def load_baseline_answers(path: str | Path) -> dict[str, str]:
    """question id -> the baseline's answer text, from an arena-hard-auto model_answer JSONL."""
    return read_answer_file(path).answers


@dataclass
class AnswerFile:
    """One model_answer file: its model (rows' `model`, else the file name), answers and token counts."""

    model: str
    answers: dict[str, str] = field(default_factory=dict)
    token_lens: dict[str, int] = field(default_factory=dict)  # metadata.token_len (v2.0 files: tiktoken gpt-4o)


def read_answer_file(path: str | Path) -> AnswerFile:
    result = AnswerFile(model=Path(path).stem)
    answers = result.answers
    for where, row in read_json_records(path):
        where = f"{path}, {where}"
        if not isinstance(row, dict):
            raise DataError(
                f"{where}: expected a JSON object (arena-hard-auto model answer), got {type(row).__name__}."
            )
        qid = row.get("uid", row.get("question_id"))
        if qid is None:
            raise DataError(f"{where}: answer has neither 'uid' (v2.0) nor 'question_id' (v0.1).")
        answers[str(qid)] = _answer_text(row, where)
        if isinstance(row.get("model"), str) and row["model"]:
            result.model = row["model"]
        token_len = (row.get("metadata") or {}).get("token_len") if isinstance(row.get("metadata"), dict) else None
        if isinstance(token_len, int):
            result.token_lens[str(qid)] = token_len
    return result


def _answer_text(row: dict, where: str) -> str:
    if "messages" in row:  # v2.0: the last message is the assistant's, content {"answer": ...} or text
        try:
            content = row["messages"][-1]["content"]
        except (TypeError, IndexError, KeyError):
            content = None
        if isinstance(content, dict):
            content = content.get("answer")
        if isinstance(content, str):
            return content
        raise DataError(
            f"{where}: key 'messages' has no final assistant content string "
            f"(expected messages[-1].content.answer or messages[-1].content)."
        )
    if "choices" in row:  # v0.1
        try:
            content = row["choices"][0]["turns"][0]["content"]
        except (TypeError, IndexError, KeyError):
            content = None
        if isinstance(content, str):
            return content
        raise DataError(f"{where}: key 'choices' has no choices[0].turns[0].content string (v0.1 format).")
    raise DataError(f"{where}: answer has neither 'messages' (v2.0) nor 'choices' (v0.1).")


def _baseline_answer_paths(config: dict) -> list[Path]:
    """`eval.judge.baseline_answers`: one model_answer file, or a list of them (merged by id)."""
    value = config.get("baseline_answers")
    paths = value if isinstance(value, list) else [value] if value else []
    if not paths or not all(isinstance(p, (str, Path)) and str(p) for p in paths):
        raise DataError(
            "arena_hard needs the baseline model's answers: set eval.judge.baseline_answers (or --judge "
            "baseline_answers=PATH) to arena-hard-auto's data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl "
            "(v0.1) or data/arena-hard-v2.0/model_answer/o3-mini-2025-01-31.jsonl (v2.0), from "
            "github.com/lmarena/arena-hard-auto or the hub data set lmarena-ai/arena-hard-auto; v2.0's "
            "creative_writing questions use gemini-2.0-flash-001's answers, so pass both files as a list."
        )
    return [Path(p) for p in paths]


def load_all_baseline_answers(paths: list[Path]) -> dict[str, str]:
    """The files' answers merged by question id (a later file's answer wins)."""
    answers: dict[str, str] = {}
    for path in paths:
        answers.update(load_baseline_answers(path))
    return answers


def arena_version(records: list[dict]) -> str:
    """ "v2.0" when every question has a `prompt` string (v2.0's format), "v0.1" when none has."""
    v2 = [isinstance(record.get("prompt"), str) for record in records]
    if all(v2):
        return "v2.0"
    if not any(v2):
        return "v0.1"
    other = v2.index(not v2[0])
    raise DataError(
        f"arena_hard question record {other} (id {records[other].get('uid')!r}) is in "
        f"{'v2.0' if v2[other] else 'v0.1'} format but record 0 is not; one question file holds one version."
    )


def score_arena_outputs(
    suite: Suite,
    records: list[dict],
    outputs: list[list[str]],
    options: EvalOptions,
    *,
    token_counts: list[list[int]] | None = None,
) -> tuple[dict, list[dict]]:
    config = judge_config(options)
    questions = [arena_question(record, i) for i, record in enumerate(records)]
    version = arena_version(records)
    answer_paths = _baseline_answer_paths(config)
    files = [read_answer_file(path) for path in answer_paths]
    merged = {qid: text for f in files for qid, text in f.answers.items()}
    missing = [qid for qid, _, _ in questions if qid not in merged]
    if missing:
        raise DataError(
            f"{', '.join(map(str, answer_paths))}: no baseline answer for question {missing[0]!r} "
            f"({len(missing)} missing); eval.judge.baseline_answers must cover every question."
        )
    by_model: dict[str, dict[str, str]] = {}
    for f in files:
        by_model.setdefault(f.model, {}).update(f.answers)
    if version == "v2.0":
        baselines, baseline_models = choose_baseline_answers(questions, by_model, merged, "eval.judge.baseline_answers")
    else:
        baselines = [merged[qid] for qid, _, _ in questions]
        baseline_models = [
            next((f.model for f in reversed(files) if qid in f.answers), None) for qid, _, _ in questions
        ]
    token_lens = {(f.model, qid): n for f in files for qid, n in f.token_lens.items()}
    warn_stand_in_judge(suite, config)
    judge = make_judge(config)
    flat = [(i, s) for i, outs in enumerate(outputs) for s in range(len(outs))]
    items = [Comparison(questions[i][1], outputs[i][s], baselines[i], questions[i][2]) for i, s in flat]
    games = judge.verdicts(items, version=version)
    rows, battles, dropped = [], [], 0
    for (i, s), item, (game1, game2) in zip(flat, items, games):
        if version == "v2.0":
            labels = [parse_verdict_v2(game1.judgment), parse_verdict_v2(game2.judgment)]
            scores = question_battles_v2(*labels)
            lost = sum(label is None for label in labels)
        else:
            labels = [game1.label, game2.label]
            scores, lost = game_battles(*labels)
        battles.append(scores)
        dropped += lost
        rows.append(
            {
                "id": questions[i][0],
                "sample_index": s,
                "category": item.category,
                "prompt": item.prompt,
                "output": item.model_output,
                "length": len(item.model_output),
                "num_tokens": token_counts[i][s] if token_counts else None,
                "baseline_model": baseline_models[i],
                "baseline_output": item.baseline_output,
                "baseline_num_tokens": token_lens.get((baseline_models[i], questions[i][0])),
                "verdicts": labels,
                "battle_scores": scores,
                "judge_output": [game1.judgment, game2.judgment],
            }
        )
    if dropped:
        log.warning(
            "%s: %d of %d judgments had no parsable verdict and were dropped%s",
            suite.name,
            dropped,
            2 * len(items),
            " with their question (v2.0)" if version == "v2.0" else "",
        )
    rounds = int(config.get("bootstrap_rounds", BOOTSTRAP_ROUNDS))
    if version == "v2.0":
        metrics = v2_metrics([item.category for item in items], battles, dropped, rounds=rounds, seed=BOOTSTRAP_SEED)
    else:
        result = arena_hard_score([x for b in battles for x in b], rounds=rounds, seed=BOOTSTRAP_SEED)
        metrics = {
            "score": result["score"],
            "score_se": result["score_se"],
            "ci_low": result["ci_low"],
            "ci_high": result["ci_high"],
            "n_battles": float(result["n_battles"]),
            "n_dropped_games": float(dropped),
            "arena_hard_version": "v0.1",
        }
    metrics.update(
        {
            "avg_len": sum(len(item.model_output) for item in items) / len(items),
            "n_problems": float(len(records)),
            "n_samples": float(len(items)),
        }
    )
    return metrics, rows


def evaluate_arena(
    suite: Suite, model_dir: Any, records: list[dict], generator: EvalGenerator, options: EvalOptions
) -> tuple[dict, list[dict]]:
    # check the baseline answers before spending time on generation
    load_all_baseline_answers(_baseline_answer_paths(judge_config(options)))
    prompts = [arena_question(record, i)[1] for i, record in enumerate(records)]
    outputs, counts = generate_answers(suite, prompts, generator, options)
    return score_arena_outputs(suite, records, outputs, options, token_counts=counts)


ARENA_HARD = register_suite(
    Suite(
        name="arena_hard",
        kind="pairwise",
        hub_name=None,
        data_format=(
            'arena-hard-auto\'s question.jsonl: v2.0 rows {"uid", "category", "prompt"} or v0.1 rows '
            '{"question_id", "cluster", "turns": [{"content"}]} (github.com/lmarena/arena-hard-auto, '
            "data/arena-hard-v2.0/question.jsonl); the baseline's answers go in eval.judge.baseline_answers"
        ),
        id_key="uid",
        prompt_template="{prompt}",
        prompt_key="prompt",
        description="Arena-Hard-Auto: hard user prompts judged pairwise in both orders against a baseline's answers.",
        protocol=ARENA_PROTOCOL,
        required_fields={"uid": (str, int)},
        optional_fields={"prompt": (str,), "turns": (list,), "category": (str,), "cluster": (str,)},
        key_aliases={"question_id": "uid"},
        evaluate=evaluate_arena,
        score_outputs=score_arena_outputs,
    )
)
