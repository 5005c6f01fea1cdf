"""The run-config schema: every shipped YAML validates; bad input fails before any work."""

from pathlib import Path

import pytest
import yaml

from harness.config import INF, load_run_config, parse_interval
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RUN_CONFIGS = sorted((ROOT / "sweeps" / "runs").glob("*.yaml"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_run_config_validates(path):
    cfg = load_run_config(path)
    assert cfg.method in ("dpo", "grpo")
    assert yaml.safe_load(cfg.to_yaml())["sync_every"] == str(cfg.sync_every).replace("inf", "inf")


def test_overrides_apply_with_yaml_types():
    cfg = load_run_config(
        ROOT / "sweeps/runs/tiny.yaml", ["train.lr=3e-4", "sync_every=inf", "method=dpo", "eval.suites=[tiny_math]"]
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.sync_every == INF
    assert cfg.eval.suites == ["tiny_math"]


@pytest.mark.parametrize(
    "method,task_mix,sync_every,expected",
    [
        ("dpo", "verifiable", "10", 10),  # paper: reference follows the generator on math
        ("dpo", "verifiable", "inf", INF),  # offline DPO: fixed reference
        ("dpo", "non_verifiable", "5", INF),  # chat: fixed
        ("dpo", "joint", "1", INF),
        ("grpo", "verifiable", "1", INF),  # GRPO: fixed
    ],
)
def test_ref_sync_auto_follows_the_paper(method, task_mix, sync_every, expected):
    cfg = load_run_config(None, [f"method={method}", f"task_mix={task_mix}", f"sync_every={sync_every}"])
    assert cfg.ref_sync_every == expected


def test_explicit_ref_sync_is_an_independent_knob():
    cfg = load_run_config(None, ["sync_every=10", "ref_sync_every=50"])
    assert (cfg.sync_every, cfg.ref_sync_every) == (10, 50)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.lrr=1", "unknown key `train.lrr`"),
        ("train.lr=-1", "key `train.lr` = -1"),
        ("train.steps=ten", "key `train.steps` = 'ten'"),
        ("sync_every=0", "positive integer or 'inf'"),
        ("sync_every=2.5", "positive integer or 'inf'"),
        ("method=ppo", "'dpo' or 'grpo'"),
        ("task_mix=math", "key `task_mix`"),
    ],
)
def test_bad_values_name_file_key_value_and_allowed(override, needle):
    with pytest.raises(ConfigError) as info:
        load_run_config(RUN_CONFIGS[0], [override])
    message = str(info.value)
    assert needle in message
    assert RUN_CONFIGS[0].name in message


def test_grpo_off_policy_must_say_importance_sampling():
    with pytest.raises(ConfigError, match="importance_sampling"):
        load_run_config(None, ["method=grpo", "sync_every=5"])
    cfg = load_run_config(None, ["method=grpo", "sync_every=5", "grpo.importance_sampling=true"])
    assert cfg.sync_every == 5


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(listy)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_run_config(None, ["train.lr"])


def test_parse_interval_spellings():
    assert parse_interval("inf") == INF and parse_interval(float("inf")) == INF
    assert parse_interval(".inf") == INF and parse_interval(7) == 7 and parse_interval("100") == 100
    with pytest.raises(ValueError):
        parse_interval(True)


SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_shipped_sweep_file_loads(path):
    from harness.sweep.spec import load_sweep

    sweep = load_sweep(path)  # validates every cell (and every search bound) against the run config
    assert sweep.cells
