"""Process helpers shared by the sweep's children and the reward worker pool (standard library only).

process_start_time(pid) -> str | None   # the kernel's start time: tells a pid from its reuse
die_with_parent(sig)                     # Linux: the kernel sends `sig` when the parent dies
"""

from __future__ import annotations

import ctypes
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against pid reuse); None if no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has already exited


def die_with_parent(sig: int = signal.SIGINT) -> None:
    """Linux: ask the kernel to send this process `sig` when its parent dies, even mid-computation.
    Elsewhere nothing (callers keep their other ways of noticing: daemon flags, EOF on a pipe)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
