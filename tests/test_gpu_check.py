"""benchmarks/gpu_check.py --cpu-smoke: every part runs at toy size on the CPU, in its own process,
and the table has one row with a status per part (so the GPU check never rots between GPU sessions)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["logprob", "gqa_val", "resume", "fsdp1", "lora", "ckpt", "decode"]
STATUSES = {"ok", "skipped", "FAILED", "CRASHED", "TIMEOUT"}


def test_cpu_smoke_prints_a_row_with_a_status_for_every_part(tiny_assets, tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("part"))
    table = {line.split()[0]: line for line in lines[header + 1 : header + 1 + len(PARTS)]}
    rows = {name: line.split()[1] for name, line in table.items()}
    assert list(rows) == PARTS, done.stdout + done.stderr[-2000:]
    assert set(rows.values()) <= STATUSES
    for part in PARTS:
        assert (tmp_path / f"{part}.log").is_file() and (tmp_path / f"{part}.json").is_file()
    assert rows["resume"] == "skipped"  # a CUDA-only test
    for part in ("logprob", "gqa_val", "fsdp1", "lora", "ckpt", "decode"):
        assert rows[part] == "ok", (tmp_path / f"{part}.log").read_text()[-3000:]
    for run in ("non_verifiable: ok", "sharded module: ok, 64 samples", "joint: ok"):  # issue 21's configuration
        assert run in table["gqa_val"], table["gqa_val"]
