"""The trainer's validation pass (harness.train.trainer.validate) on the tiny policy."""

from pathlib import Path

import torch

from harness.chat import chat_prompt
from harness.config import load_run_config
from harness.models import load_policy
from harness.rollout import HFGenerator, SamplingParams
from harness.train.sequences import pack
from harness.tasks import task_pools
from harness.train.trainer import validate

ROOT = Path(__file__).resolve().parent.parent


def test_validation_entropy_runs_at_most_a_micro_batch_per_forward(tiny_assets):
    """Validation's entropy pass ran every validation rollout in one forward whatever
    `train.micro_batch_size` said (4.9 GiB of logits per full-length row at 8B on an H200). Its forwards
    (those without a KV cache, unlike the sampler's) must each hold at most micro_batch_size rows, and
    the entropy must stay the mean over every response token, computed here from the full logits."""
    cfg = load_run_config(
        ROOT / "sweeps/runs/tiny.yaml", ["train.micro_batch_size=3", "validation.prompts=7", "train.max_new_tokens=16"]
    )
    policy, tokenizer = load_policy(tiny_assets.policy_dir)
    validator = HFGenerator(policy, tokenizer, copy_model=False)
    pools = {task: records[:7] for task, records in task_pools(cfg.task_mix, cfg.data, "validation").items()}
    rows = []
    hook = policy.register_forward_pre_hook(
        lambda module, args, kwargs: None if kwargs.get("use_cache") else rows.append(kwargs["input_ids"].shape[0]),
        with_kwargs=True,
    )
    try:
        metrics = validate(cfg, validator, policy, pools, None)
    finally:
        hook.remove()
    assert rows and max(rows) <= 3 and sum(rows) >= 7, rows

    records = pools["verifiable"]
    params = SamplingParams(
        n=1,
        temperature=cfg.validation.temperature,
        top_p=cfg.validation.top_p,
        max_new_tokens=cfg.train.max_new_tokens,
        seed=cfg.seed,
    )
    rollouts = [g[0] for g in validator.generate([chat_prompt(tokenizer, r["prompt"]) for r in records], params)]
    batch = pack(rollouts, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    logp = torch.log_softmax(logits / cfg.train.temperature, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    mask = batch.response_mask
    assert abs(metrics["val/entropy"] - float((entropy * mask).sum() / mask.sum())) < 1e-5
