"""`harness report` against a real MLflow sqlite store filled the way a sweep fills it."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dashboard_fixtures import add_failed_run, add_unevaluated_run, clone_store, fill_store, log_history
from harness.errors import HarnessError
from results.formatting import DASH
from results.report import report_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    info = fill_store(f"sqlite:///{root}/mlflow.db")
    info["uri"] = f"sqlite:///{root}/mlflow.db"
    info["root"] = root
    return info


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = report_command(None, str(out), tracking_uri=store["uri"], experiment=store["sweep"])
    return {"path": path, "text": path.read_text(encoding="utf-8"), "out": out}


def runs_of(store, method, sync_every, task_mix):
    return [r for r in store["runs"] if (r["method"], r["sync_every"], r["task_mix"]) == (method, sync_every, task_mix)]


def section(text: str, heading: str, within: str | None = None) -> str:
    """The text under `heading` (a markdown heading line) up to the next heading of its level or above."""
    if within:
        text = section(text, within)
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.search(rf"^#{{1,{len(level)}}} ", text[start:], flags=re.M)
    return text[start : start + stop.start()] if stop else text[start:]


def table(text: str) -> list[dict[str, str]]:
    """The first markdown table in `text` as rows {header: cell}."""
    lines = text[text.index("\n|") + 1 :].split("\n\n")[0].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def row(rows: list[dict[str, str]], label: str) -> dict[str, str]:
    return next(r for r in rows if r["method"] == label)


def pm(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) / math.sqrt(len(values)):.1f}"


# -- results tables --------------------------------------------------------------------------


def test_one_results_table_per_task_mix_with_the_seed_row_first(report, store):
    results = section(report["text"], "## Results")
    for mix in store["task_mixes"]:
        rows = table(section(results, f"### {mix}"))
        assert rows[0]["method"] == "seed"
        assert [r["method"] for r in rows[1:]] == ["offline DPO", "semi-online DPO s=10", "online DPO", "GRPO"]
    assert "### joint" not in results


def test_table_values_are_the_mean_and_se_over_seeds_of_the_logged_metrics(report, store):
    rows = table(section(report["text"], "### verifiable", within="## Results"))
    runs = runs_of(store, "dpo", "1", "verifiable")
    expected = pm([r["scores"]["eval/tiny_math/pass_at_1"] for r in runs])
    online = row(rows, "online DPO")
    assert online["tiny_math pass_at_1"] == expected
    assert online["selected step"] == str(runs[0]["selected_step"]) and online["n seeds"] == "2"
    chat = row(table(section(report["text"], "### non_verifiable", within="## Results")), "GRPO")
    assert chat["tiny_chat lc_winrate"] == pm(
        [r["scores"]["eval/tiny_chat/lc_winrate"] for r in runs_of(store, "grpo", "1", "non_verifiable")]
    )


def test_other_metrics_table_shows_raw_win_rate_and_length_next_to_the_headline(report, store):
    chat = table(section(report["text"], "#### non_verifiable: other metrics of the same checkpoints"))
    runs = runs_of(store, "dpo", "1", "non_verifiable")
    assert row(chat, "online DPO")["tiny_chat winrate"] == pm([r["scores"]["eval/tiny_chat/winrate"] for r in runs])
    assert "tiny_chat lc_winrate" not in chat[0]  # the headline stays in the results table
    math_rows = table(section(report["text"], "#### verifiable: other metrics of the same checkpoints"))
    assert row(math_rows, "online DPO")["tiny_math mean_length"] == "41.5"


def test_a_single_run_keeps_its_own_logged_se(report, store):
    seed = store["seed_run"]["scores"]
    rows = table(section(report["text"], "### non_verifiable", within="## Results"))
    ci_se = (seed["eval/arena_hard/ci_high"] - seed["eval/arena_hard/ci_low"]) / (2 * 1.96)
    assert rows[0]["arena_hard score"] == f"{seed['eval/arena_hard/score']:.1f} ± {ci_se:.1f}"
    assert rows[0]["tiny_chat lc_winrate"] == f"{seed['eval/tiny_chat/lc_winrate']:.1f} ± 1.4"


def test_paper_numbers_for_real_benchmarks_and_captioned_analogues_for_tiny_suites(report):
    verifiable = section(report["text"], "#### verifiable: comparison with the paper")
    assert "tiny_math for Math500" in verifiable and "not the same task" in verifiable
    assert row(table(verifiable), "online DPO")["Math500 (paper)"] == "58.7"
    chat_text = section(report["text"], "#### non_verifiable: comparison with the paper")
    real = table(chat_text)  # the paper's own benchmarks first
    assert row(real, "online DPO")["Arena-Hard (paper)"] == "60.1" and "tiny_chat (ours)" not in real[0]
    analogue = table(chat_text[chat_text.index("stand in for") :])
    assert row(analogue, "offline DPO")["AlpacaEval LC (paper)"] == "53.2"
    assert row(analogue, "seed")["tiny_chat (ours)"].startswith("27.3 ± ")


# -- figures ---------------------------------------------------------------------------------


def test_every_figure_is_a_png_linked_by_a_relative_path(report):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report["text"])
    assert len(links) == 6  # 4 validation curves, score vs s, phase split
    for link in links:
        assert not Path(link).is_absolute()
        png = report["out"] / link
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == PNG_SIGNATURE


# -- compute and selection -------------------------------------------------------------------


def test_compute_table_sums_the_per_step_time_metrics(report, store):
    rows = table(section(report["text"], "### verifiable", within="## Compute"))
    runs = runs_of(store, "dpo", "10", "verifiable")
    sums = {
        phase: statistics.mean(sum(v for _, v in r["history"][f"time/{phase}_s"]) for r in runs)
        for phase in ("generate", "score", "train", "sync")
    }
    semi = row(rows, "semi-online DPO s=10")
    for phase, value in sums.items():
        assert semi[f"{phase} s"] == f"{value:.1f}"
    assert semi["total s"] == f"{sum(sums.values()):.1f}"
    wait = statistics.mean(sum(v for _, v in r["history"]["time/generate_wait_s"]) for r in runs)
    assert semi["generate wait s"] == f"{wait:.1f}" and float(semi["generate wait s"]) < float(semi["generate s"])
    trainer = wait + sums["score"] + sums["train"] + sums["sync"]
    assert semi["trainer s"] == f"{trainer:.1f}"
    online_total = statistics.mean(
        sum(v for k in ("generate", "score", "train", "sync") for _, v in r["history"][f"time/{k}_s"])
        for r in runs_of(store, "dpo", "1", "verifiable")
    )
    assert semi["online ÷ this"] == f"{online_total / sum(sums.values()):.2f}"


def test_selection_table_matches_selected_and_final_values(report, store):
    rows = table(section(report["text"], "### non_verifiable", within="## Selection"))
    runs = runs_of(store, "dpo", "inf", "non_verifiable")
    offline = row(rows, "offline DPO")
    selected = statistics.mean(r["scores"]["eval/tiny_chat/lc_winrate"] for r in runs)
    final = statistics.mean(r["scores"]["eval_final/tiny_chat/lc_winrate"] for r in runs)
    assert offline["tiny_chat selected"] == f"{selected:.1f}" and offline["tiny_chat final"] == f"{final:.1f}"
    assert offline["tiny_chat Δ"] == f"{selected - final:+.1f}"
    lengths = [dict(r["history"]["val/response_len"]) for r in runs]
    assert (
        offline["val length @selected"]
        == f"{statistics.mean(h[r['selected_step']] for h, r in zip(lengths, runs)):.1f}"
    )
    assert offline["val length @final"] == f"{statistics.mean(h[max(h)] for h in lengths):.1f}"
    assert offline["selected step"] == "20" and offline["final step"] == "40"


# -- header and observations -----------------------------------------------------------------


def test_header_names_the_command_uri_experiment_and_counts(report, store):
    head = report["text"].split("## Results")[0]
    assert f"harness report --out {report['out']} --tracking-uri {store['uri']} --experiment {store['sweep']}" in head
    assert f"`{store['uri']}`" in head and f"`{store['sweep']}`" in head
    assert f"runs: {store['n_train_runs'] + 1} used" in head and "seeds: 0, 1 (2)" in head
    assert re.search(r"generated: \d{4}-\d\d-\d\d", head)


def test_observations_phrase_differences_from_the_two_se_margin(report):
    observations = section(report["text"], "### verifiable", within="## Observations")
    # paired by seed: the fixture's seed jitter is common to both cells, so each seed's difference is 20
    assert (
        "online DPO − offline DPO on tiny_math: +20.0 ± 0.0 (2 of 2 seeds agree in sign; beyond 2 SE)" in observations
    )
    assert "entropy, offline DPO:" in observations and "response length, online DPO:" in observations


# -- missing data ----------------------------------------------------------------------------


def test_empty_or_missing_experiment_is_a_harness_error(store, tmp_path):
    uri = clone_store(store["uri"], tmp_path / "store")
    MlflowClient(uri).create_experiment("empty", artifact_location=str(tmp_path / "artifacts"))
    with pytest.raises(
        HarnessError, match=r"experiment 'empty' in tracking URI .* holds no training runs.*sweep first"
    ):
        report_command(None, str(tmp_path / "out"), tracking_uri=uri, experiment="empty")
    # the sweep file names the experiment (tiny_grid) when --experiment is not given
    with pytest.raises(HarnessError, match=r"experiment 'tiny_grid' .* does not exist"):
        report_command("sweeps/tiny_grid.yaml", str(tmp_path / "out"), tracking_uri=uri)
    assert not (tmp_path / "out" / "report.md").exists()


def test_missing_metrics_show_a_dash_and_a_note(store, tmp_path):
    uri = clone_store(store["uri"], tmp_path / "store")
    eid, parent = store["experiment_id"], store["parent_run_id"]
    failed = add_failed_run(uri, eid, parent)
    add_unevaluated_run(uri, eid, parent)  # a third GRPO verifiable seed with no eval metrics
    client = MlflowClient(uri)
    tags = {
        "harness.kind": "train",
        "method": "dpo",
        "sync_every": "5",
        "ref_sync_every": "5",
        "task_mix": "verifiable",
        "seed": "0",
        "mlflow.parentRunId": parent,
    }
    lonely = client.create_run(eid, run_name="dpo-s5-unevaluated", tags=tags).info.run_id
    log_history(client, lonely, {"val/reward": [(10, 0.4)], "time/train_s": [(1, 1.0)]})
    client.set_terminated(lonely, "FINISHED")
    text = report_command(None, str(tmp_path / "out"), tracking_uri=uri, experiment=store["sweep"]).read_text()
    rows = table(section(text, "### verifiable", within="## Results"))
    assert row(rows, "semi-online DPO s=5")["tiny_math pass_at_1"] == DASH
    grpo = runs_of(store, "grpo", "1", "verifiable")
    assert row(rows, "GRPO")["tiny_math pass_at_1"] == pm([r["scores"]["eval/tiny_math/pass_at_1"] for r in grpo])
    notes = section(text, "## Notes")
    assert f"({failed[:8]}) is failed" in notes
    assert (
        "GRPO: eval/tiny_math/pass_at_1 missing in grpo-s1-verifiable-seed7; the mean is over the other seeds" in notes
    )
    assert "dpo-s5-unevaluated" in notes and "logged no" in notes


def test_a_second_run_for_one_seed_keeps_the_best_by_objective(store, tmp_path):
    uri = clone_store(store["uri"], tmp_path / "store")
    client = MlflowClient(uri)
    tags = {
        "harness.kind": "train",
        "method": "dpo",
        "sync_every": "1",
        "ref_sync_every": "1",
        "task_mix": "verifiable",
        "seed": "0",
        "mlflow.parentRunId": store["parent_run_id"],
    }
    worse = client.create_run(store["experiment_id"], run_name="dpo-s1-trial2", tags=tags).info.run_id
    log_history(client, worse, {"val/len_norm_reward": [(10, 0.0001)], "val/response_len": [(10, 40.0)]})
    client.log_batch(worse, metrics=[Metric("selected_step", 10, 0, 0), Metric("eval/tiny_math/pass_at_1", 1.0, 0, 0)])
    client.set_terminated(worse, "FINISHED")
    text = report_command(None, str(tmp_path / "out"), tracking_uri=uri, experiment=store["sweep"]).read_text()
    online = row(table(section(text, "### verifiable", within="## Results")), "online DPO")
    assert online["n seeds"] == "2"
    assert online["tiny_math pass_at_1"] == pm(
        [r["scores"]["eval/tiny_math/pass_at_1"] for r in runs_of(store, "dpo", "1", "verifiable")]
    )
    assert "seed 0 has 2 runs" in section(text, "## Notes")
