"""Print measured numbers of the embedded tiny default: seed accuracy and build seconds.

Builds the tiny assets if they are not cached yet, loads the seed policy the way every other
module does (``from_pretrained``), samples one answer per math validation problem at T=1.0
(training sampling) and at T=0.6 / top-p 0.9 (the paper's evaluation sampling), and greedy,
then prints those accuracies, response lengths in tokens, the reward model's held-out numbers
and the seconds each build phase took (from DONE.json).

    python benchmarks/tiny_seed_accuracy.py [--cache-root DIR] [--problems 256] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from harness.tiny import ensure_tiny_assets
from harness.tiny.build import sample_math_accuracy, sample_responses, score_responses
from harness.tiny.chat_task import quality
from harness.tiny.math_task import read_jsonl

SETTINGS = [("T=1.0", 1.0, 1.0), ("T=0.6 top-p 0.9", 0.6, 0.9), ("greedy", 0.0, 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-root", default=None)
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    assets = ensure_tiny_assets(args.cache_root, progress=True)
    tokenizer = AutoTokenizer.from_pretrained(assets.policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(assets.policy_dir).eval()
    reward_model = AutoModelForSequenceClassification.from_pretrained(assets.reward_model_dir).eval()
    math_records = read_jsonl(assets.data_dir / "math" / "validation.jsonl")[: args.problems]
    chat_records = read_jsonl(assets.data_dir / "chat" / "validation.jsonl")

    summary = assets.summary
    print(f"tiny assets {assets.recipe_hash} at {assets.root}")
    print(
        f"policy params {summary['policy']['params']:,}; reward model params "
        f"{summary['reward_model']['params']:,}; bf16 autocast {summary.get('bf16_autocast')}"
    )
    for name, timing in summary["timings"].items():
        print(f"build phase {name:13s} wall {timing['wall_s']:7.1f}s  cpu {timing['cpu_s']:7.1f}s")
    print(f"build total wall {summary['total_wall_s']:.1f}s")

    print(f"\nseed math accuracy on {len(math_records)} validation problems (one sample each, seeds {args.seeds}):")
    for label, temperature, top_p in SETTINGS:
        seeds = args.seeds if temperature > 0 else args.seeds[:1]
        started = time.perf_counter()
        runs = [
            sample_math_accuracy(policy, tokenizer, math_records, temperature, top_p=top_p, seed=seed) for seed in seeds
        ]
        accuracy = statistics.mean(run["accuracy"] for run in runs)
        # binomial SE of the mean over len(seeds) * problems samples
        se = (accuracy * (1 - accuracy) / (len(seeds) * len(math_records))) ** 0.5
        print(
            f"  {label:16s} accuracy {accuracy:.3f} +- {se:.3f}  boxed "
            f"{statistics.mean(r['well_formed'] for r in runs):.3f}  mean tokens "
            f"{statistics.mean(r['mean_response_tokens'] for r in runs):.1f}  "
            f"({time.perf_counter() - started:.1f}s)"
        )

    prompts = [r["prompt"] for r in chat_records]
    print(f"\nseed chat on {len(prompts)} validation prompts:")
    for label, temperature, top_p in SETTINGS:
        texts, lengths = sample_responses(policy, tokenizer, prompts, temperature, top_p=top_p, seed=args.seeds[0])
        scores = score_responses(reward_model, tokenizer, prompts, texts)
        print(
            f"  {label:16s} hidden quality "
            f"{statistics.mean(quality(r, t) for r, t in zip(chat_records, texts)):.3f}  "
            f"RM score {statistics.mean(scores):+.2f}  mean tokens {statistics.mean(lengths):.1f}"
        )

    rm = summary["reward_model"]
    print(
        f"\nreward model on {rm['heldout_pairs']} held-out pairs: accuracy "
        f"{rm['heldout_pair_accuracy']:.3f} (vs utility), {rm['correct_vs_wrong_accuracy']:.3f} "
        f"(quality gap >= 0.5); length bias: filler suffix {rm['filler_suffix_delta']:+.2f}, "
        f"extra list item {rm['extra_item_delta']:+.2f} (reference score mean "
        f"{rm['reference_score_mean']:+.2f})"
    )
    print("\nDONE.json seed_eval: " + json.dumps(summary["seed_eval"]))


if __name__ == "__main__":
    main()
