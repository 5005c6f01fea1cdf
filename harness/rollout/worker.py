"""The rollout worker: a generator (any backend) in its own process, fed by the trainer.

The trainer (`harness.rollout.worker_client.WorkerRollouts`) starts it with multiprocessing's
spawn method and talks to it over two one-way pipes, one JSON message per frame (nothing is
unpickled from the wire):

    trainer -> worker   {"op": "load", "path": SNAPSHOT}            load a weight snapshot
                        {"op": "generate", "step", "prompts", "keys", "params"}
                        {"op": "sample", "id", "path", "prompts", "keys", "params"}   once, with the
                                 weights at `path` (validation of the trainer's current policy); the
                                 loaded snapshot is restored after
                        {"op": "stop"}
    worker -> trainer   {"op": "started", "cuda_visible_devices"}     the devices it sees
                        {"op": "ready"}                               its generator is built
                        {"op": "rollouts", "step", "serial", "generate_s", "groups"}
                        {"op": "sampled", "id", "groups"}
                        {"op": "error", "message"}

Messages are handled in order, so a generate request sent after a load is served by the loaded
snapshot, with one exception (`next_message`): a sample (validation, which the trainer waits on)
or a stop goes before generate requests already queued, which the trainer needs only later. Each
reply names the serial of the snapshot that produced it (read
from the snapshot itself), which the trainer checks against the sync schedule. The worker
builds its generator from a snapshot folder through `harness.rollout.make_generator`, by
backend name, so any backend runs here unchanged. It exits when the trainer says stop or when
the trainer's end of the pipe closes (the trainer died).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass

from harness.errors import redact_logs
from harness.rollout.base import Rollout, SamplingParams

log = logging.getLogger("harness.rollout.worker")


@dataclass(frozen=True)
class WorkerSpec:
    """How the worker builds its generator (all plain data: it crosses a process boundary)."""

    backend: str
    batch_size: int
    dtype: str
    device: str
    cpu_threads: int | None
    trust_remote_code: bool = False
    options: dict = dataclasses.field(default_factory=dict)  # the backend's options (generator_options)


def rollout_to_wire(rollout: Rollout) -> dict:
    return dataclasses.asdict(rollout)


def rollout_from_wire(data: dict) -> Rollout:
    return Rollout(**data)


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(frame: bytes) -> dict:
    return json.loads(frame)


def build_generator(spec: WorkerSpec, snapshot_path: str):
    """Load the snapshot folder and wrap it in the configured backend."""
    from harness.rollout import make_generator

    options = {**spec.options, "batch_size": spec.batch_size, "device": spec.device, "dtype": spec.dtype}
    if spec.backend == "vllm":
        options["trust_remote_code"] = spec.trust_remote_code
    # Every backend loads a checkpoint folder itself (hf through harness.models.load_policy).
    return make_generator(spec.backend, snapshot_path, **options)


def serve(spec: dict, snapshot_path: str, requests, replies) -> None:
    """The worker process's main function (the target of the spawned process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when the worker stops
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    redact_logs()
    replies.send_bytes(encode({"op": "started", "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    try:
        _serve(WorkerSpec(**spec), snapshot_path, requests, replies)
    except Exception:  # report, then exit non-zero: the trainer raises with this text
        try:
            replies.send_bytes(encode({"op": "error", "message": traceback.format_exc()}))
        except OSError:
            pass
        raise SystemExit(1)


def next_message(requests, backlog: deque) -> dict:
    """The next request to serve. Everything the trainer has sent so far is read first; a `sample`
    (validation, which the trainer waits on) or a `stop` goes before queued `generate` steps, which
    the trainer wants only later. Everything else keeps its order (a `load` and the steps of its
    window). A `sample` brings its own weights and puts the current snapshot back, so it may run
    between any two messages."""
    while requests.poll():
        backlog.append(decode(requests.recv_bytes()))
    if not backlog:
        backlog.append(decode(requests.recv_bytes()))  # nothing queued: wait for the trainer
    urgent = next((m for m in backlog if m["op"] in ("sample", "stop")), None)
    if urgent is not None:
        backlog.remove(urgent)
        return urgent
    return backlog.popleft()


def _serve(spec: WorkerSpec, snapshot_path: str, requests, replies) -> None:
    import torch
    from harness.rollout.snapshots import snapshot_serial

    if spec.cpu_threads:
        torch.set_num_threads(spec.cpu_threads)
    started = time.perf_counter()
    serial, current = snapshot_serial(snapshot_path), snapshot_path
    generator = build_generator(spec, snapshot_path)
    log.info(
        "rollout worker ready: %s backend on %s, snapshot %d, %.1f s",
        spec.backend,
        spec.device,
        serial,
        time.perf_counter() - started,
    )
    replies.send_bytes(encode({"op": "ready"}))
    backlog: deque[dict] = deque()
    while True:
        try:
            message = next_message(requests, backlog)
        except (EOFError, OSError):
            return  # the trainer is gone
        if message["op"] == "stop":
            return
        if message["op"] == "load":
            serial, current = snapshot_serial(message["path"]), message["path"]
            generator.load_weights_from(current)
        elif message["op"] == "sample":
            generator.load_weights_from(message["path"])
            try:
                groups = generator.generate(
                    message["prompts"], SamplingParams(**message["params"]), keys=message["keys"]
                )
            finally:
                generator.load_weights_from(current)
            replies.send_bytes(
                encode(
                    {
                        "op": "sampled",
                        "id": message["id"],
                        "groups": [[rollout_to_wire(r) for r in group] for group in groups],
                    }
                )
            )
        elif message["op"] == "generate":
            started = time.perf_counter()
            groups = generator.generate(message["prompts"], SamplingParams(**message["params"]), keys=message["keys"])
            reply = {
                "op": "rollouts",
                "step": message["step"],
                "serial": serial,
                "generate_s": time.perf_counter() - started,
                "groups": [[rollout_to_wire(r) for r in group] for group in groups],
            }
            replies.send_bytes(encode(reply))
        else:
            raise ValueError(f"unknown message {message['op']!r}")
