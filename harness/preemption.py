"""Preemption: a run told to stop ends at a step boundary with a checkpoint and asks to be requeued.

    watch = PreemptionWatch()          # SIGTERM and SIGUSR1 now set a flag instead of killing
    ...each optimizer step...
    if watch.requested(dist):          # every rank agrees (one all-reduce of a flag)
        save(...); raise Preempted(...)

Slurm sends SIGTERM at a job's time limit or on preemption, and SIGUSR1 ahead of the limit with
`sbatch --signal=USR1@120`; torchrun forwards SIGTERM to its ranks. The signal is only noted:
the step in progress finishes (its collectives stay matched on every rank), a checkpoint is
written, and the process exits with `REQUEUE_EXIT_CODE` (75, EX_TEMPFAIL), which the sweep's
launchers read as "run me again with --resume", into the same MLflow run.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch

from harness.errors import REQUEUE_EXIT_CODE, HarnessError

log = logging.getLogger("harness.train")
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(HarnessError):
    """The run stopped on a signal after writing a checkpoint; resume it with --resume."""

    exit_code = REQUEUE_EXIT_CODE


class PreemptionWatch:
    """Notes SIGTERM/SIGUSR1 while installed (main thread only; elsewhere it never fires)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        if self.received is None:
            log.warning(
                "%s received: finishing this step, then writing a checkpoint and stopping for a requeue",
                signal.Signals(signum).name,
            )
        self.received = signum

    def requested(self, dist) -> bool:
        """Whether any rank was signalled (collective under FSDP: every rank calls it every step)."""
        flag = 1.0 if self.received is not None else 0.0
        if dist.enabled:
            box = torch.tensor([flag], device=dist.device)
            torch.distributed.all_reduce(box, op=torch.distributed.ReduceOp.MAX)
            flag = float(box.item())
        return flag > 0

    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal on another rank"

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
