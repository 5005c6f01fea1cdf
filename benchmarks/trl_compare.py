"""Step time of this harness against TRL's GRPOTrainer and OnlineDPOTrainer, on the identical tiny setup.

    pip install -e ".[bench]"
    python benchmarks/trl_compare.py                          # 3 reps x 30 steps, median of steps 6-30
    python benchmarks/trl_compare.py --reps 1 --steps 10      # a quick look
    python benchmarks/trl_compare.py --sides harness_grpo trl_grpo floor

Each side runs in its own process on one CPU thread; the sides of a repetition run one after
another (A B A B ...), odd repetitions in reverse order, so load on the machine hits both sides
of a pair alike. Prints per-step medians per repetition, the ratio per pair, the generated tokens
and trained sequences per step, and every difference between the sides that remains. It is a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL_SIDES = [
    "harness_grpo",
    "trl_grpo",
    "floor",
    "harness_dpo_trl_shape",
    "trl_online_dpo",
    "harness_dpo",
    "sampler",
    "generate",
]
PAIRS = [  # (label, numerator, denominator)
    ("GRPO: harness / TRL GRPOTrainer", "harness_grpo", "trl_grpo"),
    ("GRPO: harness / bare floor", "harness_grpo", "floor"),
    ("GRPO: TRL GRPOTrainer / bare floor", "trl_grpo", "floor"),
    ("online DPO, equal volume (128 trained): harness / OnlineDPOTrainer", "harness_dpo_trl_shape", "trl_online_dpo"),
    ("online DPO, defaults: harness / OnlineDPOTrainer", "harness_dpo", "trl_online_dpo"),
    ("generation 16x8: harness sampler / model.generate", "sampler", "generate"),
]
DESCRIPTIONS = {
    "harness_grpo": "harness GRPO, sweeps/runs/tiny.yaml method=grpo (16 prompts x 8, kl 0.001, fixed reference)",
    "trl_grpo": "TRL GRPOTrainer, loss_type=dr_grpo, beta=0.001, scale_rewards=none, 16 prompts x 8",
    "floor": "bare floor: harness sampler + one full-logits forward/backward + reference forward + AdamW",
    "harness_dpo": "harness online DPO, tiny.yaml defaults (16 x 8, correct-vs-incorrect pairs, ref follows policy)",
    "harness_dpo_trl_shape": "harness online DPO at TRL's shape (64 x 2, every prompt paired, fixed reference)",
    "trl_online_dpo": "TRL OnlineDPOTrainer, 64 prompts x 2, sigmoid beta 0.1",
    "sampler": "harness KV-cache sampler, generation only, 16 x 8 in one batch",
    "generate": "transformers model.generate, generation only, 16 x 8 in one batch",
}
DIFFERENCES = """\
Remaining differences between the sides (what was matched is in the side descriptions):
- Samples: the harness samples with its own KV-cache loop, TRL with transformers' model.generate. The random
  streams differ, so the two sides train on different (equally distributed) completions; generated tokens
  per step are printed above so the work can be compared.
- Log-probs: the harness runs the LM head from the earliest response position on (logits_to_keep) and takes
  one log-sum-exp on response positions; GRPOTrainer uses TRL's fused, chunked LM head on completion
  positions; OnlineDPOTrainer takes a full log_softmax over the completion positions.
- Batch layout: the harness right-pads prompt+response (width = the longest sequence); TRL left-pads prompts
  and right-pads completions (width = longest prompt + longest completion).
- GRPO loss scale: TRL's dr_grpo divides the harness's per-sequence token sum by 64 (max_completion_length);
  TRL's clip norm is therefore 1/64 of the harness's 1.0 and AdamW sees the same update up to its eps (1e-8).
  TRL's ratio clipping (epsilon 0.2) is inert at one iteration per batch (the ratio is exactly 1).
- GRPO generator: the harness samples from a separate copy of the policy and copies the weights in before
  every step (sync_every=1); TRL samples from the training model itself. The floor samples from the policy.
- Entropy: the harness computes per-token entropy for logging (no grad) on every trained batch; TRL's GRPO
  computes it in its fused head; OnlineDPOTrainer does not compute it.
- Online DPO pairs: TRL pairs the 2 completions of every prompt, ties included (the first wins); the harness
  default pairs a correct with an incorrect sample of 8 and skips prompts without both, so it trains fewer
  sequences. harness_dpo_trl_shape uses TRL's rule at TRL's shape, so both train 128 sequences per step.
  The default harness run keeps its reference in step with the policy (ref_sync_every=auto: every step for
  online verifiable DPO); TRL's reference is fixed, as in harness_dpo_trl_shape.
- Cannot be matched: the exact tokens sampled (different samplers), and the default pair counts
  (OnlineDPOTrainer cannot train a subset of its pairs; the harness makes at most one pair per prompt).
- Gradient checkpointing: TRL 1.16 turns it on by default in both trainers (one more forward per backward);
  the benchmark turns it off, as the harness does not recompute activations.
- Logging: TRL logs every step (logging_steps=1); the harness logs its metrics every step to an in-memory
  tracker. Validation (the harness's, at step 0 and the last step) falls outside the timed steps.
"""


def run_side(side: str, steps: int) -> dict:
    """One side in a fresh process on one CPU thread; returns its per-step measurements."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="trl-compare-") as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                side,
                "--steps",
                str(steps),
                "--result",
                str(out),
            ],
            check=True,
            env=env,
        )
        return json.loads(out.read_text())


def child(side: str, steps: int, result: str) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from trl_compare_sides import SIDES

    Path(result).write_text(json.dumps(SIDES[side](steps)))


def cpu_name() -> str:
    """The CPU's model name: the ratios depend on it (TRL's and the harness's steps slow down unequally)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def median_steps(values: list[float], skip: int) -> float:
    kept = values[skip:]
    return statistics.median(kept) if kept else float("nan")


def summarise(results: dict[str, list[dict]], skip: int) -> list[str]:
    lines = [f"per-step medians (steps {skip + 1}+), one column per repetition:"]
    for side, runs in results.items():
        steps = " / ".join(f"{median_steps(r['step_s'], skip):.3f}" for r in runs)
        tokens = statistics.mean(statistics.mean(r["tokens"][skip:] or r["tokens"]) for r in runs)
        trained = statistics.mean(statistics.mean(r["trained"][skip:] or r["trained"]) for r in runs)
        lines.append(f"  {side:<24}{steps} s   {tokens:7.0f} tokens/step  {trained:5.1f} trained seqs/step")
        phases = runs[0].get("phases")
        if phases:
            lines.append(
                " " * 26
                + "phases (rep 1): "
                + ", ".join(f"{name} {median_steps(v, skip):.3f}" for name, v in phases.items() if v)
            )
    lines.append("")
    lines.append("ratios per repetition (numerator / denominator step median; < 1 = numerator faster):")
    for label, a, b in PAIRS:
        if a in results and b in results:
            ratios = [
                median_steps(ra["step_s"], skip) / median_steps(rb["step_s"], skip)
                for ra, rb in zip(results[a], results[b])
            ]
            lines.append(
                f"  {label:<70}"
                + " / ".join(f"{r:.2f}x" for r in ratios)
                + f"   median {statistics.median(ratios):.2f}x"
            )
    return lines


def markdown_table(results: dict[str, list[dict]], skip: int) -> list[str]:
    lines = ["| pair | numerator s/step | denominator s/step | ratio |", "|---|---|---|---|"]
    for label, a, b in PAIRS:
        if a in results and b in results:
            ma = [median_steps(r["step_s"], skip) for r in results[a]]
            mb = [median_steps(r["step_s"], skip) for r in results[b]]
            ratios = [x / y for x, y in zip(ma, mb)]
            lines.append(
                f"| {label} | {' / '.join(f'{x:.2f}' for x in ma)} | {' / '.join(f'{y:.2f}' for y in mb)} "
                f"| {' / '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x) |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (default 30)")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median (default 5)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--sides", nargs="+", choices=ALL_SIDES, default=ALL_SIDES)
    parser.add_argument("--json", help="also write every per-step measurement here")
    parser.add_argument("--child", choices=ALL_SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.steps, args.result)
        return 0
    if args.steps <= args.skip:
        parser.error(f"--steps ({args.steps}) must exceed --skip ({args.skip})")
    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    try:
        import trl

        versions += f", trl {trl.__version__}"
    except ImportError:
        if any(side.startswith("trl") for side in args.sides):
            parser.error('TRL is not installed: pip install -e ".[bench]"')
    print(
        f"trl_compare: {args.reps} reps x {args.steps} steps, median of steps {args.skip + 1}-{args.steps}; "
        f"{versions}; 1 CPU thread per side; {cpu_name()}"
    )
    for side in args.sides:
        print(f"  {side}: {DESCRIPTIONS[side]}")
    results: dict[str, list[dict]] = {side: [] for side in args.sides}
    for rep in range(args.reps):
        order = args.sides if rep % 2 == 0 else list(reversed(args.sides))
        for side in order:
            print(f"rep {rep + 1}/{args.reps}: {side} ...", flush=True)
            results[side].append(run_side(side, args.steps))
            last = results[side][-1]
            print(f"  median {median_steps(last['step_s'], args.skip):.3f} s/step", flush=True)
    print()
    print("\n".join(summarise(results, args.skip)))
    print()
    print("\n".join(markdown_table(results, args.skip)))
    print()
    print(DIFFERENCES)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
