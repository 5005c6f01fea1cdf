"""The rooms of docs/DESIGN.md, enforced from the AST of every module (imports inside functions too).

One test per rule: algorithms import torch only; rewards know nothing of training; the sweep
imports neither the trainer nor the evaluators (not even through another module); training and the
results layer read checkpoint selection from harness.selection, never from the evaluators; nothing
in harness/ but the run shell and the CLI imports the evaluators' engines, and the evaluators never
import harness.preflight (the tracking-URI check is harness.tracking_uri); the dashboard imports
only the results layer (and Streamlit, pandas, altair, the standard library); nothing imports
dashboard/; training never imports the results layer; there are no import cycles.
Nothing is imported to check this: the modules are parsed.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "evaluators", "results", "dashboard")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an import names (`harness.rollout.hf` for `from harness.rollout.hf import x`,
    `harness.rollout` for `from harness.rollout import SamplingParams`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


@lru_cache(maxsize=None)
def imports_of(module: str) -> tuple[tuple[str, int], ...]:
    """Every absolute module name the module imports, anywhere in its body, with the line."""
    path = modules()[module]
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.append((base, node.lineno))
            # `from harness.rollout import hf` imports the submodule harness.rollout.hf
            names += [
                (f"{base}.{alias.name}", node.lineno) for alias in node.names if f"{base}.{alias.name}" in modules()
            ]
    return tuple(names)


def ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def project_imports(module: str) -> frozenset[str]:
    """Project modules that importing `module` runs: each target and its packages' __init__
    (those not already running as `module`'s own packages)."""
    known, mine = modules(), set(ancestors(module))
    targets = set()
    for name, _ in imports_of(module):
        target = resolve(name, known)
        if target and target != module:
            targets.add(target)
            targets.update(a for a in ancestors(target) if a in known and a not in mine)
    return frozenset(targets - {module})


def closure(module: str) -> set[str]:
    """Every project module reachable from `module` through imports (function-level ones included)."""
    seen, todo = set(), [module]
    while todo:
        for target in project_imports(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def violations(room: str, allowed) -> list[str]:
    bad = []
    for module in sorted(m for m in modules() if in_room(m, room)):
        for name, line in imports_of(module):
            if not allowed(name):
                bad.append(f"{modules()[module].relative_to(ROOT)}:{line} imports {name}")
    return bad


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_parser_sees_function_level_imports():
    # The seed baseline used to import the trainer inside a function; such imports must count.
    assert "harness.models" in project_imports("harness.eval_config")  # imported inside eval_settings()
    assert "harness.train.trainer" in closure("harness.cli")
    assert "harness.rollout" in project_imports("harness.rollout.hf") or "harness.rollout.base" in project_imports(
        "harness.rollout.hf"
    )


def test_algorithms_import_torch_only():
    bad = violations(
        "harness.algorithms", lambda n: top(n) in STDLIB or top(n) == "torch" or in_room(n, "harness.algorithms")
    )
    assert not bad, bad


def test_rewards_know_nothing_of_training():
    training = (
        "harness.train.trainer",
        "harness.training_run",
        "harness.algorithms",
        "harness.rollout",
        "harness.sweep",
        "harness.train.checkpoint",
        "harness.train.sequences",
        "evaluators",
        "results",
        "dashboard",
    )
    bad = [
        f"harness.rewards reaches {m}"
        for m in sorted(closure("harness.rewards"))
        if any(in_room(m, room) for room in training)
    ]
    for module in (m for m in modules() if in_room(m, "harness.rewards")):
        bad += [f"{module} reaches {m}" for m in sorted(closure(module)) if any(in_room(m, r) for r in training)]
    assert not bad, bad


# The sweep may read suite names (a name list, used to validate a sweep file); its checkpoint
# selection comes from harness.selection. It never loads a model.
SWEEP_MAY_USE = {"evaluators.registry", "evaluators"}  # "evaluators": its __init__, which imports only
# evaluators.registry


def test_the_sweep_imports_neither_the_trainer_nor_the_evaluators():
    forbidden = (
        "harness.train.trainer",
        "harness.training_run",
        "harness.rollout",
        "harness.rewards",
        "harness.algorithms",
        "harness.eval_config",
        "evaluators",
        "dashboard",
        "results",
    )
    bad = []
    for module in sorted(m for m in modules() if in_room(m, "harness.sweep")):
        direct = project_imports(module)
        bad += [
            f"{module} imports {m}"
            for m in sorted(direct)
            if m not in SWEEP_MAY_USE and any(in_room(m, room) for room in forbidden)
        ]
        bad += [
            f"{module} reaches the trainer through imports ({m})"
            for m in sorted(closure(module))
            if m in ("harness.train.trainer", "harness.training_run", "evaluators.run")
        ]
    assert not bad, bad


# Training and the results layer take checkpoint selection from harness.selection; of the
# evaluators, the trainer's side may name suites (preflight) and only the run shell and the CLI
# run the evaluation engines.
EVALUATORS_MAY_BE_IMPORTED_BY = {
    "harness.training_run": {"evaluators.run", "evaluators.settings"},
    "harness.cli": {"evaluators.run"},
    "harness.eval_config": {"evaluators.settings"},
}


def test_training_and_results_take_selection_from_harness_not_the_evaluators():
    bad = []
    for module in sorted(m for m in modules() if in_room(m, "harness") or in_room(m, "results")):
        for target in sorted(project_imports(module)):
            if not in_room(target, "evaluators"):
                continue
            allowed = EVALUATORS_MAY_BE_IMPORTED_BY.get(module, set()) | {"evaluators", "evaluators.registry"}
            if in_room(module, "results") or target not in allowed:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_the_evaluators_do_not_import_upward_into_preflight():
    bad = [
        f"{m} imports {t}"
        for m in modules()
        if in_room(m, "evaluators")
        for t in project_imports(m)
        if t in ("harness.preflight", "harness.training_run", "harness.cli")
    ]
    assert not bad, bad


DASHBOARD_THIRD_PARTY = {"streamlit", "pandas", "altair", "playwright"}


def test_the_dashboard_imports_only_the_results_layer():
    bad = violations(
        "dashboard",
        lambda n: (
            top(n) in STDLIB or top(n) in DASHBOARD_THIRD_PARTY or in_room(n, "results") or in_room(n, "dashboard")
        ),
    )
    assert not bad, bad


def test_nothing_imports_the_dashboard():
    bad = [
        f"{m} imports {t}"
        for m in modules()
        if not in_room(m, "dashboard")
        for t in project_imports(m)
        if in_room(t, "dashboard")
    ]
    assert not bad, bad


def test_training_never_imports_the_results_layer():
    training = [m for m in modules() if in_room(m, "harness") or in_room(m, "evaluators")]
    bad = [
        f"{m} imports {t}" for m in training for t in project_imports(m) if in_room(t, "results") and m != "harness.cli"
    ]  # the CLI dispatches `harness report`
    assert not bad, bad


def test_no_import_cycles():
    graph = {m: project_imports(m) for m in modules()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            # `import a.b` runs a/__init__ first: a package importing its own submodule is not a cycle
            if in_room(target, node):
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles
