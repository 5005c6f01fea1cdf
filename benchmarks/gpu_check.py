"""GPU conformance and speed check for the trainer's CUDA path (run on a machine with a GPU).

    python benchmarks/gpu_check.py [--policy DIR]

1. The generator's sampling log-probs equal the trainer's log-probs of the same samples on CUDA
   (float32 and bfloat16), the conformance the paper's semantics depend on.
2. A short semi-online DPO run (sync_every=2) and an online GRPO run on CUDA: staleness cycles,
   losses stay finite, and the per-phase seconds are printed next to the CPU numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.config import load_run_config  # noqa: E402
from harness.rollout import HFGenerator, SamplingParams  # noqa: E402
from harness.sequences import pack, policy_logprobs  # noqa: E402
from harness.tracking import MemoryTracker  # noqa: E402
from harness.trainer import chat_prompt, train  # noqa: E402


def logprob_match(policy: str, dtype: torch.dtype, device: str) -> float:
    generator = HFGenerator(policy, device=device)
    generator.model.to(dtype)
    tok = generator.tokenizer
    prompts = [chat_prompt(tok, f"Compute ({a} + 7) * 2 - 3.") for a in range(16)]
    groups = generator.generate(prompts, SamplingParams(n=8, temperature=1.0, max_new_tokens=48, seed=0,
                                                        return_logprobs=True))
    flat = [r for g in groups for r in g]
    batch = pack(flat, tok.pad_token_id, torch.device(device))
    with torch.no_grad():
        logp, _ = policy_logprobs(generator.model, batch, 1.0)
    trainer = (logp.float() * batch.response_mask).sum(-1).cpu()
    sampler = torch.tensor([sum(r.logprobs) for r in flat])
    per_token = ((trainer - sampler).abs() / batch.response_lengths.cpu().clamp(min=1)).max().item()
    return per_token


def short_run(overrides: list[str], out: Path) -> MemoryTracker:
    cfg = load_run_config(ROOT / "sweeps/runs/tiny.yaml", [*overrides, f"output_dir={out}", "model.device=cuda"])
    tracker = MemoryTracker()
    started = time.perf_counter()
    train(cfg, tracker=tracker, progress=False)
    wall = time.perf_counter() - started
    phases = {p: sum(v for s, v in tracker.series(f"time/{p}_s") if s > 0) for p in ("generate", "score", "train", "sync")}
    print(f"  {' '.join(overrides)}: wall {wall:.1f}s, " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
    return tracker


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default=None)
    parser.add_argument("--out", default="/tmp/gpu_check")
    parser.add_argument("--data-dir", default=None, help="folder with numinamath/{train,validation}.jsonl")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    policy = args.policy
    extra = []
    if policy is None:
        from harness.tiny import ensure_tiny_assets
        policy = str(ensure_tiny_assets().policy_dir)
    else:
        extra = [f"model.policy={policy}"]
    if args.data_dir:
        extra += ["data.verifiable=numinamath", f"data.data_dir={args.data_dir}", "data.math_prompt_template='{problem}'"]
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        err = logprob_match(policy, dtype, "cuda")
        limit = 1e-4 if dtype == torch.float32 else 5e-2
        print(f"logprob match on cuda {dtype}: max per-token |trainer - sampler| = {err:.2e} (limit {limit})")
        ok &= err < limit
    out = Path(args.out)
    steps = ["train.steps=6", "validation.every=3", "checkpoint.every=3"]
    tracker = short_run([*extra, *steps, "method=dpo", "sync_every=2"], out / "dpo")
    stale = [v for s, v in tracker.series("train/generator_staleness") if s > 0]
    print("  dpo s=2 staleness:", stale)
    ok &= stale == [0, 1, 0, 1, 0, 1]
    tracker = short_run([*extra, *steps, "method=grpo", "sync_every=1"], out / "grpo")
    losses = [v for s, v in tracker.series("train/loss") if s > 0]
    ok &= all(map(lambda x: x == x and abs(x) < 1e6, losses))
    print("  grpo losses finite:", all(x == x for x in losses))
    for mode in ("dpo", "grpo"):
        tracker = short_run([*extra, "train.steps=20", "validation.every=100", "checkpoint.every=100",
                             f"method={mode}", "train.prompts_per_step=64"], out / f"bench_{mode}")
    print("GPU CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
