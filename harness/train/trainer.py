"""The training loop: offline, semi-online and online DPO and GRPO, in one readable function.

    harness train sweeps/runs/tiny.yaml method=dpo sync_every=5

One optimizer step, top to bottom:
  1. sync: every `sync_every` steps the generator receives the trainer's weights (inf: never,
     so every rollout comes from the seed); every `ref_sync_every` steps the reference does.
  2. generate: n rollouts per prompt from the (possibly stale) generator, checked against the
     sync schedule; with `rollout.placement: worker` they were generated ahead, in another process.
  3. score: each prompt by its own reward function (Math-Verify or the reward model).
  4. train: DPO on pairs, or GRPO on group-centred advantages (harness/train/update_rules.py);
     one AdamW step.
Validation, checkpoints and MLflow logging happen around that. Nothing here knows of sweeps.
Under `torchrun ... train.parallel=fsdp` the same loop runs on every rank (harness/distributed.py):
rank 0 generates and scores, everything it produces is broadcast, each rank trains on its share.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from harness import distributed
from harness.chat import chat_prompt
from harness.config import RunConfig, flatten, format_interval
from harness.errors import HarnessError
from harness.files import output_dir_of
from harness.models import resolve_paths
from harness.rewards import make_reward_router
from harness.precision import autocast, inference_dtype, torch_dtype
from harness.preemption import Preempted, PreemptionWatch
from harness.rollout import Generator, Rollout, SamplingParams, generator_options, make_generator
from harness.rollout.placement import open_rollouts, open_validator, push_policy
from harness.rollout.schedule import StepPlan, check_generator_version, due
from harness.selection import CheckpointEntry
from harness.train.sequences import chunks, pack, policy_logprobs
from harness.tasks import TaskMixture, task_pools, task_types, truth_scores
from harness.tracking import NullTracker, atomic_write_text
from harness.train.profile import phase, profiled_step
from harness.train.setup import build_models
from harness.train.state import LoopState, restore, save, validation_due
from harness.train.update_rules import dpo_update, grpo_update

log = logging.getLogger("harness.train")


class TrainingDiverged(HarnessError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_id: str | None
    output_dir: Path
    checkpoints: list[CheckpointEntry]  # the run's listing (harness.selection), as in checkpoints.json
    final_val: dict[str, float]


def train(cfg: RunConfig, tracker=None, resume: bool = False, progress: bool = True) -> TrainResult:
    distributed.check_launch(cfg)
    dist = distributed.setup(cfg)
    try:
        return _train(
            cfg, tracker if dist.is_main and tracker else NullTracker(), resume, progress and dist.is_main, dist
        )
    finally:
        dist.close()


def _train(cfg: RunConfig, tracker, resume: bool, progress: bool, dist: distributed.Dist) -> TrainResult:
    if cfg.model.cpu_threads:
        # Tiny matmuls gain nothing from more threads, and OpenMP threads that outnumber free
        # cores (parallel sweep trials) spin-wait and slow every op by 10x or more.
        torch.set_num_threads(cfg.model.cpu_threads)
    torch.manual_seed(cfg.seed)
    output_dir = output_dir_of(cfg)
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "config.yaml", cfg.to_yaml())
    policy_path, reward_model_path = resolve_paths(cfg)

    pools, val_pools, long_prompts = prompt_pools(cfg, policy_path)
    mixture = TaskMixture(pools, cfg.data.joint_verifiable_fraction, cfg.seed)
    sampling = SamplingParams(
        n=cfg.train.samples_per_prompt,
        temperature=cfg.train.temperature,
        top_p=cfg.train.top_p,
        max_new_tokens=cfg.train.max_new_tokens,
        return_logprobs=cfg.method == "grpo" and cfg.grpo.importance_sampling,
    )
    rollout_options = generator_options(cfg)  # checks the launcher's generator devices, if any
    # The generator's dtype: syncs and validation gather the policy in it, on rank 0.
    generator_dtype = torch_dtype(rollout_options.get("dtype") or inference_dtype(cfg))

    def open_generator(policy, tokenizer):
        """Rank 0, before sharding. rollout.placement: colocated (a copy here, generated when due) or
        worker (its own process, fed snapshots, running ahead within the sync window)."""
        plan = StepPlan(
            mixture, cfg.train.prompts_per_step, sampling, cfg.seed, lambda text: chat_prompt(tokenizer, text)
        )
        return open_rollouts(
            cfg,
            policy,
            tokenizer,
            plan,
            lambda: make_generator(cfg.rollout.backend, policy, tokenizer, **rollout_options),
        )

    models = build_models(cfg, policy_path, dist, open_generator)
    policy, reference, generator, tokenizer = models.policy, models.reference, models.generator, models.tokenizer
    optimizer, device = models.optimizer, str(models.device)
    # Validation samples the current policy through the same backend: hf in one process, the
    # module itself; otherwise the run's one generator (rank 0's), given the gathered weights for
    # the call and its snapshot back (open_validator).
    validator = open_validator(cfg, policy, tokenizer, generator, dist, rollout_options, generator_dtype)
    rewards = build_rewards(cfg, reward_model_path, device) if dist.is_main else None  # rank 0 scores
    pair_rng = torch.Generator()

    state = LoopState()
    if resume:
        state = restore(output_dir, cfg, models, dist)
    if state.step == 0:  # a fresh run, or --resume before any checkpoint existed
        tracker.log_params(
            {**{k: v for k, v in flatten(cfg.to_dict()).items()}, "ref_sync_every": format_interval(cfg.ref_sync_every)}
        )
        tracker.log_text(cfg.to_yaml(), "config.yaml")
        if cfg.data.max_prompt_tokens:
            tracker.log_metrics(
                {f"data/long_prompts_{'dropped' if cfg.data.long_prompts == 'drop' else 'cut'}": long_prompts}, step=0
            )

    log.info(
        "training %s: %s, sync_every=%s, ref_sync_every=%s, %d steps of %d prompts x %d samples",
        cfg.run_name,
        cfg.method,
        format_interval(cfg.sync_every),
        format_interval(cfg.ref_sync_every),
        cfg.train.steps,
        cfg.train.prompts_per_step,
        cfg.train.samples_per_prompt,
    )
    if dist.is_main:
        generator.start(state.step)  # a worker starts on the first window while the seed is validated
    if state.step == 0:
        val = validate(cfg, validator, policy, val_pools, rewards)
        tracker.log_metrics(val, step=0)
        log_validation(0, val)
    bar = _progress_bar(cfg.train.steps, state.step, progress)
    val: dict[str, float] = {}
    watch = PreemptionWatch()  # SIGTERM / SIGUSR1: finish the step, checkpoint, exit for a requeue
    try:
        while state.step < cfg.train.steps:
            metrics = {}
            with profiled_step(cfg.train, state.step + 1, output_dir, models.device, dist):
                # 1. sync (before this step's rollouts, so steps k*s .. k*s+s-1 share one snapshot)
                with phase("sync", metrics):
                    if due(state.step, cfg.sync_every) and state.step > 0:
                        push_policy(generator, policy, dist, generator_dtype)
                        state.last_sync = state.step
                    if due(state.step, cfg.ref_sync_every) and state.step > 0:
                        distributed.copy_weights(reference, policy, dist)
                        state.last_ref_sync = state.step
                metrics["train/generator_staleness"] = state.step - state.last_sync
                metrics["train/ref_staleness"] = state.step - state.last_ref_sync

                # 2. generate (the step's seed comes from the run seed and the step index; a worker may
                #    have generated it ahead, from the same snapshot, while the trainer trained). Rank 0
                #    talks to the generator; every rank trains on the same broadcast rollouts.
                with phase("generate"):  # its time is the generator's own: time/generate_s, time/generate_wait_s
                    produced = dist.broadcast(generator.rollouts(state.step) if dist.is_main else None)
                check_generator_version(state.step, produced.version, cfg.sync_every)
                records, groups = produced.records, produced.groups
                metrics["train/generator_version"] = produced.version
                metrics["time/generate_s"] = produced.generate_s
                metrics["time/generate_wait_s"] = produced.wait_s

                # 3. score
                with phase("score", metrics):
                    flat = [rollout for group in groups for rollout in group]
                    scored = (
                        rewards.score([records[r.prompt_index] for r in flat], [r.text for r in flat])
                        if dist.is_main
                        else None
                    )
                    scored = dist.broadcast(scored)
                    reward_grid = torch.tensor(scored.rewards, dtype=torch.float32).view(len(groups), -1)
                metrics.update(scored.stats)

                # 4. train
                with phase("train", metrics):
                    set_lr(optimizer, cfg, state.step)
                    pair_rng.manual_seed(cfg.seed * 1_000_003 + state.step)  # stateless: resume draws the same pairs
                    with autocast(cfg.model.compute_dtype, models.device, sharded=dist.enabled):
                        if cfg.method == "dpo":
                            step_stats = dpo_update(
                                cfg, policy, reference, tokenizer, records, groups, reward_grid, pair_rng, dist
                            )
                        else:
                            step_stats = grpo_update(cfg, policy, reference, tokenizer, groups, reward_grid, dist)
                    if not math.isfinite(step_stats["train/loss"]):
                        raise TrainingDiverged(
                            f"step {state.step + 1}: the loss is {step_stats['train/loss']} (diverged). Lower "
                            f"train.lr (now {cfg.train.lr}) or raise train.adam_eps (now {cfg.train.adam_eps}; "
                            f"the paper uses 1e-4 for math DPO)."
                        )
                    if step_stats.pop("_has_grad"):
                        metrics["train/grad_norm"] = distributed.clip_grad_norm(policy, cfg.train.grad_clip)
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.step += 1
                metrics.update(step_stats)
                metrics["train/reward_mean"] = float(reward_grid.mean())
                metrics["train/response_len"] = sum(r.length for r in flat) / len(flat)
                metrics["train/generated_tokens"] = sum(r.length for r in flat)
                tracker.log_metrics(metrics, step=state.step)

                if validation_due(cfg, state.step):
                    with phase("validate"):
                        val = validate(cfg, validator, policy, val_pools, rewards)
                    tracker.log_metrics(val, step=state.step)
                    log_validation(state.step, val)
            preempted = watch.requested(dist)
            if state.step % cfg.checkpoint.every == 0 or state.step == cfg.train.steps or preempted:
                save(output_dir, cfg, state, models, val, tracker, dist)
            bar.update(1)
            bar.set_postfix(
                reward=f"{metrics['train/reward_mean']:.3f}",
                loss=f"{metrics['train/loss']:.3f}",
                stale=metrics["train/generator_staleness"],
                refresh=False,
            )
            if preempted and state.step < cfg.train.steps:
                raise Preempted(
                    f"{cfg.run_name}: {watch.signal_name()} received; stopped after step {state.step} of "
                    f"{cfg.train.steps} with a checkpoint in {output_dir}. Resume with `harness train ... --resume` "
                    f"(exit code {Preempted.exit_code} asks a launcher to requeue it)."
                )
    finally:
        watch.close()
        bar.close()
        if generator is not None:
            generator.close()
        if rewards is not None:
            rewards.close()
    return TrainResult(tracker.run_id, output_dir, state.checkpoints, val)


def prompt_pools(cfg: RunConfig, policy_path: str) -> tuple[dict, dict, int]:
    """Training and validation prompt pools, over-long prompts dropped or cut (`data.max_prompt_tokens`)."""
    pools = task_pools(cfg.task_mix, cfg.data, "train")
    val_pools = task_pools(cfg.task_mix, cfg.data, "validation")
    changed = 0
    if cfg.data.max_prompt_tokens:
        from harness.models import load_tokenizer
        from harness.train.prompt_limit import limit_pools

        tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
        pools, changed = limit_pools(pools, tokenizer, cfg.data, "train")
        val_pools, _ = limit_pools(val_pools, tokenizer, cfg.data, "validation")
    return pools, {task: records[: cfg.validation.prompts] for task, records in val_pools.items()}, changed


def build_rewards(cfg: RunConfig, reward_model_path: str | None, device: str):
    """One reward function per task type the mix uses, chosen by name in config."""
    options = {
        "math_verify": {"workers": cfg.rewards.math_verify_workers, "timeout_s": cfg.rewards.math_verify_timeout_s},
        "reward_model": {
            "model_dir": reward_model_path,
            "device": device,
            "batch_size": cfg.rewards.reward_model_batch_size,
            "dtype": cfg.rewards.reward_model_dtype,
        },
    }
    types = task_types(cfg.task_mix)
    return make_reward_router(
        cfg.rewards.verifiable if "verifiable" in types else None,
        cfg.rewards.non_verifiable if "non_verifiable" in types else None,
        options,
    )


def log_validation(step: int, val: dict[str, float]) -> None:
    log.info(
        "validation at step %d: reward %.3f, response length %.1f tokens, length-normalized %.5f, entropy %.3f",
        step,
        val["val/reward"],
        val["val/response_len"],
        val["val/len_norm_reward"],
        val["val/entropy"],
    )


def set_lr(optimizer: torch.optim.Optimizer, cfg: RunConfig, step: int) -> None:
    scale = min(1.0, (step + 1) / cfg.train.warmup_steps) if cfg.train.warmup_steps else 1.0
    for group in optimizer.param_groups:
        group["lr"] = cfg.train.lr * scale


# -- validation ------------------------------------------------------


@torch.no_grad()
def validate(cfg: RunConfig, validator: Generator, policy, pools: dict[str, list[dict]], rewards) -> dict:
    """One sample per held-out prompt from the current policy: reward, length, their ratio, entropy; and
    `quality`, the mean hidden ground truth over the prompts whose task carries one (harness.tasks), scored
    with the rewards (rank 0)."""
    metrics: dict[str, float] = {}
    totals = {"reward": 0.0, "len": 0.0, "entropy": 0.0, "count": 0}
    truths: list[float] = []
    params = SamplingParams(
        n=1,
        temperature=cfg.validation.temperature,
        top_p=cfg.validation.top_p,
        max_new_tokens=cfg.train.max_new_tokens,
        seed=cfg.seed,
    )
    policy.eval()  # (under FSDP every rank scores the same broadcast samples: the forwards are collective)
    # One generate call for every pool (one weight gather and push); each pool keeps its own keys
    # 0..n-1, so its samples are those of a call of its own.
    prompts = [chat_prompt(validator.tokenizer, r["prompt"]) for records in pools.values() for r in records]
    keys = [i for records in pools.values() for i in range(len(records))]
    samples = [group[0] for group in validator.generate(prompts, params, keys)]
    for task, records in pools.items():
        rollouts, samples = samples[: len(records)], samples[len(records) :]
        scores = rewards.score(records, [r.text for r in rollouts]).rewards if rewards else [0.0] * len(rollouts)
        ent = validation_entropy(cfg, policy, rollouts, validator.tokenizer.pad_token_id)
        reward = sum(scores) / len(scores)
        length = sum(r.length for r in rollouts) / len(rollouts)
        if len(pools) > 1:
            metrics.update(
                {
                    f"val/{task}/reward": reward,
                    f"val/{task}/response_len": length,
                    f"val/{task}/len_norm_reward": reward / max(length, 1.0),
                    f"val/{task}/entropy": ent,
                }
            )
        known = [t for t in truth_scores(records, [r.text for r in rollouts]) if t is not None] if rewards else []
        truths += known
        if known and len(pools) > 1:
            metrics[f"val/{task}/quality"] = sum(known) / len(known)
        n = len(rollouts)
        totals["reward"] += reward * n
        totals["len"] += length * n
        totals["entropy"] += ent * n
        totals["count"] += n
    count = totals["count"]
    metrics.update(
        {
            "val/reward": totals["reward"] / count,
            "val/response_len": totals["len"] / count,
            "val/entropy": totals["entropy"] / count,
        }
    )
    metrics["val/len_norm_reward"] = metrics["val/reward"] / max(metrics["val/response_len"], 1.0)
    if truths:
        metrics["val/quality"] = sum(truths) / len(truths)
    distributed.reshard(policy)  # no backward follows these forwards to free FSDP's gathered root
    return metrics


@torch.no_grad()
def validation_entropy(cfg: RunConfig, policy, rollouts: list[Rollout], pad_id: int) -> float:
    """The policy's mean entropy over the rollouts' response tokens, `train.micro_batch_size` rows per
    pass (the logits of a whole validation set at once can outgrow the GPU: 4.9 GiB per row at 8B)."""
    device = next(policy.parameters()).device
    total, tokens = 0.0, 0
    for part in chunks(rollouts, cfg.train.micro_batch_size):
        batch = pack(part, pad_id, device)
        _, entropy = policy_logprobs(policy, batch, cfg.train.temperature, with_entropy=True)
        total += float((entropy * batch.response_mask).sum())
        tokens += int(batch.response_mask.sum())
    return total / max(tokens, 1)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
