"""`rollout.placement: worker`, the trainer's side: a generator in its own process that produces
the rollouts of the coming steps while the trainer trains, but never past the sync boundary.

    cfg.rollout.placement = "worker"  ->  WorkerRollouts(cfg, policy, tokenizer, plan)

- Weights travel as versioned snapshots (`snapshots.py`); `load_weights` writes one and tells
  the worker to load it. Every reply names the snapshot that produced it.
- Running ahead: as soon as snapshot k is sent, the rollouts of every step of its window
  (k*s .. k*s+s-1; with inf every remaining step) may be requested, at most
  `rollout.queue_depth` steps beyond the last one trained on, so memory stays flat. With s=1
  the window is one step: nothing can be generated ahead, the trainer waits every step.
- A worker that dies (crash, out-of-memory kill, SIGKILL) is restarted from the newest
  snapshot and asked again for the steps it had not delivered; each step's request is a pure
  function of (run seed, step), so the re-generated rollouts are the ones it would have sent.
  `rollout.worker_restarts` bounds the restarts in a row without a delivered step.
- Devices: with `rollout.devices` (or a launcher's HARNESS_GENERATOR_DEVICES) the worker starts
  with CUDA_VISIBLE_DEVICES set to them and runs on cuda:0 of that set; a vLLM engine shards over
  all of them. Unset, it runs on `model.device`.
- Validation samples the trainer's current weights through this same worker (`sample_with`):
  they go as a snapshot of their own, used for that one request, ahead of the steps queued
  for later; one generator per run.
- A worker that lives but stops delivering (hung in a kernel, deadlocked, stopped) is killed and
  restarted the same way once the trainer has waited `rollout.worker_timeout_s` for one step.

It offers the trainer the same surface as `ColocatedRollouts` (`rollouts(step)`,
`load_weights`, `state_dict`, `version`, `close`), so checkpoints and resume do not change.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from multiprocessing.util import Finalize
from contextlib import contextmanager
from typing import Mapping, Sequence

import torch

from harness import generator_devices
from harness.models import resolve_device
from harness.precision import inference_dtype, torch_dtype
from harness.rollout.base import Rollout, SamplingParams, StepRollouts, check_whole_tensors
from harness.rollout.factory import generator_options
from harness.rollout.schedule import StepPlan, StepRequest, window_end
from harness.rollout.snapshots import SnapshotStore
from harness.rollout.worker import WorkerSpec, decode, encode, rollout_from_wire, serve

log = logging.getLogger("harness.rollout")

WORKER_NAME = "harness-rollout-worker"  # the worker process's name (multiprocessing.active_children())
DEAD_PIPE_GRACE_S = 5.0  # a dead worker's last messages are read before it is declared lost


class RolloutWorkerError(RuntimeError):
    """The rollout worker failed in a way a restart cannot fix (it reported an error, or kept dying)."""


class _Inbox:
    """Replies from the current worker process, filled by a reader thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.results: dict[int, dict] = {}
        self.failure: str | None = None
        self.incarnation = 0
        self.eof = False
        self.deliveries = 0  # steps delivered by the current incarnation
        self.ready_at: float | None = None  # when the current incarnation said it was ready (monotonic)
        self.visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES as the current incarnation reported it

    def read(self, conn, incarnation: int) -> None:
        while True:
            try:
                message = decode(conn.recv_bytes())
            except (EOFError, OSError):
                with self.cond:
                    if incarnation == self.incarnation:
                        self.eof = True
                    self.cond.notify_all()
                return
            with self.cond:
                if incarnation != self.incarnation:
                    return
                if message["op"] in ("rollouts", "sampled"):
                    key = message["step"] if message["op"] == "rollouts" else sample_key(message["id"])
                    self.results[key] = message
                    self.deliveries += 1
                elif message["op"] == "started":
                    self.visible_devices = message["cuda_visible_devices"]
                elif message["op"] == "ready":
                    self.ready_at = time.monotonic()
                elif message["op"] == "error":
                    self.failure = message["message"]
                self.cond.notify_all()


def sample_key(serial: int) -> str:
    return f"sample-{serial}"


@contextmanager
def child_environment(name: str, value: str | None):
    """os.environ[name] = value while a child process is started (it inherits the environment)."""
    saved = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        elif value is not None:
            os.environ[name] = saved


def _shutdown(handles: dict, roots) -> None:
    """Stop the worker (politely, then by force) and delete the snapshots. Runs once: from
    close(), when the client is garbage-collected, or at interpreter exit."""
    conn, process = handles.get("conn"), handles.get("process")
    if conn is not None:
        try:
            conn.send_bytes(encode({"op": "stop"}))
        except OSError:
            pass
        conn.close()
    if process is not None:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerRollouts:
    """The generator in its own process, fed versioned snapshots, running ahead within the sync window."""

    def __init__(self, cfg, policy, tokenizer, plan: StepPlan):
        rollout = cfg.rollout
        self.plan = plan
        self.sync_every = cfg.sync_every
        self.total_steps = cfg.train.steps
        self.depth = rollout.queue_depth
        self.max_restarts = rollout.worker_restarts
        self.timeout_s = rollout.worker_timeout_s
        self.hung: str | None = None  # why the current worker was killed as hung, if it was
        self.devices = generator_devices.of_run(rollout)
        self.spec = WorkerSpec(
            backend=rollout.backend,
            batch_size=rollout.batch_size,
            dtype=inference_dtype(cfg),
            device="cuda:0" if self.devices else str(resolve_device(cfg.model.device)),
            cpu_threads=rollout.worker_cpu_threads or cfg.model.cpu_threads,
            trust_remote_code=cfg.model.trust_remote_code,
            options={
                k: v
                for k, v in generator_options(cfg).items()
                if k not in ("batch_size", "device", "dtype", "trust_remote_code")
            },
        )
        dtype = torch_dtype(inference_dtype(cfg))  # snapshots in the generator's dtype (half of fp32 in bf16)
        self.store = SnapshotStore(rollout.snapshot_dir, policy.config, tokenizer, dtype=dtype)
        self.probes = SnapshotStore(rollout.snapshot_dir, policy.config, tokenizer, dtype=dtype)  # one sample request
        self.samples = 0  # sample requests sent
        self.pending_sample: dict | None = None
        self.serial = 0  # the newest snapshot sent to the worker
        self.labels: dict[int, int] = {0: 0}  # snapshot serial -> generator version it carries
        self.store.write(0, policy.state_dict())
        self.requests: dict[int, StepRequest] = {}  # requested and not yet trained on
        self.next_step: int | None = None  # the first step not yet requested
        self.inbox = _Inbox()
        self.restarts_in_row = 0
        self.handles: dict = {}
        self._finalizer = Finalize(
            self, _shutdown, args=(self.handles, (self.store.root, self.probes.root)), exitpriority=10
        )
        self._start()

    # -- the surface the trainer uses -----------------------------------------------------

    @property
    def version(self) -> int:
        return self.labels[self.serial]

    @version.setter
    def version(self, value: int) -> None:  # resume: the restored snapshot carries its saved version
        self.labels[self.serial] = int(value)

    @torch.no_grad()
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        check_whole_tensors(state_dict)
        version = self.version + 1
        self.serial += 1
        path = self.store.write(self.serial, state_dict)
        self.labels[self.serial] = version
        self._send({"op": "load", "path": str(path)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.store.read_latest()

    def rollouts(self, step: int) -> StepRollouts:
        """The rollouts of `step`: already generated if the worker ran ahead, else waited for."""
        self._request_ahead(window_of=step, first_open=step)
        started = time.perf_counter()
        reply = self._wait(step, f"step {step + 1}")
        waited = time.perf_counter() - started
        request = self.requests.pop(step)
        self._request_ahead(window_of=step, first_open=step + 1)  # keep it busy while the trainer trains
        groups = [[rollout_from_wire(r) for r in group] for group in reply["groups"]]
        return StepRollouts(
            step=step,
            records=request.records,
            groups=groups,
            version=self.labels[reply["serial"]],
            generate_s=reply["generate_s"],
            wait_s=waited,
        )

    def sample_with(
        self,
        weights: Mapping[str, torch.Tensor],
        prompts: list[str],
        params: SamplingParams,
        keys: Sequence[str | int] | None = None,
    ) -> list[list[Rollout]]:
        """Sample once with `weights` (validation of the current policy) through the worker, which
        then goes back to its snapshot. It is served before any step the worker has queued ahead."""
        check_whole_tensors(weights)
        self.samples += 1
        path = self.probes.write(self.samples, weights)
        self.pending_sample = {
            "op": "sample",
            "id": self.samples,
            "path": str(path),
            "prompts": prompts,
            "keys": list(keys) if keys is not None else list(range(len(prompts))),
            "params": dataclasses.asdict(params),
        }
        self._send(self.pending_sample)
        reply = self._wait(sample_key(self.samples), "validation samples")
        self.pending_sample = None
        return [[rollout_from_wire(r) for r in group] for group in reply["groups"]]

    def place(self, device: torch.device, dtype: torch.dtype) -> None:
        pass  # the generator lives in the worker's process, on the worker's devices

    def start(self, step: int) -> None:
        """The loop begins at `step` (0, or a resumed step after the restored snapshot was loaded):
        request its window now, so the worker generates while the trainer validates."""
        self._request_ahead(window_of=step, first_open=step)

    def close(self) -> None:
        self._finalizer()

    # -- process management ----------------------------------------------------------------

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        request_out, request_in = context.Pipe(duplex=False)
        reply_out, reply_in = context.Pipe(duplex=False)
        process = context.Process(
            target=serve,
            name=WORKER_NAME,
            args=(dataclasses.asdict(self.spec), str(self.store.path(self.serial)), request_out, reply_in),
        )
        visible = ",".join(map(str, self.devices)) if self.devices else None
        with child_environment("CUDA_VISIBLE_DEVICES", visible):  # cuda:0 inside is the first of them
            process.start()
        request_out.close()
        reply_in.close()
        with self.inbox.cond:
            self.inbox.incarnation += 1
            self.inbox.eof = False
            self.inbox.failure = None
            self.inbox.deliveries = 0
            self.inbox.ready_at = None
            incarnation = self.inbox.incarnation
        self.handles.update(process=process, conn=request_in)
        threading.Thread(
            target=self.inbox.read,
            args=(reply_out, incarnation),
            daemon=True,
            name=f"{WORKER_NAME}-reader-{incarnation}",
        ).start()
        log.info(
            "rollout worker pid %d: %s backend on %s%s, %s CPU thread(s), queue depth %d, snapshots in %s",
            process.pid,
            self.spec.backend,
            self.spec.device,
            f" of CUDA devices {visible} (CUDA_VISIBLE_DEVICES)" if visible else "",
            self.spec.cpu_threads or "default",
            self.depth,
            self.store.root,
        )

    def _send(self, message: dict) -> None:
        try:
            self.handles["conn"].send_bytes(encode(message))
        except OSError:  # the worker is gone; _wait notices, restarts it and asks again
            with self.inbox.cond:
                self.inbox.eof = True

    def _request_ahead(self, window_of: int, first_open: int) -> None:
        """Request every step of the current snapshot's window, up to queue_depth untrained steps."""
        if self.next_step is None or self.next_step < first_open:
            self.next_step = first_open
        limit = min(window_end(window_of, self.sync_every, self.total_steps), first_open + self.depth)
        while self.next_step < limit:
            request = self.plan.request(self.next_step)
            self.requests[request.step] = request
            self._send(self._generate_message(request))
            self.next_step += 1

    @staticmethod
    def _generate_message(request: StepRequest) -> dict:
        return {
            "op": "generate",
            "step": request.step,
            "prompts": request.prompts,
            "keys": request.keys,
            "params": dataclasses.asdict(request.params),
        }

    def _wait(self, key: int | str, what: str) -> dict:
        """The reply for `key` (a step, or a sample request), restarting a dead or hung worker."""
        inbox = self.inbox
        dead_since = None
        waiting_since = time.monotonic()
        while True:
            with inbox.cond:
                if key in inbox.results:
                    if inbox.deliveries:
                        self.restarts_in_row = 0
                    return inbox.results.pop(key)
                if inbox.failure:
                    raise RolloutWorkerError(f"the rollout worker failed:\n{inbox.failure}")
                if self.handles["process"].is_alive() and not inbox.eof:
                    # The clock runs from when the worker is ready (loading a large model can take minutes).
                    if (
                        self.timeout_s is None
                        or inbox.ready_at is None
                        or time.monotonic() < max(waiting_since, inbox.ready_at) + self.timeout_s
                    ):
                        inbox.cond.wait(0.5)
                        continue
                    self._kill_hung(what)
                # Gone. Let the reader drain what it sent before it died (an error report) first.
                dead_since = dead_since or time.monotonic()
                if not inbox.eof and time.monotonic() - dead_since < DEAD_PIPE_GRACE_S:
                    inbox.cond.wait(0.1)
                    continue
            self._restart()
            dead_since = None

    def _kill_hung(self, what: str) -> None:
        """The worker lives but has not delivered `what` within rollout.worker_timeout_s: kill it (the
        restart that follows asks the new one for every undelivered request)."""
        process = self.handles["process"]
        self.hung = f"hung: no rollouts for {what} in {self.timeout_s:g} s, rollout.worker_timeout_s; killed"
        log.warning(
            "rollout worker pid %d has not delivered %s in %g s (rollout.worker_timeout_s); killing it as hung",
            process.pid,
            what,
            self.timeout_s,
        )
        process.kill()

    def _restart(self) -> None:
        old = self.handles["process"]
        old.join(timeout=5)
        if old.is_alive():  # its pipe broke but it lingers: make room for the new one
            old.kill()
            old.join(timeout=10)
        reason, self.hung = self.hung or describe_exit(old.exitcode), None
        self.restarts_in_row += 1
        if self.restarts_in_row > self.max_restarts:
            raise RolloutWorkerError(
                f"the rollout worker died {self.restarts_in_row} times in a row without delivering a step "
                f"(last: {reason}); rollout.worker_restarts = {self.max_restarts}. Its log lines are above."
            )
        try:
            self.handles["conn"].close()
        except OSError:
            pass
        missing = sorted(step for step in self.requests if step not in self.inbox.results)
        log.warning(
            "rollout worker pid %d died (%s); restarting it from snapshot %d (generator version %d) and "
            "requesting steps %s again",
            old.pid,
            reason,
            self.serial,
            self.version,
            ", ".join(str(s + 1) for s in missing) or "none",
        )
        self._start()
        for step in missing:
            self._send(self._generate_message(self.requests[step]))
        if self.pending_sample is not None:
            self._send(self.pending_sample)
