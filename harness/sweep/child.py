"""Exec a trial command in its own session, tied to the life of its parent.

    python -m harness.sweep.child --pid-file DIR/trial.pid -- python -m harness.cli train ...

The sweep starts every trial through this shim (it imports nothing heavy). It makes the trial a
session and process-group leader, so the sweep can signal the whole group (the trainer and its
grader processes); asks Linux to send it SIGINT when its parent dies (kill -9 of the sweep), so
the trainer's KeyboardInterrupt path closes its MLflow run as KILLED instead of running on as an
orphan; writes `{host, pid, start}` to the pid file, so a later sweep can find and stop a trial
left behind; then replaces itself with the command (same pid).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from harness.files import atomic_write_json
from harness.procs import die_with_parent, process_start_time


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--pid-file" or argv[2] != "--":
        print("usage: python -m harness.sweep.child --pid-file PATH -- COMMAND ...", file=sys.stderr)
        return 2
    pid_file, command = Path(argv[1]), argv[3:]
    parent = os.getppid()
    if os.getsid(0) != os.getpid():
        os.setsid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 130
    pid = os.getpid()
    atomic_write_json(pid_file, {"host": socket.gethostname(), "pid": pid, "start": process_start_time(pid)})
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
