"""Build, cache and load the embedded tiny assets: data, SFT-warm-started policy, reward model.

``ensure_tiny_assets()`` returns the cached build for the current recipe, building it first if
needed (about two minutes on 2 CPU cores). The cache lives in
``<root>/tiny/<recipe_hash>/`` with root = argument, else ``$HARNESS_CACHE``, else
``~/.cache/harness``. A build writes into a temp folder beside the final one, writes
``DONE.json`` last and renames the folder into place, so a half-written build is never seen;
an ``fcntl`` lock on ``<root>/tiny/.lock`` makes concurrent callers (e.g. sweep trials) wait
for one builder and then reuse its result.

The recipe (every size, seed, step count and learning rate, plus ``RECIPE_VERSION``) is hashed
into the folder name, so any change to it gives a fresh build instead of a stale one.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
from transformers.utils import logging as hf_logging

from harness.errors import ConfigError
from harness.tiny import chat_task, math_task
from harness.tiny.tokenizer import build_tiny_tokenizer

RECIPE_VERSION = 1

_DEFAULT_RECIPE = {
    "version": RECIPE_VERSION,
    "seed": 0,
    "math": {"splits": dict(math_task.DEFAULT_MATH_SPLITS), **math_task.DEFAULT_MATH_PARAMS},
    "chat": {"splits": dict(chat_task.DEFAULT_CHAT_SPLITS),
             "length_bias": chat_task.DEFAULT_LENGTH_BIAS, "preference_temperature": 0.1},
    "policy": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
               "num_attention_heads": 4, "max_position_embeddings": 256},
    # `direct_answer_fraction` of the math SFT targets are the bare boxed answer, the rest work the
    # chain step by step. The seed then mixes a guessing style (about 5% correct at T=1.0) with a
    # reliable one (about 54%), as a model that sometimes skips its reasoning does: RL has a
    # behaviour to select for, which a 3M model can learn in tens of steps, whereas its
    # arithmetic slips barely move in that budget. Measured at 600 steps and 0.3: 30% of answers
    # direct, 39% correct at T=1.0 and 53% at T=0.6; online DPO reached 67% at T=0.6 in 40 steps.
    # (Without direct answers, 400 steps gave 37% and RL moved it by less than its noise.)
    "sft": {"steps": 600, "direct_answer_fraction": 0.3, "math_per_batch": 56, "chat_per_batch": 16,
            "lr": 2e-3, "warmup_steps": 30,
            "min_lr_ratio": 0.1, "grad_clip": 1.0, "bf16_autocast": "auto", "pack_length": 128},
    # The reward model starts from the SFT policy's embeddings and first 2 layers (as RLHF reward
    # models start from the SFT model): a from-scratch one learned the task worse in budget.
    # Each step scores `group_size` synthetic responses to each of `prompts_per_batch` prompts
    # and trains on every pair within a group.
    "reward_model": {"num_hidden_layers": 2, "steps": 200,
                     "prompts_per_batch": 16, "group_size": 4,
                     "lr": 1e-3, "warmup_steps": 20, "heldout_pairs": 512, "bf16_autocast": "auto"},
    "seed_eval": {"problems": 256, "temperature": 1.0, "max_new_tokens": 48},
}


@dataclass(frozen=True)
class TinyAssets:
    """Paths of one finished build, and its ``DONE.json`` summary."""

    root: Path
    recipe_hash: str
    summary: dict = field(repr=False, compare=False)

    @property
    def policy_dir(self) -> Path:
        return self.root / "policy"

    @property
    def reward_model_dir(self) -> Path:
        return self.root / "reward_model"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


# ----------------------------------------------------------------------------- recipe and cache

def tiny_recipe(**overrides) -> dict:
    """The default recipe, with top-level keys or sections overridden, e.g.
    ``tiny_recipe(seed=1, sft={"steps": 500})``. Unknown keys raise ConfigError."""
    recipe = copy.deepcopy(_DEFAULT_RECIPE)
    for key, value in overrides.items():
        if key not in recipe:
            raise ConfigError(f"tiny recipe: unknown key {key!r}; expected one of {sorted(recipe)}.")
        if isinstance(recipe[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"tiny recipe: {key} must be a mapping of overrides, got {value!r}.")
            unknown = sorted(set(value) - set(recipe[key]))
            if unknown:
                raise ConfigError(f"tiny recipe: unknown keys {unknown} under {key!r}; expected "
                                  f"some of {sorted(recipe[key])}.")
            recipe[key].update(copy.deepcopy(value))
        else:
            recipe[key] = value
    return recipe


def recipe_hash(recipe: dict) -> str:
    """Short sha256 of the canonical JSON of the recipe."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def resolve_cache_root(cache_root: str | os.PathLike | None = None) -> Path:
    """Argument, else ``$HARNESS_CACHE``, else ``~/.cache/harness``."""
    if cache_root is not None:
        return Path(cache_root).expanduser()
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    return Path.home() / ".cache" / "harness"


def _load_assets(folder: Path) -> TinyAssets | None:
    done = folder / "DONE.json"
    if not done.is_file():
        return None
    summary = json.loads(done.read_text(encoding="utf-8"))
    return TinyAssets(root=folder, recipe_hash=summary["recipe_hash"], summary=summary)


def ensure_tiny_assets(cache_root: str | os.PathLike | None = None, progress: bool = True,
                       recipe: dict | None = None, force: bool = False) -> TinyAssets:
    """Return the cached build for `recipe` (default `tiny_recipe()`), building it if missing
    (or if `force`). Safe to call from several processes at once."""
    recipe = tiny_recipe() if recipe is None else recipe
    digest = recipe_hash(recipe)
    parent = resolve_cache_root(cache_root) / "tiny"
    final = parent / digest
    if not force and (assets := _load_assets(final)) is not None:
        return assets
    parent.mkdir(parents=True, exist_ok=True)
    log = _logger(progress)
    with open(parent / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process building tiny assets (lock {parent / '.lock'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (assets := _load_assets(final)) is not None:
            return assets  # the process we waited for built it
        building = Path(tempfile.mkdtemp(prefix=f".{digest}.building.", dir=parent))
        try:
            log(f"building tiny assets {digest} in {final}")
            build_tiny_assets(building, recipe, progress)
            building.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            _replace_folder(building, final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return _load_assets(final)


def _replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`; an older folder there (forced rebuild, or one left without
    DONE.json) is moved aside first and deleted."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.rename(final, old / "previous")
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, final)


def prepare_main(cache_root: str | os.PathLike | None = None, force: bool = False) -> TinyAssets:
    """What `harness prepare` runs: ensure the build, then print paths and the build summary."""
    assets = ensure_tiny_assets(cache_root, progress=True, force=force)
    summary = assets.summary
    seed, rm = summary["seed_eval"], summary["reward_model"]
    print(f"tiny assets {assets.recipe_hash}: {assets.root}")
    print(f"  policy:       {assets.policy_dir} ({summary['policy']['params']:,} params)")
    print(f"  reward model: {assets.reward_model_dir} ({rm['params']:,} params)")
    print(f"  data:         {assets.data_dir}")
    print(f"  seed math accuracy (T={seed['math']['temperature']}, {seed['math']['problems']} "
          f"validation problems): {seed['math']['accuracy']:.3f}")
    print(f"  seed chat quality: {seed['chat']['mean_quality']:.3f}, RM score "
          f"{seed['chat']['mean_rm_score']:.2f}")
    print(f"  reward model held-out pair accuracy: {rm['heldout_pair_accuracy']:.3f} "
          f"(correct vs wrong: {rm['correct_vs_wrong_accuracy']:.3f}); filler suffix adds "
          f"{rm['filler_suffix_delta']:+.2f} to the score")
    phases = ", ".join(f"{name} {t['wall_s']:.1f}s" for name, t in summary["timings"].items())
    print(f"  build seconds: {summary['total_wall_s']:.1f} ({phases})")
    return assets


# ----------------------------------------------------------------------------- the build

def build_tiny_assets(out_dir: str | os.PathLike, recipe: dict | None = None,
                      progress: bool = True) -> dict:
    """Build everything into `out_dir` (data/, policy/, reward_model/, then DONE.json) and
    return the summary written to DONE.json. Prefer `ensure_tiny_assets`, which caches."""
    recipe = tiny_recipe() if recipe is None else recipe
    out_dir, log, timings = Path(out_dir), _logger(progress), {}
    started = time.perf_counter()
    with _deterministic_torch(), _phase(timings, "data"):
        log("building tiny tokenizer and data")
        tokenizer = build_tiny_tokenizer()
        math_splits = math_task.generate_math_splits(
            recipe["seed"], recipe["math"]["splits"],
            {key: recipe["math"][key] for key in math_task.DEFAULT_MATH_PARAMS})
        chat_splits = chat_task.generate_chat_splits(recipe["seed"] + 1, recipe["chat"]["splits"])
        math_task.write_math_splits(out_dir / "data", math_splits)
        for name, records in chat_splits.items():
            math_task.write_jsonl(out_dir / "data" / "chat" / f"{name}.jsonl", records)
    with _deterministic_torch(), _phase(timings, "sft"):
        policy = train_policy(tokenizer, math_splits["train"], chat_splits["train"], recipe, log)
        _save_policy(policy, tokenizer, out_dir / "policy")
    with _deterministic_torch(), _phase(timings, "reward_model"):
        reward_model, rm_stats = train_reward_model(tokenizer, chat_splits, recipe, policy, log)
        _save_pretrained(reward_model, tokenizer, out_dir / "reward_model")
    with _deterministic_torch(), _phase(timings, "seed_eval"):
        seed_eval = evaluate_seed(policy, reward_model, tokenizer, math_splits["validation"],
                                  chat_splits["validation"], recipe, log)
    summary = {
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe,
        "timings": timings,
        "total_wall_s": round(time.perf_counter() - started, 2),
        "policy": {"params": sum(p.numel() for p in policy.parameters())},
        "reward_model": {"params": sum(p.numel() for p in reward_model.parameters()), **rm_stats},
        "seed_eval": seed_eval,
        "bf16_autocast": {"sft": use_bf16(recipe["sft"]["bf16_autocast"]),
                          "reward_model": use_bf16(recipe["reward_model"]["bf16_autocast"])},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "built_by_pid": os.getpid(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / "DONE.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"tiny assets built in {summary['total_wall_s']:.0f}s: seed math accuracy "
        f"{seed_eval['math']['accuracy']:.3f}, RM held-out accuracy "
        f"{rm_stats['heldout_pair_accuracy']:.3f}")
    return summary


def train_policy(tokenizer, math_records: list[dict], chat_records: list[dict], recipe: dict,
                 log=print):
    """SFT a fresh Llama on math solutions mixed with chat responses (assistant tokens only)."""
    sft, seed = recipe["sft"], recipe["seed"]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=recipe["policy"][
        "num_attention_heads"], tie_word_embeddings=True, **recipe["policy"],
        **_special_ids(tokenizer))
    model = LlamaForCausalLM(config)
    rng = random.Random(seed)
    style_rng = random.Random(seed + 7)
    math_examples = [encode_conversation(tokenizer, r["problem"], sft_math_target(r, sft, style_rng))
                     for r in math_records]
    chat_examples = [encode_conversation(tokenizer, r["prompt"], chat_task.sft_response(r, rng))
                     for r in chat_records]
    math_batches = _index_stream(len(math_examples), sft["math_per_batch"], seed)
    chat_batches = _index_stream(len(chat_examples), sft["chat_per_batch"], seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft["lr"], betas=(0.9, 0.98),
                                  weight_decay=0.0)
    schedule = _warmup_cosine(optimizer, sft["warmup_steps"], sft["steps"], sft["min_lr_ratio"])
    model.train()
    running, started = 0.0, time.perf_counter()
    for step in range(1, sft["steps"] + 1):
        examples = ([math_examples[i] for i in next(math_batches)]
                    + [chat_examples[i] for i in next(chat_batches)])
        if sft["pack_length"]:
            inputs = _pack(examples, tokenizer.pad_token_id, sft["pack_length"])
        else:
            inputs = _collate(examples, tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(sft["bf16_autocast"])):
            loss = model(**inputs, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), sft["grad_clip"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % 50 == 0 or step == sft["steps"]:
            window = 50 if step % 50 == 0 else step % 50
            log(f"SFT step {step}/{sft['steps']} loss {running / window:.3f} "
                f"({time.perf_counter() - started:.0f}s)")
            running = 0.0
    model.eval()
    return model


def sft_math_target(record: dict, sft: dict, rng: random.Random) -> str:
    """The worked solution, or (with probability `direct_answer_fraction`) only its boxed answer."""
    if rng.random() < sft["direct_answer_fraction"]:
        return f"$\\boxed{{{record['answer']}}}$"
    return record["solution"]


def train_reward_model(tokenizer, chat_splits: dict, recipe: dict, policy, log=print):
    """Bradley-Terry training of a small LlamaForSequenceClassification (started from `policy`)
    on synthetic chat comparisons with soft labels sigmoid(utility gap / temperature);
    returns (model, held-out stats)."""
    rm, chat, seed = recipe["reward_model"], recipe["chat"], recipe["seed"]
    torch.manual_seed(seed + 2)
    model = _new_reward_model(tokenizer, rm, recipe["policy"], policy)
    rng = random.Random(seed + 3)
    groups = chat_task.make_preference_groups(chat_splits["train"],
                                              rm["steps"] * rm["prompts_per_batch"], rng,
                                              rm["group_size"])
    held_out_records = chat_splits["validation"] + chat_splits.get("test", [])
    held_out_pairs = chat_task.make_preference_pairs(
        held_out_records, rm["heldout_pairs"], rng, chat["length_bias"],
        chat["preference_temperature"])
    first, second = torch.triu_indices(rm["group_size"], rm["group_size"], 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rm["lr"], betas=(0.9, 0.98),
                                  weight_decay=0.0)
    schedule = _warmup_cosine(optimizer, rm["warmup_steps"], rm["steps"], 0.1)
    model.train()
    running, started = 0.0, time.perf_counter()
    for step in range(1, rm["steps"] + 1):
        batch = groups[(step - 1) * rm["prompts_per_batch"]: step * rm["prompts_per_batch"]]
        texts = [rm_input_text(tokenizer, g["record"]["prompt"], response)
                 for g in batch for response in g["responses"]]
        utilities = torch.tensor([[chat_task.utility(g["record"], response, chat["length_bias"])
                                   for response in g["responses"]] for g in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(rm["bf16_autocast"])):
            scores = _rm_forward(model, tokenizer, texts).float().view(len(batch), -1)
        # Soft Bradley-Terry: P(i over j) = sigmoid((u_i - u_j) / temperature), all pairs i < j.
        target = torch.sigmoid((utilities[:, first] - utilities[:, second])
                               / chat["preference_temperature"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            scores[:, first] - scores[:, second], target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % 50 == 0 or step == rm["steps"]:
            log(f"reward model step {step}/{rm['steps']} loss "
                f"{running / (50 if step % 50 == 0 else step % 50):.3f} "
                f"({time.perf_counter() - started:.0f}s)")
            running = 0.0
    model.eval()
    return model, reward_model_stats(model, tokenizer, held_out_pairs, held_out_records, rng)


def reward_model_stats(model, tokenizer, pairs: list[dict], records: list[dict],
                       rng: random.Random) -> dict:
    """Held-out pairwise accuracy (against the utility and against quality alone) and the
    size of the length bias: the mean score change from appending filler or an extra item."""
    a = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["a"] for p in pairs])
    b = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["b"] for p in pairs])
    decided = [(sa > sb) == (p["p_a"] > 0.5) for p, sa, sb in zip(pairs, a, b) if p["p_a"] != 0.5]
    by_quality = [(sa > sb) == (p["quality_a"] > p["quality_b"]) for p, sa, sb in zip(pairs, a, b)
                  if abs(p["quality_a"] - p["quality_b"]) >= 0.5]
    prompts = [r["prompt"] for r in records]
    plain = score_responses(model, tokenizer, prompts, [r["reference"] for r in records])
    padded = score_responses(model, tokenizer, prompts,
                             [r["reference"] + rng.choice(chat_task.FILLER_SUFFIXES) for r in records])
    lists = [r for r in records if r["family"] == "list"]
    extra = score_responses(model, tokenizer, [r["prompt"] for r in lists],
                            [chat_task.core_variants(r, rng)[1] for r in lists])
    list_plain = [s for s, r in zip(plain, records) if r["family"] == "list"]
    return {
        "heldout_pairs": len(pairs),
        "heldout_pair_accuracy": _mean(decided),
        "correct_vs_wrong_accuracy": _mean(by_quality),
        "filler_suffix_delta": _mean([p - q for p, q in zip(padded, plain)]),
        "extra_item_delta": _mean([e - q for e, q in zip(extra, list_plain)]),
        "reference_score_mean": _mean(plain),
    }


def evaluate_seed(policy, reward_model, tokenizer, math_records: list[dict],
                  chat_records: list[dict], recipe: dict, log=print) -> dict:
    """Sampled seed accuracy on math validation, and seed chat quality / RM score / length."""
    evaluation, seed = recipe["seed_eval"], recipe["seed"]
    math_stats = sample_math_accuracy(policy, tokenizer, math_records[:evaluation["problems"]],
                                      evaluation["temperature"], seed=seed,
                                      max_new_tokens=evaluation["max_new_tokens"])
    log(f"seed math accuracy at T={evaluation['temperature']}: {math_stats['accuracy']:.3f}")
    prompts = [r["prompt"] for r in chat_records]
    texts, lengths = sample_responses(policy, tokenizer, prompts, evaluation["temperature"],
                                      seed=seed, max_new_tokens=evaluation["max_new_tokens"])
    rm_scores = score_responses(reward_model, tokenizer, prompts, texts)
    chat_stats = {"prompts": len(prompts), "temperature": evaluation["temperature"],
                  "mean_quality": _mean([chat_task.quality(r, t) for r, t in zip(chat_records, texts)]),
                  "mean_rm_score": _mean(rm_scores), "mean_response_tokens": _mean(lengths)}
    return {"math": math_stats, "chat": chat_stats}


# ----------------------------------------------------------------------------- model helpers

def encode_conversation(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the templated (prompt, response) conversation and SFT labels that are -100
    everywhere but the response and its closing eos token."""
    prompt_ids = tokenizer.encode(_generation_prompt(tokenizer, prompt), add_special_tokens=False)
    full_ids = tokenizer.encode(
        tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                       {"role": "assistant", "content": response}], tokenize=False),
        add_special_tokens=False)
    assert full_ids[:len(prompt_ids)] == prompt_ids, "chat template prefix is not stable"
    return full_ids, [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]


def _new_reward_model(tokenizer, rm: dict, policy_arch: dict, policy):
    """LlamaForSequenceClassification (num_labels=1) holding the policy's embeddings and first
    `num_hidden_layers` layers; the score head starts random."""
    if not 1 <= rm["num_hidden_layers"] <= policy_arch["num_hidden_layers"]:
        raise ConfigError(f"tiny recipe: reward_model.num_hidden_layers is "
                          f"{rm['num_hidden_layers']!r}; expected 1..{policy_arch['num_hidden_layers']} "
                          f"(the reward model reuses the policy's first layers).")
    arch = {**policy_arch, "num_hidden_layers": rm["num_hidden_layers"]}
    config = LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=arch["num_attention_heads"],
                         num_labels=1, **arch, **_special_ids(tokenizer))
    model = LlamaForSequenceClassification(config)
    body = {key: value for key, value in policy.model.state_dict().items()
            if not key.startswith("layers.") or int(key.split(".")[1]) < arch["num_hidden_layers"]}
    missing, unexpected = model.model.load_state_dict(body, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def rm_input_text(tokenizer, prompt: str, response: str) -> str:
    """The reward model's input: the full templated conversation (ends with eos)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                          {"role": "assistant", "content": response}],
                                         tokenize=False)


@torch.no_grad()
def score_responses(model, tokenizer, prompts: list[str], responses: list[str],
                    batch_size: int = 128) -> list[float]:
    """Reward-model scores (logit at the last non-pad token, right padding)."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        texts = [rm_input_text(tokenizer, p, r) for p, r in
                 zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
        scores.extend(_rm_forward(model, tokenizer, texts).tolist())
    return scores


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: list[str], temperature: float, *,
                     top_p: float = 1.0, max_new_tokens: int = 48, seed: int = 0,
                     batch_size: int = 128) -> tuple[list[str], list[int]]:
    """Generate one response per user prompt (temperature 0 = greedy). Returns the texts
    (special tokens stripped) and the response lengths in tokens, eos included."""
    torch.manual_seed(seed)
    texts, lengths = [], []
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
                if temperature > 0 else {"do_sample": False})
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer.encode(_generation_prompt(tokenizer, p), add_special_tokens=False)
                   for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        attention_mask = (input_ids != pad).long()
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                max_new_tokens=max_new_tokens, pad_token_id=pad,
                                eos_token_id=eos, **sampling)
        for row in output[:, width:].tolist():
            response = row[:row.index(eos) + 1] if eos in row else row
            lengths.append(len(response))
            texts.append(tokenizer.decode(response, skip_special_tokens=True))
    return texts, lengths


def sample_math_accuracy(model, tokenizer, records: list[dict], temperature: float, *,
                         top_p: float = 1.0, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """One sample per problem: accuracy, share with a boxed answer, mean length in tokens."""
    prompts = [math_task.TINY_MATH_PROMPT_TEMPLATE.format(problem=r["problem"]) for r in records]
    texts, lengths = sample_responses(model, tokenizer, prompts, temperature, top_p=top_p,
                                      max_new_tokens=max_new_tokens, seed=seed)
    return {"problems": len(records), "temperature": temperature, "top_p": top_p,
            "accuracy": _mean([math_task.is_correct(t, r["answer"]) for t, r in zip(texts, records)]),
            "well_formed": _mean([math_task.extract_boxed(t) is not None for t in texts]),
            "mean_response_tokens": _mean(lengths)}


def _rm_forward(model, tokenizer, texts: list[str]) -> torch.Tensor:
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = _padded_width([len(ids) for ids in encoded])
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
    return model(input_ids=input_ids, attention_mask=(input_ids != pad).long()).logits[:, 0]


def _generation_prompt(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         add_generation_prompt=True, tokenize=False)


def _special_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _save_policy(model, tokenizer, folder: Path) -> None:
    model.generation_config = GenerationConfig(**_special_ids(tokenizer))
    _save_pretrained(model, tokenizer, folder)


def _save_pretrained(model, tokenizer, folder: Path) -> None:
    """save_pretrained (safetensors) without transformers' per-shard progress bar."""
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def _padded_width(lengths, multiple: int = 16) -> int:
    """Round the batch width up to a multiple of 16: a handful of distinct shapes, because
    oneDNN compiles new bf16 kernels (seconds each) for every new shape it meets."""
    return -(-max(lengths) // multiple) * multiple


def _collate(examples, pad_id: int):
    width = _padded_width([len(ids) for ids, _ in examples])
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in examples])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in examples])
    lengths = torch.tensor([len(ids) for ids, _ in examples])
    attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _pack(examples, pad_id: int, row_length: int) -> dict:
    """Pack examples into rows of `row_length` tokens (first fit, longest first) with
    position ids restarting at 0 for each example: with no attention mask, transformers reads
    the restarts as packed sequences and attends block-diagonally. Saves the ~20% of tokens
    that padding mixed math/chat lengths would waste. Labels never cross an example boundary
    (each example starts with prompt tokens, labelled -100)."""
    rows: list[list] = []
    for ids, labels in sorted(examples, key=lambda example: -len(example[0])):
        row = next((row for row in rows if row[0] + len(ids) <= row_length), None)
        if row is None:
            row = [0, [], [], []]
            rows.append(row)
        row[0] += len(ids)
        row[1].extend(ids)
        row[2].extend(labels)
        row[3].extend(range(len(ids)))
    for row in rows:  # the tail of a row is one more (padding) sequence, never labelled
        tail = row_length - row[0]
        row[1].extend([pad_id] * tail)
        row[2].extend([-100] * tail)
        row[3].extend(range(tail))
    return {"input_ids": torch.tensor([row[1] for row in rows]),
            "labels": torch.tensor([row[2] for row in rows]),
            "position_ids": torch.tensor([row[3] for row in rows])}


def _index_stream(size: int, per_batch: int, seed: int):
    """Endless batches of indices: successive seeded permutations (epochs without replacement)."""
    generator = torch.Generator().manual_seed(seed)
    buffer: list[int] = []
    while True:
        while len(buffer) < per_batch:
            buffer.extend(torch.randperm(size, generator=generator).tolist())
        yield buffer[:per_batch]
        buffer = buffer[per_batch:]


def _warmup_cosine(optimizer, warmup: int, total: int, floor: float):
    def factor(step: int) -> float:
        progress = min(step, total) / max(total, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return min(1.0, (step + 1) / max(warmup, 1)) * (floor + (1 - floor) * cosine)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- small utilities

def use_bf16(setting) -> bool:
    """Resolve a recipe's ``bf16_autocast``: True, False, or "auto" = only where the CPU has
    native bf16 instructions (2x faster training there; emulated bf16 elsewhere is slower)."""
    if setting != "auto":
        return bool(setting)
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mean(values) -> float:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4) if values else float("nan")


def _logger(progress: bool):
    def log(message: str) -> None:
        if progress:
            print(f"[tiny] {message}", file=sys.stderr, flush=True)
    return log


@contextlib.contextmanager
def _phase(timings: dict, name: str):
    """Record wall and process-CPU seconds of a phase (CPU/wall ~ 2 means 2 busy cores; less
    means the cores were shared)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = {"wall_s": round(time.perf_counter() - wall, 2),
                     "cpu_s": round(time.process_time() - cpu, 2)}


@contextlib.contextmanager
def _deterministic_torch():
    """At most 2 threads and deterministic kernels during the build; restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(min(2, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
