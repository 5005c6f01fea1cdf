"""Sharded data parallel training (`train.parallel=fsdp`): process group, FSDP2, rank-0 helpers.

    torchrun --standalone --nproc-per-node 2 -m harness train sweeps/runs/tiny.yaml train.parallel=fsdp

Every process holds 1/world of the policy's (and the reference's) fp32 master weights, gradients
and Adam moments (`torch.distributed.fsdp.fully_shard`). Rank 0 alone talks to the generator,
scores rollouts, logs to MLflow and writes checkpoints; what it produces is broadcast, and each
rank computes losses on its share of the step's pairs or sequences. Gradients are summed over
ranks (each micro-batch's loss is already weighted by its share of the whole step), so a step
equals the single-process step. An FSDP forward is collective: every rank runs every forward of
the sharded models, the same number of times (`Dist.chunks` pads short shares with zero-weight
micro-batches). Without `train.parallel=fsdp`, `Dist()` is a no-op stand-in of world size 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from harness.errors import ConfigError
from harness.precision import torch_dtype

log = logging.getLogger("harness.distributed")


def launch_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) as torchrun sets them; (0, 1, 0, 1) otherwise."""

    def get(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    world = get("WORLD_SIZE", 1)
    return get("RANK", 0), world, get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", world)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_launch(cfg, source: str = "config") -> None:
    """Refuse launch/config combinations that cannot work, before anything is created."""
    _, world, _, local_world = launch_env()
    parallel = cfg.train.parallel
    if world > 1 and parallel != "fsdp":
        raise ConfigError(
            f"{source}: launched as {world} processes (torchrun) but `train.parallel` = {parallel!r}; every "
            f"process would train its own full copy into the same output folder. Add `train.parallel=fsdp`, "
            f"or launch one process."
        )
    if parallel != "fsdp":
        return
    device = cfg.model.device
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{source}: `model.device` = 'cuda' with `train.parallel` = 'fsdp', but this machine has "
            f"no CUDA device; use `model.device=cpu` (gloo) or run on a GPU node."
        )
    if cuda and torch.cuda.device_count() < local_world:
        raise ConfigError(
            f"{source}: `train.parallel` = 'fsdp' with {local_world} processes on this node but only "
            f"{torch.cuda.device_count()} CUDA devices; launch `torchrun --nproc-per-node "
            f"{torch.cuda.device_count()}` or fewer."
        )
    threads = cfg.model.cpu_threads
    if not cuda and threads and threads * local_world > usable_cores():
        raise ConfigError(
            f"{source}: `model.cpu_threads` = {threads} x {local_world} FSDP processes = {threads * local_world} "
            f"threads, more than the {usable_cores()} usable CPU cores; spinning OpenMP threads would slow "
            f"every op many times over. Lower `model.cpu_threads` (to {max(1, usable_cores() // local_world)}) "
            f"or `--nproc-per-node`."
        )


@dataclass
class Dist:
    """This process's place in the job. `Dist()` is the single-process case."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank (pickled; only rollouts, rewards and metadata travel)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Per-rank weighted sums of step statistics -> the step's totals (keys agree on every rank)."""
        if not self.enabled:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(values)
        return dict(zip(keys, values.cpu().tolist()))

    def chunks(self, items: list, size: int) -> list[tuple[list, bool]]:
        """This rank's micro-batches of `items` as (chunk, real); every rank gets the same count.

        Ranks take contiguous, near-equal shares. A rank whose share runs out repeats a real item
        with `real=False` (its loss weight is 0), because each forward of a sharded model needs
        every rank. One process: plain consecutive chunks, all real.
        """
        if not items:
            return []
        if not self.enabled:
            return [(items[i : i + size], True) for i in range(0, len(items), size)]
        bounds = [len(items) * r // self.world for r in range(self.world + 1)]
        share = items[bounds[self.rank] : bounds[self.rank + 1]]
        count = -(-max(bounds[r + 1] - bounds[r] for r in range(self.world)) // size)
        out = [(share[i * size : (i + 1) * size], True) for i in range(count) if share[i * size : (i + 1) * size]]
        return out + [(items[:1], False)] * (count - len(out))

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(cfg) -> Dist:
    """Join (or, for a lone `train.parallel=fsdp` process, create) the process group."""
    if cfg.train.parallel != "fsdp":
        return Dist()
    rank, world, local_rank, _ = launch_env()
    cuda = torch.cuda.is_available() and cfg.model.device != "cpu"
    if "MASTER_ADDR" not in os.environ:  # one process without torchrun: a group of one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = process_group_backend(cuda)
    if not torch.distributed.is_initialized():
        # A dead or hung rank ends every other rank's wait after this (NCCL's watchdog and gloo alike).
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=cfg.train.collective_timeout_s))
    if rank != 0:
        logging.getLogger("harness").setLevel(logging.WARNING)  # one log, rank 0's
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    log.info("FSDP: %d processes (%s), this is rank %d on %s", world, backend, rank, device)
    return Dist(rank=rank, world=world, local_rank=local_rank, enabled=True, device=device)


def process_group_backend(cuda: bool) -> str:
    """The process group's backend for each device type. On CUDA, NCCL serves CUDA tensors and gloo
    serves CPU ones: a bare "nccl" group has no backend for a CPU tensor ("No backend type associated
    with device type cpu", which ended every FSDP GPU run at step 1), and with a CPU backend in the
    group, object collectives (broadcast, gather) pickle through gloo without a copy to the GPU."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- sharding and whole-model state dicts ---------------------------------------------------


def shard(model, dist: Dist, compute_dtype: str, offload: bool = False, trainable: bool = True):
    """FSDP2 over each decoder layer, then the root; compute in `compute_dtype`, reduce in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world,))
    compute = torch_dtype(compute_dtype)
    stored = next(model.parameters()).dtype
    mp = MixedPrecisionPolicy(param_dtype=compute if compute != stored else None, reduce_dtype=torch.float32)
    options = {"mesh": mesh, "mp_policy": mp}
    if offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=dist.device.type == "cuda")
    layer_types = tuple(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module, **options)
    # The root (embeddings, final norm, head) stays gathered after a forward by default, because a
    # backward follows; after a model that never trains it would stay gathered (+2 GiB at 8B), so the
    # reference regathers it per forward like its layers.
    fully_shard(model, **options, **({} if trainable else {"reshard_after_forward": True}))
    if trainable:  # sum over ranks (losses carry their global weights); plain SUM also suits gloo
        for module in model.modules():
            if hasattr(module, "set_gradient_divide_factor"):
                module.set_force_sum_reduction_for_comms(True)
                module.set_gradient_divide_factor(1.0)
    return model


def shard_from_rank0(model, dist: Dist, compute_dtype: str, offload: bool = False, trainable: bool = True):
    """`shard`, for a model whose weights only rank 0 loaded: the other ranks built it on the meta
    device (harness.models.build_on_meta), so no rank but 0 ever holds a whole copy in host memory.

    After sharding, those ranks allocate their (empty) shards where FSDP keeps them, then every
    tensor of rank 0's state dict is broadcast, one at a time, and each rank keeps its slice.
    Buffers not in a state dict (rotary `inv_freq`) are copied from rank 0 too. Tied weights stay
    one parameter. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    weights = model.state_dict() if dist.is_main else {}  # keeps rank 0's full copy alive until sent
    shard(model, dist, compute_dtype, offload=offload, trainable=trainable)
    if not dist.is_main:
        model.to_empty(device="cpu" if offload else dist.device)
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del weights
    _buffers_from_rank0(model, dist)
    return model


def _buffers_from_rank0(model, dist: Dist) -> None:
    """Every buffer := rank 0's, on the device rank 0 keeps it on (FSDP moves buffers to the GPU even
    when it offloads the parameters)."""
    layout = dist.broadcast(
        [(name, b.shape, b.dtype, b.device.type) for name, b in model.named_buffers()] if dist.is_main else None
    )
    mine = dict(model.named_buffers())
    if [name for name, *_ in layout] != list(mine):
        raise RuntimeError(f"rank {dist.rank}: buffers {list(mine)} differ from rank 0's {[n for n, *_ in layout]}")
    for name, shape, dtype, device_type in layout:
        device = torch.device("cpu") if device_type == "cpu" else dist.device
        value = mine[name] if dist.is_main else torch.empty(shape, dtype=dtype, device=device)
        torch.distributed.broadcast(value, src=0)
        if not dist.is_main:
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner), leaf, value)


def reshard(model) -> None:
    """Free a sharded model's gathered root after no-grad forwards (validation): without a backward,
    FSDP keeps it gathered until the next training step. No-op for an unsharded model."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.reshard()


def full_state_dict(model, dist: Dist) -> dict[str, torch.Tensor]:
    """The whole model's weights: on rank 0 (CPU) under FSDP, every rank's own otherwise. Collective.

    A LoRA policy gives its merged weights under the base model's names (what a generator loads)."""
    from harness.train.lora import is_lora, merged_state_dict

    if is_lora(model):
        return merged_state_dict(model)
    if not dist.enabled:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, weights: dict[str, torch.Tensor], dist: Dist) -> None:
    """Load a whole-model state dict (the same on every rank) into a sharded or plain model."""
    if not dist.enabled:
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def copy_weights(target, source, dist: Dist) -> None:
    """target := source, for two models sharded the same way (reference sync); no gathering."""
    if not dist.enabled:
        target.load_state_dict(source.state_dict())
        return
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    set_model_state_dict(target, get_model_state_dict(source))


def clip_grad_norm(model, max_norm: float) -> float:
    """Clip the (possibly sharded) gradients to `max_norm`; the norm before clipping, over all ranks."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def is_main_process() -> bool:
    return launch_env()[0] == 0
