"""The `tiny_chat` suite: the embedded chat task's test split, judged against the seed policy.

The reward-model judge (the tiny reward model unless `eval.judge.model_dir` says otherwise)
compares each answer with the SEED policy's answer to the same prompt, generated with the same
sampling settings and cached on disk, keyed by a hash of the seed policy's files and the
sampling settings (`$HARNESS_CACHE/pairwise_baselines`). Metrics as for alpaca_eval
(evaluators/pairwise.py, whose scoring it shares), plus the task's hidden ground truth, which the
judge only imitates: `quality` = mean over prompts of each prompt's mean `harness.tiny.chat_task.quality`
over its samples (0..1), `quality_se` = std (ddof=1) of those per-prompt means / sqrt(prompts); each
row carries its sample's `quality`. Left out when a record lacks the hidden fields (a --data file
without `family`, `params`, `reference`). `eval.judge` keys: `baseline_policy` (the
seed policy folder, default the tiny policy), `baseline_cache_dir` (the answers cache).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from evaluators.judges import default_cache_root
from evaluators.pairwise import generate_answers, judge_config, score_preferences
from evaluators.registry import EvalGenerator, EvalOptions, Suite, register_suite
from harness.files import atomic_write_json
from harness.tasks import TRUTHS

HIDDEN_FIELDS = ("family", "params", "reference")  # what the tiny chat task's quality reads


def files_digest(folder: str | Path) -> str:
    """sha256 over every file's relative name and content in `folder` (the seed policy's identity)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def seed_baseline_outputs(
    prompts: list[str], options: EvalOptions, n: int, *, policy_dir: str | Path | None = None, device: str = "cpu"
) -> list[list[str]]:
    """The seed policy's n answers per prompt at the run's sampling settings, cached on disk."""
    config = judge_config(options)
    if policy_dir is None:
        policy_dir = config.get("baseline_policy")
    if policy_dir is None:
        from harness.tiny import ensure_tiny_assets

        policy_dir = ensure_tiny_assets().policy_dir
    sampling = {
        "n": n,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "max_new_tokens": options.max_new_tokens,
        "seed": options.seed,
    }
    key = hashlib.sha256(
        json.dumps(
            {"policy": files_digest(policy_dir), "sampling": sampling, "prompts": prompts}, sort_keys=True
        ).encode()
    ).hexdigest()
    cache_root = Path(config.get("baseline_cache_dir") or default_cache_root() / "pairwise_baselines")
    path = cache_root / f"{key}.json"
    cached = _read_cached_outputs(path, len(prompts), n)
    if cached is not None:
        return cached
    from harness.rollout import make_generator

    backend = make_generator("hf", policy_dir, device=device, batch_size=options.batch_size)
    seed_generator = EvalGenerator(backend=backend, tokenizer=backend.tokenizer, options=options)
    outputs = [[r.text for r in group] for group in seed_generator.generate(prompts, n=n, desc="seed baseline")]
    atomic_write_json(path, {"policy_dir": str(policy_dir), "sampling": sampling, "outputs": outputs})
    return outputs


def _read_cached_outputs(path: Path, count: int, n: int) -> list[list[str]] | None:
    try:
        outputs = json.loads(path.read_text(encoding="utf-8"))["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(outputs) == count and all(len(group) == n for group in outputs):
        return outputs
    return None


def score_tiny_chat_outputs(
    suite: Suite,
    records: list[dict],
    outputs: list[list[str]],
    options: EvalOptions,
    *,
    token_counts: list[list[int]] | None = None,
    device: str = "cpu",
) -> tuple[dict[str, float], list[dict]]:
    prompts = [suite.render_prompt(record) for record in records]
    n = max(len(outs) for outs in outputs)
    seed_outputs = seed_baseline_outputs(prompts, options, n, device=device)
    baselines = [seed_outputs[i][: len(outs)] for i, outs in enumerate(outputs)]
    metrics, rows = score_preferences(suite, records, prompts, outputs, baselines, options, token_counts=token_counts)
    if all(all(key in record for key in HIDDEN_FIELDS) for record in records):
        scores = [[TRUTHS.get("tiny_chat")(record, out) for out in outs] for record, outs in zip(records, outputs)]
        metrics.update(truth_quality(scores))
        for row, value in zip(rows, (q for qs in scores for q in qs)):  # rows follow (prompt, sample) order
            row["quality"] = value
    return metrics, rows


def truth_quality(scores: list[list[float]]) -> dict[str, float]:
    """`quality` and `quality_se` from per-sample hidden quality, grouped by prompt: the mean of the
    per-prompt means, and their std (ddof=1) / sqrt(prompts) (samples of one prompt are not independent)."""
    means = [sum(qs) / len(qs) for qs in scores if qs]
    mean = sum(means) / len(means)
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means)) if len(means) > 1 else math.nan
    return {"quality": mean, "quality_se": se}


def evaluate_tiny_chat(
    suite: Suite, model_dir: Any, records: list[dict], generator: EvalGenerator, options: EvalOptions
) -> tuple[dict[str, float], list[dict]]:
    outputs, counts = generate_answers(suite, [suite.render_prompt(r) for r in records], generator, options)
    device = str(getattr(generator.backend, "device", "cpu"))
    return score_tiny_chat_outputs(suite, records, outputs, options, token_counts=counts, device=device)


def _tiny_chat_test_file() -> Path:
    from harness.tiny import ensure_tiny_assets

    return ensure_tiny_assets().data_dir / "chat" / "test.jsonl"


TINY_CHAT = register_suite(
    Suite(
        name="tiny_chat",
        kind="pairwise",
        hub_name=None,
        data_format='the embedded tiny chat task\'s chat/test.jsonl (JSONL rows {"id", "prompt"}), built by harness.tiny.ensure_tiny_assets()',
        id_key="id",
        prompt_template="{prompt}",
        prompt_key="prompt",
        description="Embedded tiny instruction task, judged by the tiny reward model against the seed policy.",
        protocol="one answer per prompt at the eval sampling settings; reward-model judge vs the seed policy's answers; LC win rate",
        required_fields={"id": (str, int), "prompt": (str,)},
        default_data=_tiny_chat_test_file,
        evaluate=evaluate_tiny_chat,
        score_outputs=score_tiny_chat_outputs,
    )
)
