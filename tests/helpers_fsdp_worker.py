"""Run by tests/test_distributed.py under `torchrun --nproc-per-node 2`; one check per argument, a
failed assertion exits non-zero. Each check prints one JSON line, from rank 0, for the test to read."""

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
    from harness.train.sequences import pack, policy_logprobs
    from harness.rollout import Rollout
    from harness.tasks import task_pools
    from harness.tiny import ensure_tiny_assets
    from harness.train.trainer import validate

    cfg = load_run_config(
        ROOT / "sweeps/runs/tiny.yaml",
        ["train.parallel=fsdp", "model.device=cpu", "train.max_new_tokens=6", "validation.prompts=2"],
    )
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
    rollouts = [Rollout(0, i, prompt, prompt[: i + 2], "", "stop") for i in range(3)]
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


def rank0_load() -> None:
    """`build_models` under FSDP from the checkpoint folder in argv[2]: the peak host memory each rank
    added while building, then every rank's gathered weights, buffers, ties and forwards."""
    import resource

    from safetensors.torch import load_file

    from harness.config import load_run_config
    from harness.distributed import full_state_dict
    from harness.models import load_policy
    from harness.train.setup import build_models

    def rss_mib() -> float:  # now
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20

    folder = sys.argv[2]
    cfg = load_run_config(
        ROOT / "sweeps/runs/tiny.yaml",
        ["train.parallel=fsdp", "model.device=cpu", "model.compute_dtype=bfloat16", "model.reference_offload=true"],
    )
    dist = distributed.setup(cfg)
    seen = {}
    before = rss_mib()

    class RecordingSource:  # what rank 0's rollout source saw of the freshly loaded policy
        def __init__(self, policy):
            seen.update(policy.state_dict())

        def place(self, device, dtype) -> None:
            pass

    models = build_models(cfg, folder, dist, lambda policy, _: RecordingSource(policy))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before  # ru_maxrss: KiB, peak so far
    checkpoint = load_file(str(Path(folder) / "model.safetensors"))
    policy, reference = models.policy, models.reference
    out: dict = {
        "rank": dist.rank,
        "peak_rss_growth_mib": grown,
        "tied": [m.lm_head.weight is m.model.embed_tokens.weight for m in (policy, reference)],
    }
    for name, model, dtype in (("policy", policy, torch.float32), ("reference", reference, torch.bfloat16)):
        weights = full_state_dict(model, dist)  # gathered on rank 0
        if dist.is_main:
            out[f"{name}_keys"] = sorted(weights) == sorted(set(checkpoint) | {"lm_head.weight"})
            out[f"{name}_equal"] = [
                k
                for k in weights
                if not torch.equal(weights[k], checkpoint.get(k, checkpoint["model.embed_tokens.weight"]).to(dtype))
            ]
    if dist.is_main:  # what the generator was opened from: the whole checkpoint, before sharding
        out["generator_source_equal"] = sorted(seen) == sorted(set(checkpoint) | {"lm_head.weight"}) and all(
            torch.equal(v, checkpoint.get(k, checkpoint["model.embed_tokens.weight"])) for k, v in seen.items()
        )
    buffers = {
        f"{name}.{k}": b.cpu()
        for name, m in (("policy", policy), ("reference", reference))
        for k, b in m.named_buffers()
    }
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 3, 7]])
    with torch.no_grad():
        logits = {"policy": policy(input_ids=ids).logits.float(), "reference": reference(input_ids=ids).logits.float()}
    everyone = dist.gather((buffers, logits))
    if dist.is_main:
        fresh = load_policy(folder, "float32", "cpu")[0]  # buffers as a plain from_pretrained computes them
        out["buffers_equal_fresh"] = all(
            torch.equal(b, dict(fresh.named_buffers())[k.partition(".")[2]]) for k, b in buffers.items()
        )
    out["buffers_equal_rank0"] = all(
        torch.equal(everyone[0][0][k], b) and everyone[0][0][k].dtype == b.dtype for k, b in buffers.items()
    ) and list(everyone[0][0]) == list(buffers)
    out["logits_equal_rank0"] = all(torch.equal(everyone[0][1][k], v) for k, v in logits.items())
    everyone = dist.gather(out)
    if dist.is_main:  # one printer: two ranks' lines can interleave in torchrun's output
        print(json.dumps({"ranks": everyone}))
    dist.close()


if __name__ == "__main__":
    {"collectives": collectives, "reshard": reshard, "rank0_load": rank0_load}[sys.argv[1]]()
