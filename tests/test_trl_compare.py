"""benchmarks/trl_compare.py: the harness-side runs work (TRL itself is not needed for this)."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    import trl_compare
    import trl_compare_sides

    yield trl_compare, trl_compare_sides
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_harness_grpo_and_floor_sides_time_two_steps_and_summarise(tiny_assets, bench):
    trl_compare, sides = bench
    results = {"harness_grpo": [sides.SIDES["harness_grpo"](2)], "floor": [sides.SIDES["floor"](2)]}
    for run in (results["harness_grpo"][0], results["floor"][0]):
        assert len(run["step_s"]) == 2 and all(t > 0 for t in run["step_s"])
        assert len(run["tokens"]) == 2 and all(t > 0 for t in run["tokens"])
        assert run["trained"] == [128, 128]
    lines = "\n".join(trl_compare.summarise(results, skip=1))
    assert "GRPO: harness / bare floor" in lines and "GRPO: harness / TRL" not in lines


def test_trl_pairing_trains_every_prompt_first_wins_ties(bench):
    import torch

    _, sides = bench
    pairs = sides._trl_pairing(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), None)
    assert [(p.prompt_index, p.chosen, p.rejected) for p in pairs] == [(0, 0, 1), (1, 1, 0), (2, 0, 1), (3, 0, 1)]


def test_header_names_the_cpu_the_ratios_were_measured_on(bench):
    """The ratios differ by CPU (online DPO: 0.72x on one Xeon, 1.02x on one EPYC), so the output names it."""
    trl_compare, _ = bench
    name = trl_compare.cpu_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        if models:
            assert name == models[0]
    assert name
