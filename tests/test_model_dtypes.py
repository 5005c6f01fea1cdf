"""The reward model and the evaluated policy load in bf16 on CUDA unless a key says otherwise:
`rewards.reward_model_dtype` and `eval.dtype` (auto | float32 | bfloat16 | float16)."""

import pytest
import torch

from harness.config import load_run_config
from harness.errors import ConfigError
from harness.precision import resolve_dtype


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_dtype("auto", "cuda") == "bfloat16" and resolve_dtype("auto", "cuda:1") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("float32", "cuda") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_keys_default_to_auto_and_reject_other_values():
    cfg = load_run_config(None)
    assert cfg.rewards.reward_model_dtype == "auto" and cfg.eval.dtype == "auto"
    with pytest.raises(ConfigError, match="rewards.reward_model_dtype"):
        load_run_config(None, ["rewards.reward_model_dtype=fp8"])
    with pytest.raises(ConfigError, match="eval.dtype"):
        load_run_config(None, ["eval.dtype=half"])


def test_the_trainers_reward_model_loads_in_the_configured_dtype_on_cpu(tiny_assets):
    from harness.train.trainer import build_rewards

    for setting, expected in (("bfloat16", torch.bfloat16), ("auto", torch.float32)):
        cfg = load_run_config(None, ["task_mix=non_verifiable", f"rewards.reward_model_dtype={setting}"])
        router = build_rewards(cfg, str(tiny_assets.reward_model_dir), "cpu")
        scorer = router.fns["non_verifiable"].scorer
        assert {p.dtype for p in scorer.model.parameters()} == {expected}
    prompts, answers = ["What is 2+3?"] * 2, ["5", "It is five, because 2 + 3 = 5."]
    bf16 = scorer.__class__(tiny_assets.reward_model_dir, dtype="bfloat16").score(prompts, answers)
    fp32 = scorer.score(prompts, answers)
    assert bf16 == pytest.approx(fp32, abs=0.05)  # the same scores, to bf16's precision


def test_eval_dtype_comes_from_the_run_config_and_is_checked():
    from evaluators.settings import resolve_eval_settings

    assert resolve_eval_settings({}, None)["dtype"] == "auto"
    assert resolve_eval_settings({}, {"eval": {"dtype": "bfloat16"}})["dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="dtype"):
        resolve_eval_settings({}, {"eval": {"dtype": "int8"}})
