"""Collectives and FSDP memory on 2 real gloo ranks (`torchrun`, tests/helpers_fsdp_worker.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_workers(check: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(ROOT / "tests" / "helpers_fsdp_worker.py"), check]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def test_every_collective_runs_on_the_group_a_cuda_run_creates():
    """An H200 run died at the end of step 1: `Dist.sum_stats` all-reduced a CPU tensor on the group
    `setup` created for CUDA, a bare "nccl" group, which serves CUDA tensors only ("No backend type
    associated with device type cpu"). A CPU build has no NCCL, but what failed is the group's map from
    device types to backends, and that can be built here: each rank creates the group `setup` asks for
    on CUDA with gloo standing in for NCCL on the same device types (a bare "nccl" becomes "cuda:gloo",
    which raises that same error for a CPU tensor). Every collective the trainer makes through `Dist`
    (sums, broadcasts, gathers, barrier), called with CPU tensors and objects, must then go through."""
    out = run_workers("collectives")
    assert out["spec"] == "cpu:gloo,cuda:gloo"
    assert out["totals"] == {"train/loss": 3.0, "train/kl": 0.5}


def test_no_grad_forwards_leave_no_gathered_fsdp_root(tiny_assets):
    """FSDP2 keeps a root module's parameters (embeddings, final norm, head) gathered after its forward,
    expecting the backward; after a forward without one (the reference's, validation's) nothing frees
    them (+0.49 GiB per rank at 2.8B, ~2 GiB at 8B, on an H200). After the reference's no-grad
    forward and after a validation, every parameter must be a sharded DTensor again."""
    out = run_workers("reshard")
    assert out == {"reference": [], "policy": []}
