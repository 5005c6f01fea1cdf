"""A real MLflow store filled the way the trainer and the sweep fill it, for the dashboard tests.

    info = fill_store("sqlite:////tmp/x/mlflow.db")

creates one sweep experiment: a parent run (`harness.kind=sweep`) and child training runs for
dpo s=inf/10/1 and grpo s=1 on the verifiable and non_verifiable task mixes, two seeds each, plus
a seed-model baseline run (`method=seed`). Every child gets step-wise metric histories, a
`selected_step`, evaluation metrics with their standard errors (named as evaluators/ logs
them: `pass_at_1`, `lc_winrate`, `score` + `ci_low`/`ci_high`), `config.yaml`, `checkpoints.json`
and `eval/<suite>/generations.jsonl` (6 rows; `eval_final/...`: 4) whose outputs include HTML
and markdown tricks (the dashboard must show them as inert text). Everything goes through the real
`MlflowClient`, so the store is what a real sweep leaves behind. Values are deterministic.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

SWEEP_NAME = "demo-sweep"
STEPS = 40
VAL_EVERY = 10
SEEDS = (0, 1)
TASK_MIXES = ("verifiable", "non_verifiable")
CELLS = (("dpo", "inf"), ("dpo", "10"), ("dpo", "1"), ("grpo", "1"))
XSS_OUTPUTS = (
    "<script>alert(1)</script>",
    "**bold** [link](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
)
SUITES_BY_MIX = {"verifiable": ("tiny_math",), "non_verifiable": ("tiny_chat", "arena_hard")}


def artifact_root_for(tracking_uri: str) -> str:
    """Artifacts live next to a sqlite file (so everything stays under the test's tmp dir)."""
    if tracking_uri.startswith("sqlite:///"):
        return str(Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts")
    raise ValueError(f"fill_store expects a sqlite:/// URI, got {tracking_uri!r}")


def ref_sync_for(method: str, sync_every: str, task_mix: str) -> str:
    """The paper's default: the reference follows the generator only for verifiable online DPO."""
    follows = method == "dpo" and task_mix == "verifiable" and sync_every != "inf"
    return sync_every if follows else "inf"


def eval_scores(method: str, sync_every: str, task_mix: str, seed: int) -> dict[str, float]:
    """Deterministic evaluation metrics named as evaluators/ logs them: online beats offline,
    seeds differ a little, scores in percent."""
    online = {"inf": 0.0, "10": 0.8, "1": 1.0}.get(sync_every, 0.0) if method == "dpo" else 0.9
    jitter = (seed + 1) * (1 if seed % 2 == 0 else -1)
    out: dict[str, float] = {}
    if task_mix == "verifiable":
        value = 30.0 + 20.0 * online + jitter
        out["eval/tiny_math/pass_at_1"] = value
        out["eval/tiny_math/pass_at_1_se"] = round(math.sqrt(value * (100 - value) / 200), 4)
        out["eval/tiny_math/n_problems"] = 50.0
        out["eval/tiny_math/n_samples"] = 200.0
        out["eval/tiny_math/mean_length"] = 41.5
    else:
        win = 40.0 + 30.0 * online + jitter
        out["eval/tiny_chat/lc_winrate"] = win
        out["eval/tiny_chat/lc_winrate_se"] = 1.5
        out["eval/tiny_chat/winrate"] = win + 3.0
        out["eval/tiny_chat/winrate_se"] = 1.6
        score = 30.0 + 25.0 * online + jitter
        out["eval/arena_hard/score"] = score
        out["eval/arena_hard/score_se"] = 1.0
        out["eval/arena_hard/ci_low"] = score - 2.0
        out["eval/arena_hard/ci_high"] = score + 2.0
        out["eval/arena_hard/n_battles"] = 100.0
    out.update({key.replace("eval/", "eval_final/", 1): v - 0.5 for key, v in list(out.items())})
    return out


def step_metrics(method: str, sync_every: str, task_mix: str, seed: int) -> dict[str, list[tuple[int, float]]]:
    """Per-step histories that show the paper's observations (entropy collapse, length growth)."""
    rng = random.Random(f"{method}-{sync_every}-{task_mix}-{seed}")
    s = math.inf if sync_every == "inf" else int(sync_every)
    ref_every = ref_sync_for(method, sync_every, task_mix)
    r = math.inf if ref_every == "inf" else int(ref_every)
    collapse = 0.0 if s == math.inf else (0.04 if task_mix == "verifiable" else 0.01)
    growth = 1.5 if task_mix == "non_verifiable" else 0.2
    hist: dict[str, list[tuple[int, float]]] = {}

    def add(key: str, step: int, value: float) -> None:
        hist.setdefault(key, []).append((step, round(value, 5)))

    for step in range(1, STEPS + 1):
        add("train/loss", step, 0.69 * math.exp(-step / 30) + 0.01 * rng.random())
        add("train/reward_mean", step, 0.3 + 0.01 * step + 0.02 * rng.random())
        add("train/entropy", step, 1.2 * math.exp(-collapse * step) + 0.01 * rng.random())
        add("train/response_len", step, 40 + growth * step + rng.random())
        add("train/kl", step, 0.001 * step)
        add("train/generator_staleness", step, 0 if s == math.inf else (step - 1) % s)
        add("train/ref_staleness", step, (step - 1) % r if r != math.inf else step - 1)
        add("time/generate_s", step, (2.0 if s == 1 else 0.6) + 0.1 * rng.random())
        # a worker generating ahead: the trainer waits for every rollout at s=1, for a share of them beyond
        add("time/generate_wait_s", step, hist["time/generate_s"][-1][1] * (1.0 if s == 1 else 0.25))
        add("time/score_s", step, 0.3)
        add("time/train_s", step, 1.0)
        add("time/sync_s", step, 0.2 if s != math.inf and (step - 1) % s == 0 else 0.0)
        if method == "dpo":
            add("train/pairs", step, 8 + rng.randint(0, 8))
        if step % VAL_EVERY == 0:
            reward = 0.3 + 0.008 * step + 0.02 * rng.random()
            length = 40 + growth * step
            add("val/reward", step, reward)
            add("val/response_len", step, length)
            add("val/len_norm_reward", step, reward / length * (1.2 if step == 2 * VAL_EVERY else 1.0))
            add("val/entropy", step, 1.1 * math.exp(-collapse * step))
    return hist


def log_history(client: MlflowClient, run_id: str, hist: dict[str, list[tuple[int, float]]]) -> None:
    """One log_batch per 900 points: far faster than log_metric on sqlite."""
    now = int(time.time() * 1000)
    points = [Metric(key, value, now + step, step) for key, series in hist.items() for step, value in series]
    for start in range(0, len(points), 900):
        client.log_batch(run_id, metrics=points[start : start + 900])


def generations_jsonl(task_mix: str, count: int = 6) -> str:
    rows = []
    for index in range(count):
        output = XSS_OUTPUTS[index] if index < len(XSS_OUTPUTS) else f"The final answer is $\\boxed{{{index}}}$."
        correct = index % 2 == 1
        row = {
            "id": f"q{index}",
            "sample_index": 0,
            "prompt": f"What is {index} + {index}?",
            "output": output,
            "length": len(output),
            "finish_reason": "stop",
        }
        if task_mix == "verifiable":
            row.update(gold=str(2 * index), score=1.0 if correct else 0.0, correct=correct)
        else:
            row.update(verdict="win" if correct else "loss", score=1.0 if correct else 0.0)
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


def log_train_run(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str | None,
    method: str,
    sync_every: str,
    task_mix: str,
    seed: int,
    trial: int,
) -> dict:
    ref = ref_sync_for(method, sync_every, task_mix)
    cell_key = f"method={method},sync_every={sync_every},task_mix={task_mix}"
    tags = {
        "harness.kind": "train",
        "method": method,
        "sync_every": sync_every,
        "ref_sync_every": ref,
        "task_mix": task_mix,
        "seed": str(seed),
        "cell_key": cell_key,
        "harness.study": SWEEP_NAME,
        "harness.trial": str(trial),
    }
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    name = f"{method}-s{sync_every}-{task_mix}-seed{seed}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    beta = 0.1 if task_mix == "verifiable" else 0.01
    params = {
        "method": method,
        "sync_every": sync_every,
        "ref_sync_every": ref,
        "task_mix": task_mix,
        "seed": str(seed),
        "train.lr": "1e-06",
        "train.steps": str(STEPS),
        "dpo.beta": str(beta),
        "grpo.kl_coef": "0.001",
        "train.adam_eps": "0.0001" if task_mix == "verifiable" else "1e-08",
    }
    hist = step_metrics(method, sync_every, task_mix, seed)
    lnr = hist["val/len_norm_reward"]
    selected = max(lnr, key=lambda point: point[1])[0]
    scores = eval_scores(method, sync_every, task_mix, seed)
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    log_history(client, run_id, hist)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[Metric("selected_step", selected, now, 0)] + [Metric(k, v, now, 0) for k, v in scores.items()]
    )
    client.log_text(run_id, "\n".join(f"{k}: {v}" for k, v in params.items()) + "\n", "config.yaml")
    checkpoints = [
        {"step": step, "path": f"checkpoints/step_{step}", "validated": True, "val/len_norm_reward": value}
        for step, value in lnr
    ]
    client.log_text(run_id, json.dumps(checkpoints, indent=1), "checkpoints.json")
    for suite in SUITES_BY_MIX[task_mix]:
        client.log_text(run_id, generations_jsonl(task_mix), f"eval/{suite}/generations.jsonl")
        client.log_text(run_id, generations_jsonl(task_mix, 4), f"eval_final/{suite}/generations.jsonl")
    client.set_terminated(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "run_name": name,
        "method": method,
        "sync_every": sync_every,
        "ref_sync_every": ref,
        "task_mix": task_mix,
        "seed": seed,
        "selected_step": selected,
        "scores": scores,
        "history": hist,
        "params": params,
    }


def log_seed_run(client: MlflowClient, experiment_id: str, parent_id: str) -> dict:
    """The seed model evaluated on every suite, once; it belongs to no task mix."""
    tags = {
        "harness.kind": "train",
        "method": "seed",
        "sync_every": "-",
        "ref_sync_every": "-",
        "task_mix": "-",
        "seed": "0",
        "mlflow.parentRunId": parent_id,
    }
    run = client.create_run(experiment_id, run_name="seed-model", tags=tags)
    scores = {
        "eval/tiny_math/pass_at_1": 25.0,
        "eval/tiny_math/pass_at_1_se": 3.0,
        "eval/tiny_chat/lc_winrate": 27.3,
        "eval/tiny_chat/lc_winrate_se": 1.4,
        "eval/arena_hard/score": 21.3,
        "eval/arena_hard/ci_low": 19.0,
        "eval/arena_hard/ci_high": 23.5,
    }
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in scores.items()], params=[Param("method", "seed")]
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return {"run_id": run.info.run_id, "scores": scores}


def fill_store(tracking_uri: str) -> dict:
    """Fill a fresh store with one finished sweep; returns what was logged, for assertions."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(SWEEP_NAME, artifact_location=artifact_root_for(tracking_uri))
    parent = client.create_run(
        experiment_id, run_name=SWEEP_NAME, tags={"harness.kind": "sweep", "harness.sweep": SWEEP_NAME}
    )
    parent_id = parent.info.run_id
    runs = []
    for task_mix in TASK_MIXES:
        for method, sync_every in CELLS:
            for seed in SEEDS:
                runs.append(
                    log_train_run(client, experiment_id, parent_id, method, sync_every, task_mix, seed, trial=len(runs))
                )
    seed_run = log_seed_run(client, experiment_id, parent_id)
    client.set_terminated(parent_id, "FINISHED")
    return {
        "experiment_id": experiment_id,
        "parent_run_id": parent_id,
        "runs": runs,
        "seed_run": seed_run,
        "n_train_runs": len(runs),
        "task_mixes": list(TASK_MIXES),
        "sweep": SWEEP_NAME,
        "xss_outputs": list(XSS_OUTPUTS),
    }


def add_running_run(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str:
    """A trial still training: RUNNING, a few steps of history, no evaluation metrics yet."""
    client = MlflowClient(tracking_uri)
    tags = {
        "harness.kind": "train",
        "method": "dpo",
        "sync_every": "5",
        "ref_sync_every": "inf",
        "task_mix": "non_verifiable",
        "seed": "0",
        "mlflow.parentRunId": parent_run_id,
    }
    run = client.create_run(experiment_id, run_name="dpo-s5-non_verifiable-seed0", tags=tags)
    hist = {"train/loss": [(1, 0.69), (2, 0.68)], "train/entropy": [(1, 1.2), (2, 1.19)]}
    log_history(client, run.info.run_id, hist)
    return run.info.run_id


def add_unevaluated_run(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str:
    """A finished trial whose evaluation never got logged (crashed evaluator, say)."""
    client = MlflowClient(tracking_uri)
    tags = {
        "harness.kind": "train",
        "method": "grpo",
        "sync_every": "1",
        "ref_sync_every": "inf",
        "task_mix": "verifiable",
        "seed": "7",
        "mlflow.parentRunId": parent_run_id,
    }
    run = client.create_run(experiment_id, run_name="grpo-s1-verifiable-seed7", tags=tags)
    log_history(client, run.info.run_id, {"train/loss": [(1, 0.5)]})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def clone_store(tracking_uri: str, dest_dir: Path) -> str:
    """A copy of a filled sqlite store (artifacts stay where they are), to change without
    touching the original and without paying MLflow's database creation again."""
    source = Path(tracking_uri[len("sqlite:///") :])
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest_dir / source.name)
    return f"sqlite:///{dest_dir / source.name}"


def add_failed_run(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str:
    """A trial that crashed: FAILED, with the sweep's `harness.error` tag (its log tail)."""
    client = MlflowClient(tracking_uri)
    tags = {
        "harness.kind": "train",
        "method": "dpo",
        "sync_every": "100",
        "ref_sync_every": "100",
        "task_mix": "verifiable",
        "seed": "0",
        "mlflow.parentRunId": parent_run_id,
        "harness.error": "Traceback ...\nRuntimeError: CUDA out of memory",
    }
    run = client.create_run(experiment_id, run_name="dpo-s100-verifiable-seed0", tags=tags)
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id
