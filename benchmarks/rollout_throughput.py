"""Rollout throughput of the hf and vllm backends on the same prompts, side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/rollout_throughput.py --rounds 3

Both generators hold the tiny policy (or --policy). After one warm-up call each, the rounds
alternate hf, vllm, hf, vllm, ... so machine load hits both alike; each prints generated tokens
per second, and the last line is one JSON object with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from harness.models import load_policy
from harness.rollout import SamplingParams, make_generator
from harness.tasks import task_pools
from harness.config import load_run_config
from harness.train.trainer import chat_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, help="checkpoint folder (default: the tiny policy)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before the engine: in-process vLLM freezes the count
    if args.policy is None:
        from harness.tiny import ensure_tiny_assets

        args.policy = str(ensure_tiny_assets().policy_dir)
    cfg = load_run_config(None)
    model, tokenizer = load_policy(args.policy)
    records = task_pools("verifiable", cfg.data, "validation")["verifiable"][: args.prompts]
    prompts = [chat_prompt(tokenizer, r["prompt"]) for r in records]
    generators = {
        "hf": make_generator("hf", model, tokenizer),
        "vllm": make_generator("vllm", args.policy, tokenizer, dtype="float32", cpu_kv_cache_gib=0.5),
    }
    rates: dict[str, list[float]] = {name: [] for name in generators}
    for round_index in range(args.rounds + 1):
        for name, generator in generators.items():
            params = SamplingParams(
                n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=round_index
            )
            started = time.perf_counter()
            groups = generator.generate(prompts, params)
            seconds = time.perf_counter() - started
            tokens = sum(r.length for group in groups for r in group)
            if round_index == 0:
                print(f"warm-up {name}: {tokens} tokens in {seconds:.2f} s")
                continue
            rates[name].append(tokens / seconds)
            print(f"round {round_index} {name}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:,.0f} tokens/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        json.dumps(
            {
                "prompts": args.prompts,
                "samples": args.samples,
                "max_new_tokens": args.max_new_tokens,
                "threads": args.threads,
                "tokens_per_s": {k: round(v) for k, v in medians.items()},
                "vllm_over_hf": round(medians["vllm"] / medians["hf"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
