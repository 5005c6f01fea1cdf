"""GPU conformance and speed check for the trainer's CUDA path (run on a machine with a GPU).

    python benchmarks/gpu_check.py [--policy DIR]
    python benchmarks/gpu_check.py --cpu-smoke      # only part 3, shrunk, on CPU (checks the script itself)

1. The generator's sampling log-probs equal the trainer's log-probs of the same samples on CUDA
   (float32 and bfloat16), the conformance the paper's semantics depend on.
2. A short semi-online DPO run (sync_every=2) and an online GRPO run on CUDA: staleness cycles,
   losses stay finite, and the per-phase seconds are printed next to the CPU numbers.
3. FSDP at world size 1 on a ~1B-parameter random Llama built from a config (no download):
   bf16 compute over fp32 master weights; per-step phase times; peak CUDA memory against the
   prediction of `harness plan` for the same config.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.config import load_run_config  # noqa: E402
from harness.plan import GIB, model_shape, plan_memory  # noqa: E402
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


def random_llama(folder: Path, hidden: int, layers: int, intermediate: int) -> Path:
    """A randomly initialised Llama (the tiny tokenizer's vocabulary) saved as a from_pretrained folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from harness.tiny import ensure_tiny_assets
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_assets().policy_dir)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=max(hidden // 128, 2), num_key_value_heads=max(hidden // 256, 1),
                         vocab_size=len(tokenizer), tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fsdp_check(out: Path, device: str, hidden: int = 2048, layers: int = 16, intermediate: int = 8192,
               steps: int = 4) -> bool:
    """FSDP world size 1, bf16 compute, fp32 masters: phase times and peak memory against the plan."""
    policy = random_llama(out / "random_llama", hidden, layers, intermediate)
    overrides = [f"model.policy={policy}", f"model.device={device}", "train.parallel=fsdp",
                 "model.param_dtype=float32", "model.compute_dtype=bfloat16", "model.gradient_checkpointing=true",
                 f"train.steps={steps}", "train.prompts_per_step=16", "train.samples_per_prompt=4",
                 "train.max_new_tokens=64", "train.micro_batch_size=16", "train.lr=1e-6", "validation.prompts=8",
                 "validation.every=1000", "checkpoint.every=1000", "rollout.batch_size=64", f"output_dir={out / 'fsdp1'}"]
    cfg = load_run_config(ROOT / "sweeps/runs/tiny.yaml", overrides)
    capacity = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 64.0
    plan = plan_memory(cfg, 1, capacity, prompt_tokens=64)
    print(f"  random Llama: {model_shape(str(policy)).params / 1e9:.2f}B parameters; plan predicts "
          f"{plan.total / GIB:.1f} GiB per GPU")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tracker = MemoryTracker()
    started = time.perf_counter()
    train(cfg, tracker=tracker, progress=False)
    wall = time.perf_counter() - started
    for step in range(1, steps + 1):
        phases = {p: dict(tracker.series(f"time/{p}_s")).get(step, float("nan")) for p in ("sync", "generate", "score", "train")}
        print(f"  step {step}: " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
    losses = [v for s, v in tracker.series("train/loss") if s > 0]
    ok = all(math.isfinite(x) for x in losses)
    print(f"  wall {wall:.1f}s; losses {['%.4f' % x for x in losses]}")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / GIB
        print(f"  peak CUDA memory {peak:.1f} GiB vs plan {plan.total / GIB:.1f} GiB (ratio {peak / (plan.total / GIB):.2f})")
        ok &= peak <= plan.total / GIB * 1.10  # the plan must not under-predict by more than 10%
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default=None)
    parser.add_argument("--out", default="/tmp/gpu_check")
    parser.add_argument("--data-dir", default=None, help="folder with numinamath/{train,validation}.jsonl")
    parser.add_argument("--cpu-smoke", action="store_true", help="run only the FSDP check, shrunk, on CPU")
    args = parser.parse_args()
    if args.cpu_smoke:
        ok = fsdp_check(Path(args.out), "cpu", hidden=128, layers=2, intermediate=256, steps=2)
        print("CPU SMOKE", "PASSED" if ok else "FAILED")
        return 0 if ok else 1
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
    print("FSDP world size 1, bf16 compute over fp32 masters, ~1B random Llama:")
    ok &= fsdp_check(out, "cuda")
    print("GPU CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
