"""A stand-in trial for the launcher tests: `python -m helpers_record_trial train CONFIG [args...]`.

It writes what it was started with (argv, its parent's command line from /proc, the GPU and
torchrun environment) to $RECORD_DIR/<$TRIAL>-<LOCAL_RANK>.json, then waits until the file
named by $WAIT_FOR exists (or $WAIT_FOR_COUNT records are in $RECORD_DIR), and exits with
$EXIT_CODE. Imports nothing but the standard library, so a rank starts in a fraction of a second.
"""

import json
import os
import sys
import time
from pathlib import Path

KEYS = (
    "CUDA_VISIBLE_DEVICES",
    "HARNESS_GENERATOR_DEVICES",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


def main() -> int:
    folder = Path(os.environ["RECORD_DIR"])
    rank = os.environ.get("LOCAL_RANK", "solo")
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
    record = {
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "parent_cmdline": parent,
        "env": {key: os.environ[key] for key in KEYS if key in os.environ},
    }
    path = folder / f"{os.environ['TRIAL']}-{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").rename(path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "WAIT_FOR" in os.environ and Path(os.environ["WAIT_FOR"]).exists():
            break
        if "WAIT_FOR_COUNT" in os.environ and len(list(folder.glob("*.json"))) >= int(os.environ["WAIT_FOR_COUNT"]):
            break
        if "WAIT_FOR" not in os.environ and "WAIT_FOR_COUNT" not in os.environ:
            break
        time.sleep(0.05)
    return int(os.environ.get("EXIT_CODE", "0"))


if __name__ == "__main__":
    sys.exit(main())
