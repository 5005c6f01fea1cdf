"""The timed sides of `benchmarks/trl_compare.py`: each runs `steps` training steps in its own process.

Every side uses the embedded tiny policy (loaded by `harness.rollout.hf.load_policy`), its
tokenizer and chat template, the tiny math prompts in the harness's step order
(`build_mixture(...).batch(step, n)`), the harness's Math-Verify reward pool, temperature 1.0,
top-p 1.0 (no top-k), 64 new tokens, lr 1e-4 (constant), AdamW (eps 1e-8, no weight decay),
gradient clipping and one CPU thread. A side returns per-step wall seconds (from the end of one
optimizer step to the end of the next) plus generated tokens and trained sequences per step.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = ROOT / "sweeps" / "runs" / "tiny.yaml"
GRPO_KL = 0.001
DPO_BETA = 0.1
MAX_NEW_TOKENS = 64


def _config(overrides: list[str], steps: int, out: str):
    from harness.config import load_run_config

    return load_run_config(
        str(TINY_RUN),
        [
            *overrides,
            f"train.steps={steps}",
            f"output_dir={out}",
            f"validation.every={steps + 1}",
            f"checkpoint.every={steps + 1}",
        ],
    )


def _records(cfg, steps: int, per_step: int) -> list[dict]:
    """The prompts the harness trains on at steps 0..steps-1, in its order."""
    from harness.tasks import build_mixture

    mixture = build_mixture(cfg.task_mix, cfg.data, cfg.seed)
    return [record for step in range(steps) for record in mixture.batch(step, per_step)]


def _completion_length(ids: list[int], eos_id: int, pad_id: int) -> int:
    if eos_id in ids:
        return ids.index(eos_id) + 1
    while ids and ids[-1] == pad_id:
        ids = ids[:-1]
    return len(ids)


# -- this harness -------------------------------------------------------------------------


class _StepClock:
    """A tracker that time-stamps the end of every optimizer step (the trainer logs it there)."""

    def __init__(self) -> None:
        from harness.tracking import MemoryTracker

        self.memory = MemoryTracker()
        self.run_id = None
        self.stamps: list[float] = []

    def log_params(self, params) -> None:
        self.memory.log_params(params)

    def log_text(self, text, name) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train/loss" in metrics or step == 0:
            self.stamps.append(time.perf_counter())
        self.memory.log_metrics(metrics, step)


def _trl_pairing(rewards: torch.Tensor, rng: torch.Generator):
    """OnlineDPOTrainer's rule on [P, 2] rewards: sample 0 chosen when r0 >= r1, every prompt trained."""
    from harness.algorithms import Pair

    return [Pair(p, 0, 1) if float(row[0]) >= float(row[1]) else Pair(p, 1, 0) for p, row in enumerate(rewards)]


@contextmanager
def _pairing(rule):
    import harness.train.update_rules as update_rules

    original = update_rules.build_verifiable_pairs
    update_rules.build_verifiable_pairs = rule or original
    try:
        yield
    finally:
        update_rules.build_verifiable_pairs = original


def run_harness(method: str, steps: int, shape: str = "default") -> dict:
    """`harness.train.trainer.train` on sweeps/runs/tiny.yaml; shape "trl" = OnlineDPOTrainer's batch."""
    from harness.train.trainer import train

    overrides = [f"method={method}", f"grpo.kl_coef={GRPO_KL}", f"dpo.beta={DPO_BETA}"]
    rule = None
    if shape == "trl":  # 64 prompts x 2 samples, every prompt's pair trained, fixed reference
        overrides += ["train.prompts_per_step=64", "train.samples_per_prompt=2", "ref_sync_every=inf"]
        rule = _trl_pairing
    clock = _StepClock()
    with tempfile.TemporaryDirectory(prefix="trl-compare-") as out, _pairing(rule):
        cfg = _config(overrides, steps, out)
        train(cfg, tracker=clock, progress=False)
    series = clock.memory.series
    pairs = [v for _, v in series("train/pairs")]
    trained = (
        [2 * p for p in pairs]
        if method == "dpo"
        else [cfg.train.prompts_per_step * cfg.train.samples_per_prompt] * steps
    )
    phases = {p: [v for s, v in series(f"time/{p}_s") if s > 0] for p in ("generate", "score", "train", "sync")}
    return {
        "step_s": _diffs(clock.stamps),
        "tokens": [v for _, v in series("train/generated_tokens")],
        "trained": trained,
        "phases": phases,
    }


def _diffs(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


# -- the bare floor -----------------------------------------------------------------------


def run_floor(steps: int) -> dict:
    """The least a GRPO step must do: KV-cached sampling (the harness's sampler, on the policy
    itself, so no weight copy), one forward + backward of the whole padded batch with a full
    log-softmax, the reference forward, one AdamW step. No reward (fixed +-1 advantages), no
    entropy, no logging."""
    from harness.rollout import HFGenerator, SamplingParams
    from harness.models import load_policy
    from harness.train.sequences import pack
    from harness.tiny import ensure_tiny_assets
    from harness.train.trainer import chat_prompt

    with tempfile.TemporaryDirectory(prefix="trl-compare-") as out:
        cfg = _config(["method=grpo"], steps, out)
    path = str(ensure_tiny_assets().policy_dir)
    policy, tokenizer = load_policy(path)
    reference, _ = load_policy(path)
    reference.eval().requires_grad_(False)
    sampler = HFGenerator(policy, tokenizer, copy_model=False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, eps=1e-8, weight_decay=0.0)
    n, per_step = cfg.train.samples_per_prompt, cfg.train.prompts_per_step
    records = _records(cfg, steps, per_step)
    sampling = SamplingParams(n=n, temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    advantages = torch.tensor([1.0, -1.0] * (n * per_step // 2))
    stamps, tokens = [time.perf_counter()], []
    for step in range(steps):
        prompts = [chat_prompt(tokenizer, r["prompt"]) for r in records[step * per_step : (step + 1) * per_step]]
        flat = [r for group in sampler.generate(prompts, sampling) for r in group]
        batch = pack(flat, tokenizer.pad_token_id, torch.device("cpu"))
        policy.train()
        logp = _full_logprobs(policy, batch)
        with torch.no_grad():
            ref = _full_logprobs(reference, batch)
        r = (ref - logp).masked_fill(~batch.response_mask, 0.0)
        mask = batch.response_mask.float()
        loss = (-(advantages * (logp * mask).sum(-1)) + GRPO_KL * ((r.exp() - r - 1) * mask).sum(-1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
        tokens.append(sum(r.length for r in flat))
    return {"step_s": _diffs(stamps), "tokens": tokens, "trained": [len(advantages)] * steps}


def _full_logprobs(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)


# -- sampler vs model.generate ------------------------------------------------------------


def run_generation(steps: int, backend: str) -> dict:
    """Generation only, 16 prompts x 8 samples, one batch: the harness sampler or `model.generate`."""
    from harness.rollout import HFGenerator, SamplingParams
    from harness.tiny import ensure_tiny_assets
    from harness.train.trainer import chat_prompt

    with tempfile.TemporaryDirectory(prefix="trl-compare-") as out:
        cfg = _config(["method=grpo"], steps, out)
    sampler = HFGenerator(ensure_tiny_assets().policy_dir)
    model, tokenizer = sampler.model, sampler.tokenizer
    n, per_step = cfg.train.samples_per_prompt, cfg.train.prompts_per_step
    records = _records(cfg, steps, per_step)
    stamps, tokens = [time.perf_counter()], []
    for step in range(steps):
        prompts = [chat_prompt(tokenizer, r["prompt"]) for r in records[step * per_step : (step + 1) * per_step]]
        if backend == "sampler":
            groups = sampler.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS))
            tokens.append(sum(r.length for group in groups for r in group))
        else:
            encoded = tokenizer(
                [p for p in prompts for _ in range(n)],
                add_special_tokens=False,
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
            with torch.no_grad():
                out = model.generate(
                    **encoded,
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=MAX_NEW_TOKENS,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            completions = out[:, encoded["input_ids"].shape[1] :].tolist()
            tokens.append(
                sum(_completion_length(ids, tokenizer.eos_token_id, tokenizer.pad_token_id) for ids in completions)
            )
        stamps.append(time.perf_counter())
    return {"step_s": _diffs(stamps), "tokens": tokens, "trained": [0] * steps}


# -- TRL ----------------------------------------------------------------------------------


class _TrlSetup:
    """Model, tokenizer, data set and the harness's Math-Verify reward, packaged for TRL."""

    def __init__(self, steps: int, prompts_per_step: int, out: str):
        from datasets import Dataset

        from harness.models import load_policy
        from harness.tiny import ensure_tiny_assets
        from harness.train.trainer import build_rewards, chat_prompt

        self.cfg = _config(["method=grpo"], steps, out)
        self.model, self.tokenizer = load_policy(str(ensure_tiny_assets().policy_dir))
        self.records = _records(self.cfg, steps, prompts_per_step)
        self.rewards = build_rewards(self.cfg, None, "cpu")
        self.tokens: list[int] = []
        first = [{"role": "user", "content": self.records[0]["prompt"]}]
        ours = self.tokenizer(chat_prompt(self.tokenizer, self.records[0]["prompt"]), add_special_tokens=False)
        theirs = self.tokenizer.apply_chat_template(first, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert list(ours["input_ids"]) == list(theirs["input_ids"]), "TRL would see different prompt tokens"
        self.dataset = Dataset.from_list(
            [
                {"prompt": [{"role": "user", "content": r["prompt"]}], "record_index": i}
                for i, r in enumerate(self.records)
            ]
        )

    def reward(self, prompts, completions, record_index, completion_ids=None, **_):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        self.tokens.append(sum(_completion_length(list(ids), eos, pad) for ids in (completion_ids or [])))
        return self.rewards.score([self.records[i] for i in record_index], texts).rewards

    def common_args(self, out: str, steps: int) -> dict:
        return dict(
            output_dir=out,
            max_steps=steps,
            learning_rate=self.cfg.train.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_epsilon=1e-8,
            optim="adamw_torch",
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            seed=self.cfg.seed,
            dataloader_num_workers=0,
            gradient_accumulation_steps=1,
            gradient_checkpointing=False,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
        )


def _step_clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

    return StepClock()


def run_trl_grpo(steps: int) -> dict:
    """GRPOTrainer with the harness's GRPO: on-policy, k3 KL to the fixed seed (beta 0.001), token
    sums averaged over sequences (`dr_grpo` divides that by 64 = max_completion_length, so the
    clip norm is 1/64 of the harness's 1.0: the same update), no std scaling, one optimizer step."""
    from trl import GRPOConfig, GRPOTrainer

    with tempfile.TemporaryDirectory(prefix="trl-compare-") as out:
        setup = _TrlSetup(steps, 16, out)
        n = setup.cfg.train.samples_per_prompt
        args = GRPOConfig(
            **setup.common_args(out, steps),
            per_device_train_batch_size=16 * n,
            num_generations=n,
            max_completion_length=MAX_NEW_TOKENS,
            beta=GRPO_KL,
            loss_type="dr_grpo",
            scale_rewards="none",
            num_iterations=1,
            max_grad_norm=setup.cfg.train.grad_clip / MAX_NEW_TOKENS,
            shuffle_dataset=False,
            log_completions=False,
            mask_truncated_completions=False,
        )
        clock = _step_clock()
        trainer = GRPOTrainer(
            model=setup.model,
            reward_funcs=[setup.reward],
            args=args,
            train_dataset=setup.dataset,
            processing_class=setup.tokenizer,
            callbacks=[clock],
        )
        try:
            trainer.train()
        finally:
            setup.rewards.close()
    return {"step_s": _diffs(clock.stamps), "tokens": setup.tokens, "trained": [16 * n] * steps}


def run_trl_online_dpo(steps: int, prompts_per_step: int = 64) -> dict:
    """OnlineDPOTrainer at its shape: 2 samples per prompt, every prompt's pair trained, sigmoid
    loss (beta 0.1) on summed log-probs, fixed reference, one optimizer step per batch."""
    from torch.utils.data import SequentialSampler
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    class InOrder(OnlineDPOTrainer):  # the harness's prompt order (Trainer would shuffle)
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    with tempfile.TemporaryDirectory(prefix="trl-compare-") as out:
        setup = _TrlSetup(steps, prompts_per_step, out)
        args = OnlineDPOConfig(
            **setup.common_args(out, steps),
            per_device_train_batch_size=prompts_per_step,
            max_new_tokens=MAX_NEW_TOKENS,
            beta=[DPO_BETA],
            loss_type="sigmoid",
            max_grad_norm=setup.cfg.train.grad_clip,
        )
        clock = _step_clock()
        trainer = InOrder(
            model=setup.model,
            reward_funcs=[setup.reward],
            args=args,
            train_dataset=setup.dataset,
            processing_class=setup.tokenizer,
            callbacks=[clock],
        )
        try:
            trainer.train()
        finally:
            setup.rewards.close()
    return {"step_s": _diffs(clock.stamps), "tokens": setup.tokens, "trained": [2 * prompts_per_step] * steps}


SIDES = {
    "harness_grpo": lambda steps: run_harness("grpo", steps),
    "trl_grpo": run_trl_grpo,
    "floor": run_floor,
    "harness_dpo": lambda steps: run_harness("dpo", steps),
    "harness_dpo_trl_shape": lambda steps: run_harness("dpo", steps, shape="trl"),
    "trl_online_dpo": run_trl_online_dpo,
    "sampler": lambda steps: run_generation(steps, "sampler"),
    "generate": lambda steps: run_generation(steps, "generate"),
}
