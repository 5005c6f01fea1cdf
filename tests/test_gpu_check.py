"""benchmarks/gpu_check.py --cpu-smoke: every part runs at toy size on the CPU, in its own process,
and the table has one row with a status per part (so the GPU check never rots between GPU sessions)."""

import os
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


def test_a_part_over_its_time_limit_shows_how_far_it_got(tmp_path):
    """A real timeout (every limit scaled to 2% of its CPU-smoke value): the row says TIMEOUT and
    gives the last line the part logged, so a GPU run that runs out of time still tells something."""
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--parts", "fsdp1", "--limit-scale", "0.02"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    row = next(line for line in done.stdout.splitlines() if line.startswith("fsdp1 "))
    assert row.split()[1] == "TIMEOUT", done.stdout
    assert "over its 1 s limit; last log line: " in row
    logged = row.split("last log line: ", 1)[1]
    assert logged in (tmp_path / "fsdp1.log").read_text()  # the part's own last words, e.g. "fsdp1: starting on cpu"
    assert done.returncode == 1


def test_bad_arguments_leave_no_results_folder(tmp_path):
    """A bad --limit-scale or part name stops before anything is written (it once created the results
    folder first, ./gpu_check_out by default, in the repository)."""
    out = tmp_path / "results"
    for bad, said in (
        (["--limit-scale", "0"], "--limit-scale must be a positive number, got 0.0"),
        (["--parts", "logprob,nope"], "unknown part(s) ['nope']"),
    ):
        done = subprocess.run(
            [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", *bad],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "OUT": str(out)},
        )
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert not out.exists()
