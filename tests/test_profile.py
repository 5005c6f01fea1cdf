"""`train.profile_steps`: the listed steps run under torch.profiler and leave a table and a trace.

The trace's phase ranges are checked against the loop's own clock (time/train_s), and the
table against the trace's events; nothing here recomputes the module's numbers its own way.
"""

import json
from pathlib import Path

import pytest

from harness.config import load_run_config
from harness.tracking import MemoryTracker
from harness.train.trainer import train

pytestmark = pytest.mark.slow  # an in-process training run

TINY = Path(__file__).resolve().parent.parent / "sweeps" / "runs" / "tiny.yaml"


def test_a_profiled_step_leaves_a_table_and_a_trace_of_its_phases(tiny_assets, tmp_path):
    overrides = ["train.steps=2", "train.profile_steps=[2]", "train.prompts_per_step=4", "train.samples_per_prompt=4"]
    overrides += ["train.max_new_tokens=24", "validation.prompts=4", "checkpoint.every=100", f"output_dir={tmp_path}"]
    tracker = MemoryTracker()
    train(load_run_config(TINY, overrides), tracker=tracker, progress=False)

    folder = tmp_path / "profile"
    assert sorted(p.name for p in folder.iterdir()) == ["step_2.trace.json", "step_2.txt"]  # step 1 ran unprofiled

    events = [e for e in json.loads((folder / "step_2.trace.json").read_text())["traceEvents"] if e.get("ph") == "X"]
    ranges = {
        name: [e["dur"] / 1e6 for e in events if e["name"] == name] for name in ("sync", "generate", "score", "train")
    }
    assert all(len(found) == 1 for found in ranges.values()), ranges  # each phase once, as a range over its ops
    train_s = dict(tracker.series("time/train_s"))[2]
    assert ranges["train"][0] == pytest.approx(train_s, rel=0.2, abs=0.05)  # the profiler's clock and the loop's

    lines = (folder / "step_2.txt").read_text().splitlines()
    assert lines[0].startswith("step 2: ") and "self CPU time" in lines[0]
    phases = {line.split()[0]: float(line.split()[1]) for line in lines[3:7]}
    assert phases["train"] == pytest.approx(ranges["train"][0], rel=0.05, abs=0.01)
    header = next(i for i, line in enumerate(lines) if line.startswith("op "))
    ops = [
        (line[:60].strip(), float(line.split()[-2]), float(line.split()[-1].rstrip("%")))
        for line in lines[header + 1 :]
    ]
    assert len(ops) == 40
    assert [seconds for _, seconds, _ in ops] == sorted((seconds for _, seconds, _ in ops), reverse=True)
    assert sum(share for _, _, share in ops) <= 100.5
    traced = {e["name"] for e in events}
    assert {name for name, _, _ in ops[:5]} <= traced  # the costliest ops are ops the trace saw
