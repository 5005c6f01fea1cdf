"""Bad input, as a new user types it: every case exits 2 with one paragraph, no traceback, and
leaves nothing behind (no mlflow.db, no mlruns/, no runs/ or outputs/ folder, no new file).

One line per case: (case id, argv, input files, expected substrings of the error). In argv and
file contents `{d}` is the case's scratch folder (the working directory) and `{tiny}` the
shipped tiny run config. Most cases run in-process through `harness.cli.main`; a few run as real
subprocesses (`SUBPROCESS_CASES`). Env-var cases set MLFLOW_TRACKING_URI through `env`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "sweeps" / "runs" / "tiny.yaml")
NOT_UTF8 = b"method: dpo\nseed: \xff\xfe\n"
MATH = '{"unique_id": "a", "problem": "1+1?", "answer": "2"}\n'
NUMINA_OK = '{"problem": "1+1?", "answer": "2"}\n'


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again at once: nothing listens there


DEAD = _dead_port()


def train(*overrides: str) -> list[str]:
    return ["train", "{tiny}", *overrides]


def sweep_file(grid: str = "  method: [dpo]\n", extra: str = "", base: str = "{tiny}") -> str:
    return f"name: bad\nbase: {base}\noutput_dir: {{d}}/out\ngrid:\n{grid}{extra}"


def score(data: str = "data.jsonl", predictions: str = "pred.jsonl", suite: str = "math500") -> list[str]:
    return ["score", "--suite", suite, "--data", "{d}/" + data, "--predictions", "{d}/" + predictions]


OK_DATA = {"data.jsonl": MATH}
OK_PRED = {"pred.jsonl": '{"id": "a", "output": "\\\\boxed{2}"}\n'}

# (id, argv, files, expected substrings, env)
CASES = [
    # -- numbers at the edges, run config ------------------------------------------------
    ("lr-inf", train("train.lr=.inf"), {}, ["train.lr", "finite"], {}),
    (
        "worker-outwaits-collectives",
        train(
            "train.parallel=fsdp",
            "rollout.placement=worker",
            "rollout.worker_timeout_s=1200",
            "train.collective_timeout_s=900",
        ),
        {},
        ["rollout.worker_timeout_s = 1200", "below train.collective_timeout_s = 900", "hung worker"],
        {},
    ),
    ("lr-minus-inf", train("train.lr=-.inf"), {}, ["train.lr"], {}),
    ("lr-nan", train("train.lr=.nan"), {}, ["train.lr", "finite"], {}),
    ("lr-inf-word", train("train.lr=inf"), {}, ["train.lr"], {}),
    ("grad-clip-inf", train("train.grad_clip=.inf"), {}, ["train.grad_clip", "finite"], {}),
    ("temperature-inf", train("train.temperature=.inf"), {}, ["train.temperature"], {}),
    ("weight-decay-huge", train("train.weight_decay=1.0e+300"), {}, ["train.weight_decay", "1e30"], {}),
    ("beta-inf", train("dpo.beta=.inf"), {}, ["dpo.beta"], {}),
    ("kl-inf", train("grpo.kl_coef=.inf"), {}, ["grpo.kl_coef"], {}),
    ("is-cap-minus-inf", train("grpo.is_cap=-.inf"), {}, ["grpo.is_cap"], {}),
    ("timeout-inf", train("rewards.math_verify_timeout_s=.inf"), {}, ["rewards.math_verify_timeout_s"], {}),
    ("val-temperature-inf", train("validation.temperature=.inf"), {}, ["validation.temperature"], {}),
    ("top-p-2", train("eval.top_p=2"), {}, ["eval.top_p"], {}),
    ("fraction-nan", train("data.joint_verifiable_fraction=.nan"), {}, ["data.joint_verifiable_fraction"], {}),
    ("steps-huge", train("train.steps=100000000000000"), {}, ["train.steps", "at most"], {}),
    ("steps-float-text", train("train.steps=1e30"), {}, ["train.steps"], {}),
    ("steps-zero", train("train.steps=0"), {}, ["train.steps"], {}),
    ("steps-fraction", train("train.steps=2.5"), {}, ["train.steps"], {}),
    (
        "profile-step-past-the-run",
        train("train.steps=3", "train.profile_steps=[4]"),
        {},
        ["train.profile_steps", "[4]", "between 1 and train.steps = 3"],
        {},
    ),
    ("profile-step-zero", train("train.profile_steps=[0]"), {}, ["train.profile_steps", "between 1"], {}),
    ("max-tokens-huge", train("train.max_new_tokens=99999999999"), {}, ["train.max_new_tokens"], {}),
    ("eval-samples-huge", train("eval.samples=99999999999"), {}, ["eval.samples"], {}),
    ("batch-zero", train("rollout.batch_size=0"), {}, ["rollout.batch_size"], {}),
    ("threads-zero", train("model.cpu_threads=0"), {}, ["model.cpu_threads"], {}),
    ("seed-negative", train("seed=-1"), {}, ["seed"], {}),
    ("seed-over-torch", train("seed=18446744073709551616"), {}, ["seed", "4294967295"], {}),
    ("seed-over-32bit", train("seed=4294967296"), {}, ["seed", "4294967295"], {}),
    ("seed-huge-digits", train("seed=" + "9" * 5000), {}, ["seed"], {}),
    ("sync-minus-inf", train("sync_every=-.inf"), {}, ["sync_every", "positive integer or 'inf'"], {}),
    ("sync-nan", train("sync_every=.nan"), {}, ["sync_every"], {}),
    ("sync-zero", train("sync_every=0"), {}, ["sync_every"], {}),
    ("sync-fraction", train("sync_every=1.5"), {}, ["sync_every"], {}),
    ("sync-huge", train("sync_every=99999999999999999999999"), {}, ["sync_every", "at most"], {}),
    ("sync-overflow-text", train("sync_every=1e400"), {}, ["sync_every"], {}),
    ("ref-sync-minus-inf", train("ref_sync_every=-.inf"), {}, ["ref_sync_every"], {}),
    ("judge-inf", train("eval.judge={name: reward_model, temperature: .inf}"), {}, ["eval.judge"], {}),
    # -- config files and overrides ------------------------------------------------------
    ("config-empty", ["train", "{d}/empty.yaml"], {"empty.yaml": ""}, ["empty.yaml", "is empty"], {}),
    ("config-comments", ["train", "{d}/c.yaml"], {"c.yaml": "# nothing\n# here\n"}, ["is empty"], {}),
    ("config-not-utf8", ["train", "{d}/b.yaml"], {"b.yaml": NOT_UTF8}, ["b.yaml", "line 2", "not UTF-8"], {}),
    (
        "config-latin1",
        ["train", "{d}/l.yaml"],
        {"l.yaml": "tracking:\n  run_name: caf\xe9\n".encode("latin-1")},
        ["not UTF-8"],
        {},
    ),
    ("config-list", ["train", "{d}/l.yaml"], {"l.yaml": "- a\n- b\n"}, ["mapping", "list"], {}),
    ("config-scalar", ["train", "{d}/s.yaml"], {"s.yaml": "42\n"}, ["mapping", "int"], {}),
    ("config-bad-yaml", ["train", "{d}/y.yaml"], {"y.yaml": "method: [dpo\n"}, ["not valid YAML"], {}),
    ("config-dir", ["train", "{d}/cfgdir"], {"cfgdir/x": ""}, ["cfgdir", "is a directory"], {}),
    ("config-missing", ["train", "{d}/nope.yaml"], {}, ["nope.yaml", "not found"], {}),
    ("config-unknown-key", ["train", "{d}/u.yaml"], {"u.yaml": "trian:\n  lr: 1\n"}, ["unknown key", "trian"], {}),
    ("config-int-key", ["train", "{d}/i.yaml"], {"i.yaml": "1: 2\n"}, ["not a string"], {}),
    ("config-bad-date", ["train", "{d}/t.yaml"], {"t.yaml": "tracking:\n  run_name: 2024-13-45\n"}, ["t.yaml"], {}),
    ("override-no-equals", train("train.lr"), {}, ["not of the form"], {}),
    ("override-empty-key", train("=3"), {}, ["empty key path"], {}),
    ("override-double-dot", train("train..lr=1"), {}, ["empty key path"], {}),
    ("override-section-scalar", train("train=5"), {}, ["train"], {}),
    ("override-list-value", train("train.lr=[1, 2]"), {}, ["train.lr"], {}),
    ("tag-no-equals", [*train(), "--tag", "oops"], {}, ["KEY=VALUE"], {}),
    # -- prompt templates ----------------------------------------------------------------
    ("template-no-placeholder", train("data.math_prompt_template=Solve it."), {}, ["{problem}", "same"], {}),
    ("template-stray-open", train("data.math_prompt_template='{problem} {'"), {}, ["stray brace"], {}),
    ("template-stray-close", train("data.math_prompt_template='{problem} }'"), {}, ["stray brace"], {}),
    ("template-other-field", train("data.math_prompt_template='{problem} {answer}'"), {}, ["{answer}"], {}),
    ("template-positional", train("data.math_prompt_template='{problem} {}'"), {}, ["math_prompt_template"], {}),
    # -- the environment -----------------------------------------------------------------
    ("device-cuda", train("model.device=cuda"), {}, ["model.device", "no CUDA"], {}),
    ("device-unknown", train("model.device=tpu"), {}, ["model.device"], {}),
    ("output-dir-file", train("output_dir={d}/afile"), {"afile": "x"}, ["output_dir", "is a file"], {}),
    ("output-dir-under-file", train("output_dir={d}/afile/run"), {"afile": "x"}, ["output_dir", "file"], {}),
    ("output-dir-not-writable", train("output_dir=/proc/harness-run"), {}, ["output_dir", "not writable"], {}),
    ("tracking-unknown-scheme", train(), {}, ["unknown scheme", "foo"], {"MLFLOW_TRACKING_URI": "foo://x"}),
    (
        "tracking-not-a-db",
        train(),
        {"notdb.db": "hello, not sqlite"},
        ["not an SQLite database"],
        {"MLFLOW_TRACKING_URI": "sqlite:///{d}/notdb.db"},
    ),
    ("tracking-db-is-dir", train(), {"dbdir/x": ""}, ["directory"], {"MLFLOW_TRACKING_URI": "sqlite:///{d}/dbdir"}),
    (
        "tracking-db-folder-missing",
        train(),
        {},
        ["does not exist"],
        {"MLFLOW_TRACKING_URI": "sqlite:///{d}/no/such/mlflow.db"},
    ),
    (
        "tracking-server-dead",
        train(),
        {},
        ["no tracking server answers"],
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{DEAD}"},
    ),
    (
        "tracking-file-store-is-file",
        train(),
        {"store": "x"},
        ["is a file"],
        {"MLFLOW_TRACKING_URI": "file://{d}/store"},
    ),
    # -- checks that used to run too late -----------------------------------------------
    ("policy-missing", train("model.policy={d}/no-model"), {}, ["model.policy", "does not exist"], {}),
    (
        "policy-no-config",
        train("model.policy={d}/emptymodel"),
        {"emptymodel/README": "x"},
        ["model.policy", "without config.json"],
        {},
    ),
    ("policy-is-file", train("model.policy={d}/m.bin"), {"m.bin": "x"}, ["model.policy", "is a file"], {}),
    ("policy-hub-not-cached", train("model.policy=nobody-here/no-such-model"), {}, ["model.policy", "local cache"], {}),
    (
        "reward-model-missing",
        train("task_mix=non_verifiable", "model.reward_model={d}/no-rm"),
        {},
        ["model.reward_model"],
        {},
    ),
    ("reward-name-unknown", train("rewards.verifiable=math_verifyy"), {}, ["rewards.verifiable", "math_verifyy"], {}),
    (
        "reward-name-unknown-chat",
        train("task_mix=joint", "rewards.non_verifiable=rm"),
        {},
        ["rewards.non_verifiable"],
        {},
    ),
    ("data-dir-unset", train("data.verifiable=numinamath"), {}, ["data.data_dir", "not set"], {}),
    (
        "data-dir-missing",
        train("data.verifiable=numinamath", "data.data_dir={d}/nodata"),
        {},
        ["data.data_dir", "does not exist"],
        {},
    ),
    (
        "data-dir-is-file",
        train("data.verifiable=numinamath", "data.data_dir={d}/f"),
        {"f": "x"},
        ["data.data_dir", "is a file"],
        {},
    ),
    (
        "data-split-missing",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": NUMINA_OK},
        ["validation.jsonl", "not found"],
        {},
    ),
    (
        "data-line-number",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": "3\n", "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["line 1", "got int"],
        {},
    ),
    (
        "data-line-null",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": NUMINA_OK + "null\n", "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["line 2", "null"],
        {},
    ),
    (
        "data-line-list",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": "[1, 2]\n", "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["got list"],
        {},
    ),
    (
        "data-missing-field",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": '{"problem": "x"}\n', "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["answer", "data.verifiable"],
        {},
    ),
    (
        "data-not-utf8",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {
            "dd/numinamath/train.jsonl": b'{"problem": "\xff", "answer": "1"}\n',
            "dd/numinamath/validation.jsonl": NUMINA_OK,
        },
        ["not UTF-8"],
        {},
    ),
    (
        "data-bad-json",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": '{"problem": \n', "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["not valid JSON"],
        {},
    ),
    (
        "data-problem-not-text",
        train("data.verifiable=numinamath", "data.data_dir={d}/dd"),
        {"dd/numinamath/train.jsonl": '{"problem": null, "answer": 1}\n', "dd/numinamath/validation.jsonl": NUMINA_OK},
        ["problem"],
        {},
    ),
    (
        "chat-prompt-not-text",
        train("task_mix=non_verifiable", "data.non_verifiable=wildchat", "data.data_dir={d}/dd"),
        {"dd/wildchat/train.jsonl": '{"prompt": ["x"]}\n', "dd/wildchat/validation.jsonl": '{"prompt": "hi"}\n'},
        ["prompt"],
        {},
    ),
    ("eval-suite-unknown", train("eval.suites=[tiny_maths]"), {}, ["eval.suites", "tiny_maths"], {}),
    ("eval-rule-unknown", train("eval.suites=[tiny_math]", "eval.rule=best"), {}, ["eval.rule", "best"], {}),
    (
        "eval-data-missing",
        train("eval.suites=[tiny_math]", "eval.data={tiny_math: /nonexistent.jsonl}"),
        {},
        ["eval.data.tiny_math", "does not exist"],
        {},
    ),
    # -- sweeps --------------------------------------------------------------------------
    ("sweep-empty", ["sweep", "{d}/s.yaml", "--dry-run"], {"s.yaml": ""}, ["is empty"], {}),
    ("sweep-not-utf8", ["sweep", "{d}/s.yaml"], {"s.yaml": b"name: \xff\n"}, ["not UTF-8"], {}),
    ("sweep-dir", ["sweep", "{d}/sd", "--dry-run"], {"sd/x": ""}, ["is a directory"], {}),
    (
        "sweep-base-not-utf8",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(base="{d}/b.yaml"), "b.yaml": NOT_UTF8},
        ["b.yaml", "not UTF-8"],
        {},
    ),
    (
        "sweep-base-empty",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(base="{d}/b.yaml"), "b.yaml": ""},
        ["b.yaml", "empty"],
        {},
    ),
    (
        "grid-seed-huge",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file("  seed: [0, 99999999999999999999]\n")},
        ["seed", "4294967295"],
        {},
    ),
    ("grid-seed-negative", ["sweep", "{d}/s.yaml"], {"s.yaml": sweep_file("  seed: [-3]\n")}, ["grid.seed"], {}),
    (
        "grid-sync-minus-inf",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file("  sync_every: [1, -.inf]\n")},
        ["grid.sync_every"],
        {},
    ),
    (
        "grid-sync-nan",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file("  sync_every: [.nan]\n")},
        ["grid.sync_every"],
        {},
    ),
    (
        "grid-sync-huge",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file("  sync_every: [99999999999999999999999]\n")},
        ["grid.sync_every"],
        {},
    ),
    (
        "grid-lr-inf",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file("  train.lr: [.inf]\n")},
        ["train.lr"],
        {},
    ),
    (
        "set-lr-inf",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(extra="set:\n  train.grad_clip: .inf\n")},
        ["set.train.grad_clip"],
        {},
    ),
    (
        "search-log-step",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {
            "s.yaml": sweep_file(
                extra="search:\n  params:\n    train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, "
                "log: true, step: 1.0e-5}\n"
            )
        },
        ["log: true", "step"],
        {},
    ),
    (
        "search-low-inf",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(extra="search:\n  params:\n    train.lr: {type: float, low: -.inf, high: 1.0e-3}\n")},
        ["search.params.train.lr"],
        {},
    ),
    (
        "search-int-huge",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(extra="search:\n  params:\n    train.steps: {type: int, low: 1, high: 1.0e+300}\n")},
        ["search.params.train.steps"],
        {},
    ),
    (
        "search-int-fraction",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {"s.yaml": sweep_file(extra="search:\n  params:\n    train.steps: {type: int, low: 1.5, high: 10}\n")},
        ["integer"],
        {},
    ),
    (
        "search-step-negative",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {
            "s.yaml": sweep_file(
                extra="search:\n  params:\n    train.lr: {type: float, low: 0.1, high: 0.5, step: -1}\n"
            )
        },
        ["step"],
        {},
    ),
    (
        "search-seed-huge",
        ["sweep", "{d}/s.yaml", "--dry-run"],
        {
            "s.yaml": sweep_file(
                extra="search:\n  seed: 99999999999999\n  params:\n"
                "    train.lr: {type: float, low: 0.001, high: 0.01}\n"
            )
        },
        ["search.seed"],
        {},
    ),
    (
        "sweep-policy-missing",
        ["sweep", "{d}/s.yaml"],
        {"s.yaml": sweep_file(extra="set:\n  model.policy: /no/such/model\n")},
        ["model.policy"],
        {},
    ),
    (
        "sweep-device-cuda",
        ["sweep", "{d}/s.yaml"],
        {"s.yaml": sweep_file(extra="set:\n  model.device: cuda\n")},
        ["model.device"],
        {},
    ),
    (
        "sweep-reward-unknown",
        ["sweep", "{d}/s.yaml"],
        {"s.yaml": sweep_file(extra="set:\n  rewards.verifiable: nope\n")},
        ["rewards.verifiable"],
        {},
    ),
    (
        "sweep-tracking-dead",
        ["sweep", "{d}/s.yaml"],
        {"s.yaml": sweep_file()},
        ["no tracking server"],
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{DEAD}"},
    ),
    (
        "sweep-gpus-over-node",
        ["sweep", "{d}/s.yaml", "--gpus", "0,1", "--gpus-per-trial", "2", "--jobs", "2"],
        {"s.yaml": sweep_file()},
        ["--jobs 2 x 2 GPUs per trial", "needs 4 GPUs", "--gpus gives 2"],
        {},
    ),
    (
        "sweep-gpus-typo",
        ["sweep", "{d}/s.yaml", "--gpus", "gpu0,gpu1", "--gpus-per-trial", "2"],
        {"s.yaml": sweep_file()},
        ["--gpus", "'gpu0,gpu1'", "GPU ids", "GPU-/MIG- UUIDs"],
        {},
    ),
    ("status-not-utf8", ["status", "{d}/s.yaml"], {"s.yaml": b"\xff"}, ["not UTF-8"], {}),
    ("status-empty", ["status", "{d}/s.yaml"], {"s.yaml": ""}, ["is empty"], {}),
    # -- score ---------------------------------------------------------------------------
    ("score-data-missing", score(), OK_PRED, ["data.jsonl", "not found"], {}),
    ("score-data-dir", score(data="dd"), {**OK_PRED, "dd/x": ""}, ["is a directory"], {}),
    ("score-data-not-utf8", score(), {**OK_PRED, "data.jsonl": b'{"problem": "\xff"}\n'}, ["not UTF-8"], {}),
    ("score-data-number", score(), {**OK_PRED, "data.jsonl": "7\n"}, ["line 1", "int"], {}),
    ("score-data-null", score(), {**OK_PRED, "data.jsonl": MATH + "null\n"}, ["line 2"], {}),
    ("score-data-list-line", score(), {**OK_PRED, "data.jsonl": '{"a": 1}\n[1]\n'}, ["line 1"], {}),
    ("score-data-json-object", score(), {**OK_PRED, "data.jsonl": '[{"unique_id": "a"}, 3]'}, ["item 0"], {}),
    (
        "score-data-field-missing",
        score(),
        {**OK_PRED, "data.jsonl": '{"unique_id": "a", "problem": "x"}\n'},
        ["answer"],
        {},
    ),
    (
        "score-data-huge-int",
        score(),
        {**OK_PRED, "data.jsonl": '{"unique_id": ' + "9" * 5000 + "}\n"},
        ["data.jsonl"],
        {},
    ),
    ("score-pred-missing", score(), OK_DATA, ["pred.jsonl", "predictions file", "not found"], {}),
    ("score-pred-dir", score(predictions="pd"), {**OK_DATA, "pd/x": ""}, ["predictions file", "is a directory"], {}),
    (
        "score-pred-not-utf8",
        score(),
        {**OK_DATA, "pred.jsonl": b'{"id": "a", "output": "\xff"}\n'},
        ["predictions file", "not UTF-8"],
        {},
    ),
    ("score-pred-number", score(), {**OK_DATA, "pred.jsonl": "1\n"}, ["pred.jsonl, line 1"], {}),
    (
        "score-pred-outputs-not-list",
        score(),
        {**OK_DATA, "pred.jsonl": '{"id": "a", "outputs": "x"}\n'},
        ["outputs"],
        {},
    ),
    ("score-pred-no-output", score(), {**OK_DATA, "pred.jsonl": '{"id": "a"}\n'}, ["neither"], {}),
    ("score-pred-unknown-id", score(), {**OK_DATA, "pred.jsonl": '{"id": "zz", "output": "1"}\n'}, ["zz"], {}),
    ("score-pred-empty", score(), {**OK_DATA, "pred.jsonl": "\n"}, ["no predictions"], {}),
    ("score-suite-unknown", score(suite="math5000"), {**OK_DATA, **OK_PRED}, ["math5000"], {}),
    ("score-out-dir", [*score(), "--out", "{d}/od"], {**OK_DATA, **OK_PRED, "od/x": ""}, ["--out", "directory"], {}),
    # -- eval ----------------------------------------------------------------------------
    ("eval-folder-no-config", ["eval", "{d}/ck", "--suites", "tiny_math"], {"ck/x": ""}, ["no config.json"], {}),
    ("eval-suites-empty", ["eval", "{d}/ck", "--suites", ","], {}, ["names no suite"], {}),
    ("eval-suite-unknown-flag", ["eval", "{d}/ck", "--suites", "nope"], {}, ["nope"], {}),
    ("eval-rule-unknown-flag", ["eval", "{d}/ck", "--suites", "tiny_math", "--rule", "best"], {}, ["best"], {}),
    ("eval-folder-missing", ["eval", "{d}/no/such/ckpt", "--suites", "tiny_math"], {}, ["does not exist"], {}),
    ("eval-target-is-file", ["eval", "{d}/f.bin", "--suites", "tiny_math"], {"f.bin": "x"}, ["is a file"], {}),
    (
        "eval-samples-zero",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--samples", "0"],
        {"ck/config.json": "{}"},
        ["samples"],
        {},
    ),
    (
        "eval-temperature-inf",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--temperature", "inf"],
        {"ck/config.json": "{}"},
        ["temperature"],
        {},
    ),
    (
        "eval-top-p-zero",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--top-p", "0"],
        {"ck/config.json": "{}"},
        ["top_p"],
        {},
    ),
    (
        "eval-seed-huge",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--seed", str(2**70)],
        {"ck/config.json": "{}"},
        ["seed"],
        {},
    ),
    (
        "eval-device-cuda",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--device", "cuda"],
        {"ck/config.json": "{}"},
        ["no CUDA"],
        {},
    ),
    (
        "eval-device-unknown",
        ["eval", "{d}/ck", "--suites", "tiny_math", "--device", "tpu"],
        {"ck/config.json": "{}"},
        ["device"],
        {},
    ),
    ("eval-run-no-store", ["eval", "0123abcd", "--suites", "tiny_math"], {}, ["no tracking store"], {}),
    (
        "eval-uri-unknown",
        ["eval", "0123abcd", "--suites", "tiny_math", "--tracking-uri", "foo://x"],
        {},
        ["unknown scheme"],
        {},
    ),
    (
        "eval-uri-not-db",
        ["eval", "0123abcd", "--suites", "tiny_math", "--tracking-uri", "sqlite:///{d}/x.db"],
        {"x.db": "nope"},
        ["not an SQLite database"],
        {},
    ),
    (
        "eval-uri-dead",
        ["eval", "0123abcd", "--suites", "tiny_math", "--tracking-uri", f"http://127.0.0.1:{DEAD}"],
        {},
        ["no tracking server"],
        {},
    ),
    ("eval-data-flag-bad", ["eval", "{d}/ck", "--suites", "tiny_math", "--data", "tiny_math"], {}, ["SUITE=PATH"], {}),
    ("eval-data-flag-unknown-suite", ["eval", "{d}/ck", "--suites", "tiny_math", "--data", "nope=x"], {}, ["nope"], {}),
    # -- report and leaderboard ----------------------------------------------------------
    (
        "report-uri-unknown",
        ["report", "--out", "{d}/r", "--tracking-uri", "foo://x", "--experiment", "e"],
        {},
        ["unknown scheme"],
        {},
    ),
    (
        "report-uri-not-db",
        ["report", "--out", "{d}/r", "--tracking-uri", "sqlite:///{d}/x.db", "--experiment", "e"],
        {"x.db": "text"},
        ["not an SQLite database"],
        {},
    ),
    (
        "report-uri-dead",
        ["report", "--out", "{d}/r", "--tracking-uri", f"http://127.0.0.1:{DEAD}", "--experiment", "e"],
        {},
        ["no tracking server"],
        {},
    ),
    ("report-no-store", ["report", "--out", "{d}/r", "--experiment", "e"], {}, ["no tracking store"], {}),
    (
        "report-out-is-file",
        ["report", "--out", "{d}/f", "--tracking-uri", "sqlite:///{d}/x.db", "--experiment", "e"],
        {"f": "x", "x.db": b""},
        ["--out", "is a file"],
        {},
    ),
    (
        "report-sweep-not-utf8",
        ["report", "{d}/s.yaml", "--out", "{d}/r", "--tracking-uri", "sqlite:///{d}/x.db"],
        {"s.yaml": b"\xff", "x.db": b""},
        ["not UTF-8"],
        {},
    ),
    ("leaderboard-uri-unknown", ["leaderboard", "--tracking-uri", "foo://x"], {}, ["unknown scheme"], {}),
    (
        "leaderboard-uri-not-db",
        ["leaderboard", "--tracking-uri", "sqlite:///{d}/x.db"],
        {"x.db": "text"},
        ["not an SQLite database"],
        {},
    ),
    (
        "leaderboard-uri-dead",
        ["leaderboard", "--tracking-uri", f"http://127.0.0.1:{DEAD}"],
        {},
        ["no tracking server"],
        {},
    ),
    (
        "leaderboard-port",
        ["leaderboard", "--port", "99999", "--tracking-uri", "sqlite:///{d}/x.db"],
        {"x.db": b""},
        ["--port"],
        {},
    ),
]

SUBPROCESS_CASES = {"config-empty", "policy-missing", "score-pred-not-utf8", "sweep-not-utf8", "tracking-server-dead"}


def _fill(text: str, d: Path) -> str:
    return text.replace("{d}", str(d)).replace("{tiny}", TINY)


def _prepare(tmp_path: Path, files: dict, env: dict, monkeypatch) -> set[Path]:
    monkeypatch.setenv("HARNESS_TRACKING_WAIT_S", "0")  # a dead server is reported at once, not after 120 s
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, tmp_path), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, tmp_path))
    return set(tmp_path.rglob("*"))


def _check(case_id: str, code: int, err: str, expected: list[str], before: set[Path], tmp_path: Path) -> None:
    assert code == 2, f"{case_id}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{case_id}: printed a traceback\n{err}"
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1, f"{case_id}: expected one 'error:' paragraph\n{err}"
    for text in expected:
        assert text in message[0], f"{case_id}: {text!r} not in\n{message[0]}"
    left = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before)
    assert not left, f"{case_id}: left behind {left}"
    for name in ("mlflow.db", "mlruns", "runs", "outputs"):
        assert not (tmp_path / name).exists(), f"{case_id}: created {name}"


@pytest.mark.parametrize("case_id,argv,files,expected,env", CASES, ids=[c[0] for c in CASES])
def test_bad_input_in_process(case_id, argv, files, expected, env, tmp_path, monkeypatch, capsys, tiny_assets):
    from harness.cli import main

    before = _prepare(tmp_path, files, env, monkeypatch)
    code = main([_fill(arg, tmp_path) for arg in argv])
    _check(case_id, code, capsys.readouterr().err, expected, before, tmp_path)


@pytest.mark.parametrize(
    "case_id,argv,files,expected,env",
    [c for c in CASES if c[0] in SUBPROCESS_CASES],
    ids=sorted(SUBPROCESS_CASES, key=[c[0] for c in CASES].index),
)
def test_bad_input_as_a_real_subprocess(case_id, argv, files, expected, env, tmp_path, monkeypatch, tiny_assets):
    before = _prepare(tmp_path, files, env, monkeypatch)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *[_fill(a, tmp_path) for a in argv]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    _check(case_id, proc.returncode, proc.stderr, expected, before, tmp_path)


def test_ref_sync_every_auto_is_a_valid_grid_value(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text(_fill(sweep_file("  method: [dpo]\n  ref_sync_every: [auto, inf]\n"), tmp_path))
    before = _prepare(tmp_path, {}, {}, monkeypatch)
    assert main(["sweep", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "refauto" in out and "refinf" in out
    assert set(tmp_path.rglob("*")) == before  # --dry-run creates nothing


def test_case_table_is_large_and_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 100


# -- the leaderboard app: the same bad tracking URIs show its message, never an exception box ----

APP_CASES = [
    ("unknown-scheme", "foo://x", {}, "unknown scheme"),
    ("not-a-database", "sqlite:///{d}/notdb.db", {"notdb.db": "hello, not sqlite"}, "not an SQLite database"),
    ("database-is-a-folder", "sqlite:///{d}/dbdir", {"dbdir/x": ""}, "no MLflow database"),
    ("no-database-file", "sqlite:///{d}/none.db", {}, "no MLflow database"),
    ("server-dead", f"http://127.0.0.1:{DEAD}", {}, "cannot connect"),
    ("file-store-missing", "file://{d}/no-mlruns", {}, "does not exist"),
    (
        "sqlite-not-mlflow",
        "sqlite:///{d}/other.db",
        {"other.db": b"SQLite format 3\x00" + b"\x00" * 84},
        "did not answer as an MLflow store",
    ),
]


@pytest.mark.parametrize("case_id,uri,files,message", APP_CASES, ids=[c[0] for c in APP_CASES])
def test_leaderboard_app_shows_its_message(case_id, uri, files, message, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    before = _prepare(tmp_path, files, {"MLFLOW_TRACKING_URI": uri}, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["app.py"])
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, f"{case_id}: exception box {[e.value for e in at.exception]}"
    warnings = [str(w.value) for w in at.warning]
    assert any(message in w for w in warnings), f"{case_id}: {warnings}"
    left = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before)
    assert not left, f"{case_id}: left behind {left}"


def test_a_failure_during_the_run_leaves_its_mlflow_run_failed_not_running(tmp_path, monkeypatch, tiny_assets):
    """What no check can see in advance (here: `checkpoints` inside output_dir is a file, found
    only when the first checkpoint is written) fails the run with its error recorded."""
    from mlflow.tracking import MlflowClient

    from harness.config import load_run_config
    from harness.training_run import run_training

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("not a folder")
    cfg = load_run_config(
        TINY,
        [
            "train.steps=1",
            "train.prompts_per_step=2",
            "train.samples_per_prompt=2",
            "train.max_new_tokens=8",
            "validation.prompts=2",
            f"output_dir={out}",
        ],
    )
    with pytest.raises(OSError):
        run_training(cfg, progress=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert "checkpoints" in run.data.tags["harness.error"]
