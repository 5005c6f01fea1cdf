"""The house rules a reader relies on: the code is in `ruff format` style (120 columns, the
version pinned in the `test` extra), passes `ruff check` (pyflakes: no unused import or variable,
no undefined name) and no module is over 450 lines (docs/development.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "evaluators", "results", "dashboard")  # the product; tests and benchmarks are exempt
MAX_LINES = 450


def test_code_is_ruff_formatted():
    if (
        shutil.which("ruff") is None
        and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0
    ):
        pytest.fail("ruff is not installed: it is in the `test` extra (pip install -e '.[test]').")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, (
        "these files are not in `ruff format` style; run `ruff format .`:\n" + done.stdout + done.stderr
    )


def test_code_passes_ruff_check():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, (
        "`ruff check .` found these (pyproject's [tool.ruff.lint]):\n" + done.stdout + done.stderr
    )


def test_no_module_over_450_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"
