"""Run by tests/test_distributed.py under `torchrun --nproc-per-node 2`; one check per argument, a
failed assertion exits non-zero. Each check prints one JSON line for the test to read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as c10d

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import distributed  # noqa: E402
from harness.distributed import Dist, launch_env  # noqa: E402


def stand_in_for_cuda_group(spec: str) -> str:
    """The backend spec `setup` makes for CUDA, with gloo in place of NCCL (absent from a CPU build) but
    the same device types served: a bare backend name serves its `backend_capability` devices, which
    for "nccl" is only "cuda"."""
    pairs = []
    for part in spec.split(","):
        device, _, backend = part.rpartition(":")
        devices = [device] if device else c10d.Backend.backend_capability[backend]
        pairs += [(d, "gloo") for d in devices]
    return ",".join(f"{d}:{b}" for d, b in pairs)


def collectives() -> None:
    rank, world, local_rank, _ = launch_env()
    spec = stand_in_for_cuda_group(distributed.process_group_backend(cuda=True))
    c10d.init_process_group(spec)
    dist = Dist(rank=rank, world=world, local_rank=local_rank, enabled=True, device=torch.device("cpu"))
    totals = dist.sum_stats({"train/loss": rank + 1.0, "train/kl": 0.25})
    assert totals == {"train/loss": 3.0, "train/kl": 0.5}, totals
    assert dist.broadcast({"from": rank}) == {"from": 0}
    assert dist.gather(rank * 10) == [0, 10]
    dist.barrier()
    if rank == 0:  # one line for the test to read (two ranks printing at once interleave)
        print(json.dumps({"spec": spec, "totals": totals}), flush=True)
    dist.close()


def reshard() -> None:
    """A sharded reference after a no-grad forward, and the policy after validation: is every parameter
    a sharded DTensor again (the root's embeddings and head not left gathered)?"""
    from torch.distributed.tensor import DTensor

    from harness.config import load_run_config
    from harness.models import load_policy
    from harness.rollout import make_generator
    from harness.sequences import pack, policy_logprobs
    from harness.rollout import Rollout
    from harness.tasks import task_pools
    from harness.tiny import ensure_tiny_assets
    from harness.trainer import validate

    cfg = load_run_config(ROOT / "sweeps/runs/tiny.yaml", ["train.parallel=fsdp", "model.device=cpu",
                                                           "train.max_new_tokens=6", "validation.prompts=2"])
    dist = distributed.setup(cfg)
    policy_dir = str(ensure_tiny_assets().policy_dir)
    policy, tokenizer = load_policy(policy_dir, "float32", "cpu")
    reference, _ = load_policy(policy_dir, "float32", "cpu")
    reference.eval().requires_grad_(False)
    distributed.shard(policy, dist, "float32")
    distributed.shard(reference, dist, "float32", trainable=False)

    def gathered(model) -> list[str]:
        return [name for name, p in model.named_parameters() if not isinstance(p, DTensor)]

    prompt = tokenizer("Compute 3 + 4.", add_special_tokens=False)["input_ids"]
    rollouts = [Rollout(0, i, prompt, prompt[:i + 2], "", "stop") for i in range(3)]
    batch = pack(rollouts, tokenizer.pad_token_id, dist.device)
    with torch.no_grad():
        policy_logprobs(reference, batch, 1.0, bucketed=False)
    after_reference = gathered(reference)
    validator = make_generator("hf", policy, tokenizer, live=True)
    pools = {task: records[:2] for task, records in task_pools(cfg.task_mix, cfg.data, "validation").items()}
    validate(cfg, validator, policy, pools, None)
    after_validation = gathered(policy)
    if launch_env()[0] == 0:  # one line for the test to read (two ranks printing at once interleave)
        print(json.dumps({"reference": after_reference, "policy": after_validation}), flush=True)
    assert not after_reference and not after_validation
    dist.close()


if __name__ == "__main__":
    {"collectives": collectives, "reshard": reshard}[sys.argv[1]]()
