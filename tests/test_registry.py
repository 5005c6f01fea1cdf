"""harness.registry: one lazy name -> "module:attr" pattern for everything chosen by name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import ConfigError
from harness.registry import Registry


def make_point(x: int, y: int = 0, *, label: str = "p") -> tuple:
    return (x, y, label)


REG = Registry("shape", {"point": "tests.test_registry:make_point", "path": "os.path:join"})


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ConfigError,
        match=r"shape\.kind is 'circle', which is not a known shape\. "
        r"Known shapes: path, point\.",
    ):
        REG.get("circle", where="shape.kind")


def test_build_checks_options_against_the_factory_signature_before_calling_it():
    assert REG.build("point", {"x": 1, "label": "a"}) == (1, 0, "a")
    with pytest.raises(ConfigError, match=r"unknown options \['z'\] and missing options \['x'\]"):
        REG.build("point", {"z": 1})


def test_entries_may_name_dotted_attributes_and_objects():
    reg = Registry("launcher", {"local": "harness.sweep.launch:LocalLauncher.from_sweep"})
    assert type(reg.get("local")(None, {}, "job")).__name__ == "LocalLauncher"
    reg.register("mine", make_point)
    assert reg.get("mine") is make_point and "mine" in reg and list(reg) == ["local", "mine"]


def test_importing_the_packages_imports_no_backend_or_suite_module():
    code = (
        "import sys, harness.rollout, harness.rewards, evaluators, evaluators.registry, harness.selection, "
        "evaluators.judges, harness.sweep.launch; "
        "from evaluators.registry import list_suites; list_suites(); "
        "print(sorted(m for m in ('vllm', 'submitit', 'evaluators.math_suites', 'evaluators.pairwise', "
        "'harness.rewards.reward_model', 'harness.rollout.vllm_engine') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registry_entry_resolves():
    from evaluators.judges import JUDGES
    from evaluators.registry import SUITES
    from harness.rewards.registry import REWARD_FACTORIES
    from harness.selection import SELECTION_RULES
    from harness.sweep.launch import LAUNCHERS

    for registry in (JUDGES, SUITES, SELECTION_RULES, REWARD_FACTORIES, LAUNCHERS):
        for name in registry:
            assert registry.get(name) is not None, (registry.what, name)
    assert {name: SUITES.get(name).name for name in SUITES} == {name: name for name in SUITES}
