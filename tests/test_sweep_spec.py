"""Sweep files: cell expansion and resolution (the shipped grids against the paper's table), the
dry run, and bad files failing clearly (naming the key path) before anything is created."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from harness.config import INF, load_run_config
from harness.errors import ConfigError
from harness.sweep.commands import sweep_command
from harness.sweep.objective import sample_params, selected_objective, should_prune
from harness.sweep.spec import ObjectiveSpec, SearchSpec, load_sweep

REPO = Path(__file__).resolve().parents[1]
FULL = REPO / "sweeps" / "full_grid.yaml"
TINY = REPO / "sweeps" / "tiny_grid.yaml"
MATH_SUITES = ["math500", "amc23", "numinamath"]
CHAT_SUITES = ["alpaca_eval", "arena_hard"]


def grid_shape(sweep) -> set[tuple]:
    return {(c.config.method, c.config.sync_every, c.config.task_mix) for c in sweep.cells}


def expected_shape() -> set[tuple]:
    mixes = ("verifiable", "non_verifiable", "joint")
    dpo = {("dpo", s, m) for s in (1, 5, 10, 100, INF) for m in mixes}
    return dpo | {("grpo", 1, m) for m in mixes}


def test_full_grid_has_18_cells_per_seed_with_grpo_only_at_s1():
    sweep = load_sweep(FULL)
    seeds = {c.config.seed for c in sweep.cells}
    assert len(sweep.cells) == 18 * len(seeds)
    assert grid_shape(sweep) == expected_shape()
    assert len({c.key for c in sweep.cells}) == len(sweep.cells)


def test_full_grid_resolves_the_papers_hyperparameter_table():
    for cell in load_sweep(FULL).cells:
        cfg = cell.config
        assert (cfg.train.lr, cfg.train.grad_clip, cfg.grpo.kl_coef) == (1e-6, 0.1, 0.001), cell.key
        assert cfg.model.policy.endswith("Llama-3.1-8B-Instruct") and cfg.data.verifiable == "numinamath"
        assert cfg.data.non_verifiable == "wildchat" and cfg.model.reward_model.endswith("Athene-RM-8B")
        if cfg.task_mix == "verifiable":
            assert (cfg.dpo.beta, cfg.train.adam_eps, cfg.train.max_new_tokens, cfg.train.prompts_per_step) == (
                0.1,
                1e-4,
                2048,
                64,
            ), cell.key
            assert cfg.eval.suites == MATH_SUITES
        else:
            assert (
                cfg.dpo.beta,
                cfg.train.adam_eps,
                cfg.train.max_new_tokens,
                cfg.train.prompts_per_step,
                cfg.train.steps,
            ) == (0.01, 1e-8, 1024, 32, 1500), cell.key
            assert cfg.eval.suites == (CHAT_SUITES if cfg.task_mix == "non_verifiable" else MATH_SUITES + CHAT_SUITES)
        # Paper: the reference follows the generator only for verifiable semi-online/online DPO.
        follows = cfg.method == "dpo" and cfg.task_mix == "verifiable" and cfg.sync_every != INF
        assert cfg.ref_sync_every == (cfg.sync_every if follows else INF), cell.key


def test_tiny_grid_is_the_same_grid_on_the_tiny_default():
    sweep = load_sweep(TINY)
    assert len(sweep.cells) == 18 and grid_shape(sweep) == expected_shape()
    for cell in sweep.cells:
        cfg = cell.config
        assert cfg.model.policy == "tiny" and cfg.data.verifiable == "tiny_math"
        assert cfg.dpo.beta == (0.1 if cfg.task_mix == "verifiable" else 0.01)
        assert cfg.train.adam_eps == (1e-4 if cfg.task_mix == "verifiable" else 1e-8)
        assert set(cfg.eval.suites) <= {"tiny_math", "tiny_chat"} and cfg.eval.suites
        follows = cfg.method == "dpo" and cfg.task_mix == "verifiable" and cfg.sync_every != INF
        assert cfg.ref_sync_every == (cfg.sync_every if follows else INF)


@pytest.mark.parametrize("path", [FULL, TINY])
def test_cell_overrides_give_harness_train_the_same_config(path):
    """What the dry run shows is what `harness train BASE OVERRIDES...` will run."""
    sweep = load_sweep(path)
    for cell in sweep.cells:
        assert load_run_config(sweep.base_path, list(cell.overrides)) == cell.config, cell.key


def test_dry_run_prints_each_cell_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sweep_command(str(FULL), dry_run=True, out_dir=str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "18 cells (18 per seed x 1 seed)" in out
    for cell in load_sweep(FULL).cells:
        assert cell.key in out
    row = next(line for line in out.splitlines() if line.startswith("dpo-s10-verifiable-seed0 "))
    assert row.split()[5:9] == ["10", "0.1", "-", "0.0001"]  # ref_sync_every, beta, kl (n/a), eps
    row = next(line for line in out.splitlines() if line.startswith("grpo-s1-non_verifiable-seed0 "))
    assert row.split()[5:9] == ["inf", "-", "0.001", "1e-08"]
    assert list(tmp_path.iterdir()) == []


def test_exclusion_and_conditions_accept_any_spelling_of_inf(tmp_path):
    path = write_sweep(
        tmp_path,
        grid={"method": ["dpo"], "sync_every": [1, "inf"]},
        exclude=[{"sync_every": "offline"}],
        overrides=[{"when": {"sync_every": 1.0}, "set": {"dpo.beta": 0.3}}],
    )
    sweep = load_sweep(path)
    assert [c.key for c in sweep.cells] == ["dpo-s1"]
    assert sweep.cells[0].config.dpo.beta == 0.3


def test_later_overrides_win_and_dotted_or_nested_keys_are_equal(tmp_path):
    path = write_sweep(
        tmp_path,
        grid={"train": {"lr": [1e-4, 3e-4]}},
        set={"train": {"adam_eps": 1e-6}},
        overrides=[
            {"when": {}, "set": {"dpo.beta": 0.2}},
            {"when": {"train.lr": 3e-4}, "set": {"dpo": {"beta": 0.05}}},
        ],
    )
    sweep = load_sweep(path)
    assert [c.key for c in sweep.cells] == ["train.lr=0.0001", "train.lr=0.0003"]
    assert [c.config.dpo.beta for c in sweep.cells] == [0.2, 0.05]
    assert all(c.config.train.adam_eps == 1e-6 for c in sweep.cells)


# -- bad sweep files ---------------------------------------------------------------------------


def write_sweep(tmp_path: Path, **changes) -> Path:
    data = {"name": "probe", "base": "runs/tiny.yaml", "grid": {"method": ["dpo", "grpo"]}}
    data.update(changes)
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


BAD = {
    "unknown top-level key": ({"gird": {"method": ["dpo"]}}, ["unknown key `gird`"]),
    "unknown run-config key": ({"set": {"train.lrr": 1e-4}}, ["`set.train.lrr`", "not a run-config key"]),
    "bad value in an override": (
        {
            "overrides": [
                {"when": {"method": "dpo"}, "set": {"train.lr": 1e-4}},
                {"when": {"method": "dpo"}, "set": {"dpo.beta": -1}},
            ]
        },
        ["`overrides[1].set.dpo.beta` = -1", "for cell dpo:", "greater than 0"],
    ),
    "exclude names a non-axis": ({"exclude": [{"task_mix": "joint"}]}, ["`exclude[0].task_mix` names no grid axis"]),
    "when value not on the axis": (
        {"overrides": [{"when": {"method": "ppo"}, "set": {"dpo.beta": 0.1}}]},
        ["`overrides[0].when.method` = 'ppo' is not a value of the grid axis"],
    ),
    "set overrides an axis": ({"set": {"method": "dpo"}}, ["`set.method` sets the grid axis"]),
    "invalid cell": (
        {"grid": {"method": ["grpo"], "sync_every": [1, 5]}},
        ["cell grpo-s5 is invalid", "importance_sampling", "exclude"],
    ),
    "missing base": ({"base": "runs/nope.yaml"}, ["`base` = 'runs/nope.yaml' names no run config file"]),
    "bad axis value": ({"grid": {"sync_every": [1, 0]}}, ["`grid.sync_every` = [1, 0] is invalid"]),
    "axis not a list": ({"grid": {"seed": 3}}, ["`grid.seed` = 3 is invalid", "non-empty list"]),
    "search bounds": (
        {"search": {"params": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-4}}}},
        ["`search.params.train.lr`", "`low` < `high`"],
    ),
    "search range invalid in a cell": (
        {"search": {"params": {"train.lr": {"type": "float", "low": 0.1, "high": 2.0}}}},
        ["`search.params.train.lr` = 2.0 is invalid"],
    ),
    "unknown selection rule": ({"objective": {"rule": "best"}}, ["`objective.rule` = 'best'", "len_norm"]),
    "unknown eval suite": (
        {"eval": {"suites": ["math5000"]}},
        ["`eval.suites` names the unknown evaluation suite 'math5000'"],
    ),
    "everything excluded": ({"exclude": [{"method": ["dpo", "grpo"]}]}, ["remove every cell"]),
    "missing name": ({"name": None}, ["`name` = None is invalid"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_file_fails_naming_the_key_path_and_creates_nothing(case, tmp_path, monkeypatch):
    changes, expected = BAD[case]
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    path = write_sweep(folder, **changes)
    with pytest.raises(ConfigError) as err:
        sweep_command(str(path), jobs=1, out_dir=str(folder / "out"), progress=False)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message
    assert sorted(p.name for p in folder.iterdir()) == ["probe.yaml"]


def test_bad_storage_url_fails_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, grid={"method": ["dpo"]})
    with pytest.raises(ConfigError, match="--storage 'redis://x'"):
        sweep_command(str(path), storage="redis://x", out_dir=str(tmp_path / "out"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.yaml"]


# -- objective and search ----------------------------------------------------------------------


def test_objective_is_the_metric_at_the_len_norm_selected_checkpoint(tmp_path):
    entries = [
        {"step": 2, "path": "a", "validated": True, "val/reward": 0.5, "val/len_norm_reward": 0.02},
        {"step": 4, "path": "b", "validated": True, "val/reward": 0.7, "val/len_norm_reward": 0.05},
        {"step": 6, "path": "c", "validated": True, "val/reward": 0.9, "val/len_norm_reward": 0.03},
    ]
    (tmp_path / "checkpoints.json").write_text(json.dumps(entries))
    assert selected_objective(tmp_path, ObjectiveSpec()) == (0.05, 4)
    assert selected_objective(tmp_path, ObjectiveSpec(metric="val/reward", rule="max_val_reward")) == (0.9, 6)


def test_objective_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="checkpoints.json"):
        selected_objective(tmp_path, ObjectiveSpec())


def test_search_samples_within_bounds_from_the_cells_own_trials():
    import optuna

    spec = SearchSpec(
        trials_per_cell=4,
        params={
            "train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "dpo.beta": {"type": "categorical", "choices": [0.05, 0.1]},
        },
    )
    params = [sample_params(spec, "maximize", [], number) for number in range(5)]
    assert all(1e-5 <= p["train.lr"] <= 1e-3 and p["dpo.beta"] in (0.05, 0.1) for p in params)
    assert len({p["train.lr"] for p in params}) == 5  # seeded per trial number: distinct draws
    assert sample_params(spec, "maximize", [], 3) == params[3]  # and reproducible
    del optuna


def test_median_pruner_stops_a_trial_below_the_cells_median():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    spec = SearchSpec(trials_per_cell=4, pruner={"type": "median", "startup_trials": 2})
    dist = {"x": FloatDistribution(0, 1)}
    done = [
        create_trial(
            state=TrialState.COMPLETE,
            value=v,
            params={"x": 0.5},
            distributions=dist,
            intermediate_values={10: v, 20: v},
        )
        for v in (0.5, 0.6)
    ]
    bad = create_trial(state=TrialState.RUNNING, params={"x": 0.1}, distributions=dist, intermediate_values={10: 0.1})
    good = create_trial(state=TrialState.RUNNING, params={"x": 0.9}, distributions=dist, intermediate_values={10: 0.9})
    assert should_prune(spec, "maximize", done, bad) and not should_prune(spec, "maximize", done, good)
    assert not should_prune(SearchSpec(pruner="none"), "maximize", done, bad)
    assert math.isfinite(done[0].value)


def test_bad_submitit_block_fails_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = write_sweep(tmp_path, grid={"method": ["dpo"]}, submitit={"gpus_per_nod": 2})
    with pytest.raises(ConfigError, match="the `submitit` block is invalid: .*gpus_per_nod"):
        sweep_command(str(path), launcher="submitit", out_dir=str(tmp_path / "out"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.yaml"]
