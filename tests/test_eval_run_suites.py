"""`harness eval RUN_ID` without --suites evaluates the suites the run's own config names
(`eval.suites` in its config.yaml artifact), and says so in one paragraph when there are none."""

from __future__ import annotations

import json
import shutil

import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main


def make_run(tmp_path, tiny_assets, config: dict | None):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("suites", str(tmp_path / "artifacts"))).info.run_id
    output_dir = tmp_path / "out"
    shutil.copytree(tiny_assets.policy_dir, output_dir / "checkpoints" / "step_5")
    client.log_param(run_id, "output_dir", str(output_dir))
    for key, value in (("val/reward", 0.5), ("val/response_len", 10.0), ("val/len_norm_reward", 0.05)):
        client.log_metric(run_id, key, value, step=5)
    listing = tmp_path / "checkpoints.json"
    listing.write_text(json.dumps([{"step": 5, "path": "checkpoints/step_5", "validated": True}]))
    client.log_artifact(run_id, str(listing))
    if config is not None:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        client.log_artifact(run_id, str(tmp_path / "config.yaml"))
    rows = (tiny_assets.data_dir / "math" / "test.jsonl").read_text().splitlines()[:2]
    (tmp_path / "two.jsonl").write_text("\n".join(rows) + "\n")
    flags = ["--tracking-uri", uri, "--data", f"tiny_math={tmp_path / 'two.jsonl'}", "--samples", "1"]
    return client, run_id, flags + ["--max-new-tokens", "8"]


def test_eval_of_a_run_takes_its_configured_suites(tiny_assets, tmp_path):
    client, run_id, flags = make_run(tmp_path, tiny_assets, {"eval": {"suites": ["tiny_math"]}})
    assert main(["eval", run_id, *flags]) == 0
    metrics = client.get_run(run_id).data.metrics
    assert "eval/tiny_math/pass_at_1" in metrics
    assert not [key for key in metrics if key.startswith("eval/tiny_chat/")]


def test_eval_of_a_run_without_configured_suites_is_refused_before_any_work(tiny_assets, tmp_path, capsys):
    client, run_id, flags = make_run(tmp_path, tiny_assets, {"eval": {"suites": []}})
    assert main(["eval", run_id, *flags]) == 2
    err = capsys.readouterr().err
    assert f"run {run_id}" in err and "eval.suites is []" in err and "--suites tiny_math,tiny_chat" in err
    assert not [key for key in client.get_run(run_id).data.metrics if key.startswith("eval")]
