"""`python -m harness.sweep sweep|status SWEEP.yaml ...`: the same commands as `harness sweep` /
`harness status`, usable without the console script (the tests start sweeps this way)."""

from __future__ import annotations

import argparse
import logging
import sys

from harness.errors import HarnessError, redact, redact_logs
from harness.sweep.commands import add_status_arguments, add_sweep_arguments, status_from_args, sweep_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_arguments(sub.add_parser("sweep", help="run or resume a sweep"))
    add_status_arguments(sub.add_parser("status", help="one row per cell"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    redact_logs()
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return sweep_from_args(args) if args.command == "sweep" else status_from_args(args)
    except HarnessError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
