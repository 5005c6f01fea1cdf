"""The CUDA path's check, as one command: every part in its own process with its own time limit.

    python benchmarks/gpu_check.py [--out DIR] [--parts logprob,resume,...]   # one H200: under 8 minutes
    python benchmarks/gpu_check.py --cpu-smoke                                # every part at toy size on CPU
    python benchmarks/gpu_check.py --limit-scale 2                            # a GPU slower than an H200

Parts (each writes `<out>/<part>.log` and `<out>/<part>.json`; a crash or a timeout loses only its row):
  logprob  sampler vs trainer log-probs of the same samples, tiny policy, fp32 and bf16
  gqa_val  issue 21's crash (a size 16 vs 15 in the step-0 validation's prefill): FSDP world size 1,
           DPO, 0.76B random Llama with 16 heads and 8 KV heads and the tiny vocabulary (rows finish
           early, the sampler compacts), chat prompts, gradient checkpointing, bf16 over fp32 masters,
           64 validation prompts in batches of 16; then the same prompts sampled through the sharded
           policy module itself (the path validation took when it crashed), then task_mix=joint if
           time allows. A sampler crash's first diagnostic line is the row; the whole report (shapes,
           cache layers, traceback) is in gqa_val.log
  resume   tests/test_scale_config.py::test_cuda_resume_continues_exactly (skipped without CUDA)
  fsdp1    FSDP world size 1, ~2.8B random Llama with the Llama-3 vocabulary: peak reserved memory
           against `harness plan`, phase times, tokens/s, train-phase MFU, and step 2 under
           torch.profiler (`train.profile_steps`): its three costliest ops in the row, the whole
           table (phases, FSDP ranges, ops) in fsdp1_profile_step2.txt
  lora     the same model, LoRA r16 in one process: the same numbers (lora_profile_step2.txt)
  ckpt     fsdp1's model and settings in one process: gradient checkpointing with shared prompts (DPO
           pairs of one prompt), and the one-process counterpart of fsdp1 (their train_s and
           profiles side by side say what FSDP's all-gathers and gradient reduce cost)
  decode   an 8B-shaped decode step, batch 64, KV 512 and 2048, with and without a host sync per token
Random models are built on the device (`with torch.device(...)`) and saved in bf16. `--out`
defaults to $OUT, else ./gpu_check_out. The table at the end has one row per part with a status;
a part that timed out or died without a result shows the last line of its log (how far it got).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (part, seconds allowed on the GPU, seconds allowed in --cpu-smoke); the GPU limits sum to 475 s.
PARTS = [
    ("logprob", 40, 40),
    ("gqa_val", 75, 90),
    ("resume", 50, 60),
    ("fsdp1", 110, 60),
    ("lora", 75, 60),
    ("ckpt", 80, 60),
    ("decode", 45, 40),
]
STARTED = time.perf_counter()  # this process's start: a part checks its own time limit against it
VOCAB = 128256  # the Llama-3 vocabulary: the logits are the largest memory term at 8B
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16, from the data sheets
GIB = 2**30


def shapes(smoke: bool) -> dict[str, dict]:
    """Model shapes per part: the GPU's (as measured in tests/test_plan.py) or toy ones for --cpu-smoke."""
    from harness.train.model_shape import LLAMA_31_8B

    if smoke:
        toy = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=None,
        )
        gqa = dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=16,
            num_key_value_heads=8,
            vocab_size=None,
        )  # head_dim 8
        return {"train": toy, "decode": toy, "gqa": gqa}
    return {
        "train": dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=8,
            vocab_size=VOCAB,
        ),  # 2.79B
        "gqa": dict(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=16,
            num_attention_heads=16,
            num_key_value_heads=8,
            vocab_size=None,
        ),  # head_dim 128, the tiny vocabulary: 0.76B
        # Llama-3.1-8B, less the fields that part_decode sets itself (untied head, head_dim from the widths)
        "decode": {k: v for k, v in LLAMA_31_8B.items() if k not in ("tie_word_embeddings", "head_dim")},
    }


def random_llama(folder: Path, shape: dict, device: str) -> Path:
    """A random Llama built on `device` and saved in bf16 with the tiny tokenizer (kept if present)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from harness.tiny import ensure_tiny_assets

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_assets(progress=False).policy_dir)
    config = LlamaConfig(
        **{**shape, "vocab_size": shape["vocab_size"] or len(tokenizer)},
        head_dim=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- the parts (each runs in its own process: `--part NAME`) ----------------------------------


def part_logprob(out: Path, device: str, smoke: bool) -> dict:
    import torch
    from harness.chat import chat_prompt
    from harness.rollout import HFGenerator, SamplingParams
    from harness.train.sequences import pack, policy_logprobs
    from harness.tiny import ensure_tiny_assets

    errors, ok = {}, True
    for dtype, limit in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        generator = HFGenerator(str(ensure_tiny_assets(progress=False).policy_dir), device=device)
        generator.model.to(dtype)
        tok = generator.tokenizer
        prompts = [chat_prompt(tok, f"Compute ({a} + 7) * 2 - 3.") for a in range(4 if smoke else 16)]
        groups = generator.generate(
            prompts,
            SamplingParams(n=4, temperature=1.0, max_new_tokens=16 if smoke else 48, seed=0, return_logprobs=True),
        )
        flat = [r for g in groups for r in g]
        batch = pack(flat, tok.pad_token_id, torch.device(device))
        with torch.no_grad():
            logp, _ = policy_logprobs(generator.model, batch, 1.0)
        trainer = (logp.float() * batch.response_mask).sum(-1).cpu()
        sampler = torch.tensor([sum(r.logprobs) for r in flat])
        err = ((trainer - sampler).abs() / batch.response_lengths.cpu().clamp(min=1)).max().item()
        errors[str(dtype).removeprefix("torch.")] = err
        ok &= err < limit
    return {"ok": ok, "result": ", ".join(f"{k} {v:.1e}/token" for k, v in errors.items())}


def part_resume(out: Path, device: str, smoke: bool) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/test_scale_config.py::test_cuda_resume_continues_exactly",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if "skipped" in last and "passed" not in last:
        return {"ok": True, "status": "skipped", "result": last.strip("= ")}
    return {"ok": done.returncode == 0, "result": last.strip("= ")}


def train_part(out: Path, device: str, smoke: bool, name: str, overrides: list[str], shape_key: str) -> dict:
    """A short training run on a random Llama: peak reserved memory vs the plan, phase times, tokens/s, MFU."""
    import torch
    from harness.config import load_run_config
    from harness.train.model_shape import model_shape
    from harness.train.plan import plan_memory
    from harness.tracking import MemoryTracker
    from harness.train.trainer import train

    policy = random_llama(out / f"random_llama_{shape_key}{'_toy' if smoke else ''}", shapes(smoke)[shape_key], device)
    steps = 2
    size = (
        [
            "train.prompts_per_step=4",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=8",
            "train.micro_batch_size=4",
            "rollout.batch_size=8",
        ]
        if smoke
        else [
            "train.prompts_per_step=16",
            "train.samples_per_prompt=8",
            "train.max_new_tokens=256",
            "train.micro_batch_size=4",
            "rollout.batch_size=128",
        ]
    )
    every = [
        f"train.steps={steps}",
        "validation.every=1000",
        "validation.prompts=4",
        "checkpoint.every=1000",
        "model.param_dtype=float32",
        "model.compute_dtype=bfloat16",
        "train.lr=1e-6",
        "ref_sync_every=inf",
        f"train.profile_steps=[{steps}]",  # the last step, warm: where its time goes (no trace: hundreds of MB)
        "train.profile_trace=false",
    ]
    args = [f"model.policy={policy}", f"model.device={device}", *size, *every, *overrides, f"output_dir={out / name}"]
    print("overrides:", " ".join(args))
    cfg = load_run_config(ROOT / "sweeps/runs/tiny.yaml", args)
    capacity = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 64.0
    plan = plan_memory(cfg, 1, capacity, prompt_tokens=31)  # the tiny math prompts: at most 31 tokens
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tracker = MemoryTracker()
    started = time.perf_counter()
    train(cfg, tracker=tracker, progress=False)
    wall = time.perf_counter() - started
    profile = out / f"{name}_profile_step{steps}.txt"  # kept: the output folder goes below
    shutil.copyfile(out / name / "profile" / f"step_{steps}.txt", profile)
    shutil.rmtree(out / name, ignore_errors=True)  # the last step's checkpoint: ~39 GB at 2.8B under FSDP
    per_step = {p: [v for s, v in tracker.series(f"time/{p}_s") if s > 0] for p in ("generate", "train")}
    tokens = [v for s, v in tracker.series("train/generated_tokens") if s > 0]
    losses = [v for s, v in tracker.series("train/loss") if s > 0]
    ok = len(losses) == steps and all(math.isfinite(x) for x in losses)
    gen_s, train_s = per_step["generate"][-1], per_step["train"][-1]
    shape = model_shape(str(policy))
    result = {
        "wall_s": round(wall, 1),
        "generate_s": round(gen_s, 2),
        "train_s": round(train_s, 2),
        "tokens_per_s": round(tokens[-1] / gen_s, 1),
        "params_b": round(shape.params / 1e9, 3),
        "plan_gib": round(plan.total / GIB, 1),
        "plan_peak_phase": plan.peak_phase,
        "top_ops": top_ops(profile),
    }
    if device == "cuda":
        reserved, allocated = torch.cuda.max_memory_reserved() / GIB, torch.cuda.max_memory_allocated() / GIB
        # train FLOPs: policy forward + backward (6N per token; LoRA skips weight gradients: 4N) + reference forward (2N)
        trained_tokens = tokens[-1] + cfg.train.prompts_per_step * cfg.train.samples_per_prompt * 31
        per_token = (4 if cfg.model.lora else 6) * shape.params + 2 * shape.params
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name(0)), None)
        result.update(
            reserved_gib=round(reserved, 1),
            allocated_gib=round(allocated, 1),
            plan_over_reserved=round(plan.total / GIB / reserved, 2),
            mfu=round(per_token * trained_tokens / train_s / peak, 3) if peak else None,
        )
        ok &= plan.total / GIB >= 0.85 * reserved  # the plan may not under-predict by more than 15%
    text = ", ".join(f"{k} {v}" for k, v in result.items())
    return {"ok": ok, "result": text, **result}


def top_ops(profile: Path, count: int = 3) -> str:
    """The profiled step's costliest ops by self time, from its table (harness/train/profile.py)."""
    lines = profile.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("op "))
    return " / ".join(f"{line[:60].strip()} {line.split()[-1]}" for line in lines[header + 1 : header + 1 + count])


def part_fsdp1(out: Path, device: str, smoke: bool) -> dict:
    return train_part(
        out, device, smoke, "fsdp1", ["train.parallel=fsdp", "model.gradient_checkpointing=true"], "train"
    )


def part_lora(out: Path, device: str, smoke: bool) -> dict:
    return train_part(out, device, smoke, "lora", ["model.lora={rank: 16}"], "train")


def part_ckpt(out: Path, device: str, smoke: bool) -> dict:
    return train_part(out, device, smoke, "ckpt", ["model.gradient_checkpointing=true"], "train")


def part_gqa_val(out: Path, device: str, smoke: bool) -> dict:
    """Issue 21's failing configuration (see the module docstring). Each run's result, or the first
    line of the sampler's crash report (harness.rollout.hf.sampler_crash_report)."""
    from harness.config import load_run_config
    from harness.tracking import MemoryTracker
    from harness.train.trainer import train

    crashes = FirstLines()
    logging.getLogger("harness.rollout.hf").addHandler(crashes)
    policy = random_llama(out / f"random_llama_gqa{'_toy' if smoke else ''}", shapes(smoke)["gqa"], device)
    size = (
        [
            "train.prompts_per_step=4",
            "train.samples_per_prompt=2",
            "train.micro_batch_size=4",
            "train.max_new_tokens=48",
        ]
        if smoke
        else [
            "train.prompts_per_step=8",
            "train.samples_per_prompt=4",
            "train.micro_batch_size=8",
            "train.max_new_tokens=96",
        ]
    )  # validation samples as many; at 102 tokens ~1 draw in 100 is EOS
    every = [
        f"model.policy={policy}",
        f"model.device={device}",
        "method=dpo",
        "train.parallel=fsdp",
        "model.gradient_checkpointing=true",
        "model.param_dtype=float32",
        "model.compute_dtype=bfloat16",
        "train.steps=2",
        "train.lr=1e-6",
        "validation.every=1000",
        "validation.prompts=64",
        "rollout.batch_size=16",
        "checkpoint.every=1000",
    ]
    limit = next(cpu if smoke else gpu for name, gpu, cpu in PARTS if name == "gqa_val")
    found, ok, longest = [], True, 0.0
    for run in ("non_verifiable", "sharded module", "joint"):
        if time.perf_counter() - STARTED + 1.3 * longest > limit:  # it would likely not end in time
            found.append(f"{run}: not run (time)")
            continue
        task_mix = "non_verifiable" if run == "sharded module" else run
        cfg = load_run_config(
            ROOT / "sweeps/runs/tiny.yaml",
            [*size, *every, f"task_mix={task_mix}", f"output_dir={out / 'gqa_val' / run.split()[0]}"],
        )
        started, crashes.lines = time.perf_counter(), []
        try:
            if run == "sharded module":
                result = f"{sample_through_sharded_policy(cfg, str(policy))} samples"
            else:
                tracker = MemoryTracker()
                train(cfg, tracker=tracker, progress=False)
                (_, reward), (_, length) = tracker.series("val/reward")[0], tracker.series("val/response_len")[0]
                result = f"val reward {reward:.2f}, length {length:.0f}"
            found.append(f"{run}: ok, {result}, {time.perf_counter() - started:.0f} s")
        except Exception as exc:  # noqa: BLE001 - the next run may say more; the whole report is in the log
            traceback.print_exc()
            ok = False
            found.append(f"{run}: {(crashes.lines or [f'{type(exc).__name__}: {exc}'])[0][:400]}")
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # its checkpoint: ~11 GB at 0.76B
        longest = max(longest, time.perf_counter() - started)
    return {"ok": ok, "status": "ok" if ok else "CRASHED", "result": "; ".join(found)}


def sample_through_sharded_policy(cfg, policy_path: str) -> int:
    """The validation samples as issue 21's run drew them: through the FSDP-sharded, gradient-checkpointed
    policy module itself (bf16 compute over fp32 masters), not rank 0's generator copy. Returns the count."""
    from harness import distributed
    from harness.chat import chat_prompt
    from harness.models import load_policy
    from harness.rollout import HFGenerator, SamplingParams
    from harness.train.trainer import prompt_pools

    dist = distributed.setup(cfg)
    try:
        policy, tokenizer = load_policy(policy_path, cfg.model.param_dtype, "cpu")
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False  # as build_models leaves it
        distributed.shard(policy, dist, cfg.model.compute_dtype)
        _, pools, _ = prompt_pools(cfg, policy_path)
        prompts = [chat_prompt(tokenizer, r["prompt"]) for records in pools.values() for r in records]
        sampler = HFGenerator(policy, tokenizer, batch_size=cfg.rollout.batch_size, copy_model=False)
        params = SamplingParams(
            n=1,
            temperature=cfg.validation.temperature,
            top_p=cfg.validation.top_p,
            max_new_tokens=cfg.train.max_new_tokens,
            seed=cfg.seed,
        )
        return sum(len(group) for group in sampler.generate(prompts, params))
    finally:
        dist.close()


class FirstLines(logging.Handler):
    """The first line of every error record a logger emits (the sampler's crash report starts there)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().splitlines()[0])


def part_decode(out: Path, device: str, smoke: bool) -> dict:
    """Per-token decode step of an 8B-shaped model, batch 64, after a prefill of 512 or 2048 tokens."""
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    shape = {**shapes(smoke)["decode"], "vocab_size": shapes(smoke)["decode"]["vocab_size"] or 512}
    config = LlamaConfig(**shape, tie_word_embeddings=False)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    batch, steps = (4, 3) if smoke else (64, 16)
    found = {}
    for context in (16, 32) if smoke else (512, 2048):
        for sync in (True, False):
            ids = torch.randint(0, shape["vocab_size"], (batch, context), device=device)
            cache = DynamicCache()
            with torch.no_grad():
                out_ = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                token = out_.logits[:, -1].argmax(-1, keepdim=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(steps):
                    out_ = model(input_ids=token, past_key_values=cache, use_cache=True)
                    token = out_.logits[:, -1].argmax(-1, keepdim=True)
                    if sync:
                        token.sum().item()  # what a sampler that checks for EOS on the host pays
                if device == "cuda":
                    torch.cuda.synchronize()
            found[f"kv{context}{'_sync' if sync else ''}_ms"] = round((time.perf_counter() - started) / steps * 1e3, 1)
            del cache
    return {"ok": True, "result": ", ".join(f"{k} {v}" for k, v in found.items()), **found}


PART_FUNCTIONS = {
    "logprob": part_logprob,
    "gqa_val": part_gqa_val,
    "resume": part_resume,
    "fsdp1": part_fsdp1,
    "lora": part_lora,
    "ckpt": part_ckpt,
    "decode": part_decode,
}


def run_part(name: str, out: Path, smoke: bool) -> int:
    device = "cpu" if smoke else "cuda"
    print(f"{name}: starting on {device}", flush=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s", force=True)
    try:
        found = PART_FUNCTIONS[name](out, device, smoke)
        found.setdefault("status", "ok" if found["ok"] else "FAILED")
    except Exception as exc:  # noqa: BLE001 - the row says what broke; the traceback is in the log
        traceback.print_exc()
        found = {"ok": False, "status": "CRASHED", "result": f"{type(exc).__name__}: {str(exc)[:160]}"}
    (out / f"{name}.json").write_text(json.dumps(found, indent=2))
    return 0 if found["ok"] else 1


def last_line(log: Path) -> str:
    """The last line a part wrote before it stopped: how far it got."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(none)"


def run_all(parts: list[str], out: Path, smoke: bool, limit_scale: float = 1.0) -> int:
    rows = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if smoke:
        env.setdefault("OMP_NUM_THREADS", "1")
    for name, gpu_limit, cpu_limit in PARTS:
        if name not in parts:
            continue
        limit = (cpu_limit if smoke else gpu_limit) * limit_scale
        (out / f"{name}.json").unlink(missing_ok=True)
        started = time.perf_counter()
        command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(out)]
        with open(out / f"{name}.log", "w") as log:
            try:
                subprocess.run(
                    command + (["--cpu-smoke"] if smoke else []),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=limit,
                    env=env,
                    cwd=ROOT,
                )
                found = (
                    json.loads((out / f"{name}.json").read_text())
                    if (out / f"{name}.json").is_file()
                    else {"status": "CRASHED", "result": f"no result; last log line: {last_line(out / f'{name}.log')}"}
                )
            except subprocess.TimeoutExpired:
                found = {
                    "status": "TIMEOUT",
                    "result": f"over its {limit:.0f} s limit; last log line: {last_line(out / f'{name}.log')}",
                }
        rows.append((name, found["status"], time.perf_counter() - started, found["result"]))
        print(f"{name}: {found['status']} ({rows[-1][2]:.0f} s)", flush=True)
    print(f"\n{'part':<9}{'status':<9}{'s':>5}  result")
    for name, status, seconds, result in rows:
        print(f"{name:<9}{status:<9}{seconds:>5.0f}  {result}")
    failed = [row for row in rows if row[1] not in ("ok", "skipped")]
    print("GPU CHECK" if not smoke else "CPU SMOKE", "PASSED" if not failed else f"FAILED ({len(failed)} part(s))")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="results folder")
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at toy size on the CPU")
    parser.add_argument("--parts", default=",".join(name for name, _, _ in PARTS))
    parser.add_argument(
        "--limit-scale", type=float, default=1.0, help="multiply every part's time limit (a GPU slower than an H200: 2)"
    )
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # one part, in this process
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.part:
        return run_part(args.part, out, args.cpu_smoke)
    # every argument is checked before the results folder exists: a bad command leaves nothing behind
    if not args.limit_scale > 0:
        parser.error(f"--limit-scale must be a positive number, got {args.limit_scale}")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PART_FUNCTIONS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; the parts are {', '.join(PART_FUNCTIONS)}")
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here; run with --cpu-smoke to check the script on the CPU")
        print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return run_all(parts, out, args.cpu_smoke, args.limit_scale)


if __name__ == "__main__":
    sys.exit(main())
