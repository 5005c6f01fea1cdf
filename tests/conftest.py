"""Shared fixtures. The embedded tiny assets are built once per machine (cached by recipe hash
under $HARNESS_CACHE or ~/.cache/harness) and reused by every test and subprocess.

The suite runs as `pytest -n 2 --dist loadfile`: xdist hands whole files to the two workers in
collection order (pyproject turns off its default reordering by test count, which put these
long files with few tests last, so one core sat idle while the other finished them). The files
below go first, longest first; seconds per file measured on 2 cores, 2026-12."""

import pytest

LONGEST_FILES_FIRST = [
    "test_faults.py",  # ~540 s (preemption, a lost tracking server, full disks, a killed FSDP rank)
    "test_rollout_worker.py",  # ~270 s
    "test_fsdp.py",  # ~255 s (torchrun with 2 gloo ranks)
    "test_multihost.py",  # ~245 s (PostgreSQL, an MLflow server, namespaced hosts; marker heavy)
    "test_sweep_run.py",  # ~205 s
    "test_sweep_recovery.py",  # ~205 s (marker heavy)
    "test_sweep_eval.py",  # ~180 s
    "test_trainer.py",  # ~135 s
    "test_vllm_backend.py",  # ~135 s
    "test_gpu_check.py",  # ~130 s (every GPU-check part at toy size)
    "test_eval_math.py",  # ~75 s
    "test_rewards.py",  # ~75 s
    "test_bad_input.py",  # ~65 s
]


# The `set:` block of the end-to-end sweep files (test_sweep_run, test_multihost): the tiny run, 4 steps.
TINY_SET = {
    "train.steps": 4,
    "train.prompts_per_step": 4,
    "train.samples_per_prompt": 4,
    "train.max_new_tokens": 16,
    "validation.every": 2,
    "validation.prompts": 8,
    "checkpoint.every": 2,
    "rewards.math_verify_workers": 1,
    "eval.suites": [],
}


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept within a file


@pytest.fixture(scope="session")
def tiny_assets():
    from harness.tiny import ensure_tiny_assets

    return ensure_tiny_assets(progress=True)
