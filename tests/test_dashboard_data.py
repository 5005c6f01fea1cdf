"""dashboard.data against a real MLflow sqlite store filled like a sweep fills it."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pandas as pd
import pytest

from dashboard import data, paper
from dashboard_fixtures import clone_store, fill_store

TRAIN_ROWS = 17  # 4 cells x 2 task mixes x 2 seeds + the seed baseline


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    info = fill_store(uri)
    info["uri"] = uri
    info["client"] = data.connect(uri)
    return info


@pytest.fixture(scope="module")
def runs(store):
    return data.runs_frame(store["client"], [store["experiment_id"]])


def run_of(store, method, sync_every, task_mix, seed):
    return next(
        r
        for r in store["runs"]
        if (r["method"], r["sync_every"], r["task_mix"], r["seed"]) == (method, sync_every, task_mix, seed)
    )


# -- connecting ------------------------------------------------------------------------------


def test_connect_rejects_sqlite_in_a_missing_folder(tmp_path):
    with pytest.raises(data.TrackingUnavailable, match="folder does not exist"):
        data.connect(f"sqlite:///{tmp_path}/nowhere/mlflow.db")


def test_connect_does_not_create_a_missing_sqlite_file(tmp_path):
    with pytest.raises(data.TrackingUnavailable, match="no MLflow database"):
        data.connect(f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()


def test_connect_fails_fast_on_an_unreachable_server():
    started = time.monotonic()
    with pytest.raises(data.TrackingUnavailable, match="cannot connect to 127.0.0.1:9"):
        data.connect("http://127.0.0.1:9")
    assert time.monotonic() - started < 5


def test_sqlite_path_handles_relative_and_absolute_uris():
    assert str(data.sqlite_path("sqlite:///mlflow.db")) == "mlflow.db"
    assert str(data.sqlite_path("sqlite:////tmp/x/mlflow.db")) == "/tmp/x/mlflow.db"
    assert data.sqlite_path("http://host:5000") is None


def test_run_url_links_to_the_server_or_to_the_configured_ui():
    assert data.run_url("http://mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert data.run_url("sqlite:///x.db", "3", "abc") == "http://localhost:5000/#/experiments/3/runs/abc"
    assert data.run_url("sqlite:///x.db", "3", "abc", "http://ui:8080/") == "http://ui:8080/#/experiments/3/runs/abc"


# -- sweeps and runs -------------------------------------------------------------------------


def test_list_sweeps_names_the_sweep_and_its_parent_run(store):
    sweeps = data.list_sweeps(store["client"])
    assert list(sweeps["sweep"]) == [store["sweep"]]  # the empty Default experiment is left out
    assert sweeps.loc[0, "parent_run_id"] == store["parent_run_id"]
    assert sweeps.loc[0, "experiment_id"] == store["experiment_id"]


def test_runs_frame_has_one_row_per_training_run_with_the_logged_values(store, runs):
    assert len(runs) == TRAIN_ROWS
    assert store["parent_run_id"] not in set(runs["run_id"])
    rows = runs.set_index("run_id")
    for logged in store["runs"]:
        row = rows.loc[logged["run_id"]]
        assert (row["method"], row["sync_every"], row["ref_sync_every"], row["task_mix"], row["seed"]) == (
            logged["method"],
            logged["sync_every"],
            logged["ref_sync_every"],
            logged["task_mix"],
            str(logged["seed"]),
        )
        assert row["selected_step"] == logged["selected_step"]
        assert row["sweep"] == store["sweep"] and row["status"] == "FINISHED"
        for key, value in logged["scores"].items():
            assert row[key] == pytest.approx(value)
        assert row["train/entropy"] == pytest.approx(logged["history"]["train/entropy"][-1][1])


def test_runs_frame_lists_rows_in_paper_order(runs):
    assert runs.loc[0, "method"] == "seed"
    verifiable = runs[runs["task_mix"] == "verifiable"]
    cells = list(dict.fromkeys(zip(verifiable["method"], verifiable["sync_every"])))
    assert cells == [("dpo", "inf"), ("dpo", "10"), ("dpo", "1"), ("grpo", "1")]
    assert list(dict.fromkeys(runs["task_mix"])) == ["-", "verifiable", "non_verifiable"]


def test_search_follows_page_tokens(store):
    class CountingClient:  # the real client, with its search_runs calls counted
        def __init__(self, client):
            self.client, self.pages = client, 0

        def search_runs(self, *args, **kwargs):
            self.pages += 1
            return self.client.search_runs(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.client, name)

    counting = CountingClient(store["client"])
    small = data.runs_frame(counting, [store["experiment_id"]], page_size=3)
    assert counting.pages == math.ceil((TRAIN_ROWS + 1) / 3)  # + the sweep's parent run
    full = data.runs_frame(store["client"], [store["experiment_id"]])
    pd.testing.assert_frame_equal(small.drop(columns="duration_s"), full.drop(columns="duration_s"))


def test_runs_frame_of_no_experiments_is_empty_with_the_meta_columns(store):
    frame = data.runs_frame(store["client"], [])
    assert frame.empty and list(frame.columns) == list(data.META_COLUMNS)


def test_running_and_unevaluated_runs_are_rows_without_scores(store, tmp_path):
    from dashboard_fixtures import add_running_run, add_unevaluated_run

    uri = clone_store(store["uri"], tmp_path)
    running = add_running_run(uri, store["experiment_id"], store["parent_run_id"])
    unevaluated = add_unevaluated_run(uri, store["experiment_id"], store["parent_run_id"])
    frame = data.runs_frame(data.connect(uri), [store["experiment_id"]]).set_index("run_id")
    assert len(frame) == TRAIN_ROWS + 2
    assert frame.loc[running, "status"] == "RUNNING"
    assert frame.loc[unevaluated, "status"] == "FINISHED"
    for run_id in (running, unevaluated):
        assert frame.loc[run_id, data.eval_score_columns(frame.reset_index())].isna().all()
    assert frame.loc[running, "train/entropy"] == pytest.approx(1.19)


# -- columns, aggregation, paper tables -------------------------------------------------------


def test_headline_columns_pick_one_score_per_suite(runs):
    assert sorted(data.headline_columns(runs)) == [
        "eval/arena_hard/score",
        "eval/tiny_chat/lc_winrate",
        "eval/tiny_math/pass_at_1",
    ]
    assert "eval_final/tiny_math/pass_at_1" in data.headline_columns(runs, final=True)
    scores = data.eval_score_columns(runs)
    assert "eval/tiny_chat/winrate" in scores and "eval/tiny_math/n_problems" not in scores
    assert not any(c.endswith(("_se", "ci_low", "ci_high")) for c in scores)
    assert data.spread_columns(runs, "eval/arena_hard/score") == [
        "eval/arena_hard/score_se",
        "eval/arena_hard/ci_low",
        "eval/arena_hard/ci_high",
    ]


def test_step_metric_keys_list_the_step_wise_metrics(runs):
    keys = data.step_metric_keys(runs)
    assert {"train/loss", "train/entropy", "val/len_norm_reward", "time/generate_s"} <= set(keys)
    assert not any(k.startswith("eval") for k in keys) and "selected_step" not in keys


def test_seed_aggregate_mean_and_standard_error_by_hand(runs):
    cells = data.seed_aggregate(runs)
    assert len(cells) == 9  # 8 cells + the seed baseline
    cell = cells[(cells["method"] == "dpo") & (cells["sync_every"] == "10") & (cells["task_mix"] == "verifiable")].iloc[
        0
    ]
    # logged pass_at_1: seed 0 -> 30 + 16 + 1 = 47, seed 1 -> 30 + 16 - 2 = 44
    assert cell["eval/tiny_math/pass_at_1"] == pytest.approx(45.5)
    assert cell["eval/tiny_math/pass_at_1_se"] == pytest.approx(abs(47 - 44) / 2)  # std/sqrt(2) for two values
    assert (cell["n_seeds"], cell["seeds"], cell["label"]) == (2, "0,1", "semi-online DPO s=10")
    seed = cells[cells["method"] == "seed"].iloc[0]
    assert seed["eval/tiny_math/pass_at_1_se"] == pytest.approx(3.0)  # one run: its own SE
    assert seed["eval/arena_hard/score_se"] == pytest.approx((23.5 - 19.0) / (2 * 1.96))  # from the 95% CI


def test_paper_tables_rows_columns_and_paper_numbers(runs):
    tables = data.paper_tables(runs)
    assert list(tables) == ["verifiable", "non_verifiable"]
    math_table = tables["verifiable"]
    assert list(math_table["label"]) == ["seed", "offline DPO", "semi-online DPO s=10", "online DPO", "GRPO"]
    assert "eval/tiny_math/pass_at_1" in math_table and "eval/arena_hard/score" not in math_table
    assert list(math_table["paper: Math500"]) == [47.4, 53.7, 57.2, 58.7, 58.1]
    chat = tables["non_verifiable"]
    assert chat.loc[0, "eval/tiny_chat/lc_winrate"] == pytest.approx(27.3)  # the seed baseline is in both
    assert list(chat["paper: AlpacaEval LC"]) == [27.3, 53.2, 81.6, 83.1, 75.2]


def test_paper_row_order_covers_every_paper_row_and_extensions():
    rows = [("grpo", "5"), ("dpo", "1"), ("dpo", "5"), ("grpo", "1"), ("dpo", "100"), ("dpo", "inf"), ("dpo", "10")]
    frame = pd.DataFrame(
        [
            {
                "run_id": str(i),
                "run_name": f"r{i}",
                "sweep": "s",
                "method": m,
                "sync_every": s,
                "ref_sync_every": "inf",
                "task_mix": "non_verifiable",
                "seed": "0",
                "eval/tiny_chat/lc_winrate": 50.0,
            }
            for i, (m, s) in enumerate(rows)
        ]
        + [
            {
                "run_id": "x",
                "run_name": "seed",
                "sweep": "s",
                "method": "seed",
                "sync_every": "-",
                "ref_sync_every": "-",
                "task_mix": "-",
                "seed": "0",
                "eval/tiny_chat/lc_winrate": 27.0,
            }
        ]
    )
    labels = list(data.paper_tables(frame)["non_verifiable"]["label"])
    assert labels == [
        "seed",
        "offline DPO",
        "semi-online DPO s=100",
        "semi-online DPO s=10",
        "semi-online DPO s=5",
        "online DPO",
        "GRPO",
        "GRPO s=5",
    ]


def test_method_label_notes_a_reference_setting_that_differs_from_the_paper():
    assert data.method_label("dpo", "1", "1", "verifiable") == "online DPO"
    assert data.method_label("dpo", "1", "inf", "verifiable") == "online DPO (ref fixed)"
    assert data.method_label("dpo", "10", "10", "non_verifiable") == "semi-online DPO s=10 (ref sync 10)"


def test_paper_module_holds_the_headline_table():
    assert paper.paper_value("semi-online DPO s=5", "Arena-Hard") == 60.7
    assert paper.paper_value("semi-online DPO s=5", "Math500") is None
    assert list(paper.paper_frame("verifiable")["label"]) == [
        "seed",
        "offline DPO",
        "semi-online DPO s=100",
        "semi-online DPO s=10",
        "online DPO",
        "GRPO",
    ]


# -- per-run details -------------------------------------------------------------------------


def test_metric_histories_return_every_logged_point(store):
    logged = run_of(store, "dpo", "1", "verifiable", 0)
    history = data.metric_histories(store["client"], [logged["run_id"]], ["train/entropy", "val/reward"])
    for key in ("train/entropy", "val/reward"):
        points = history[history["key"] == key]
        steps, values = zip(*logged["history"][key])
        assert list(points["step"]) == list(steps)
        assert list(points["value"]) == pytest.approx(values)
    assert set(history["run_id"]) == {logged["run_id"]}


def test_param_diff_keeps_only_params_that_differ(store):
    seeds = [run_of(store, "dpo", "inf", "verifiable", s)["run_id"] for s in (0, 1)]
    assert list(data.param_diff(data.run_params(store["client"], seeds)).index) == ["seed"]
    mixes = [run_of(store, "dpo", "inf", mix, 0)["run_id"] for mix in ("verifiable", "non_verifiable")]
    diff = data.param_diff(data.run_params(store["client"], mixes))
    assert set(diff.index) == {"task_mix", "dpo.beta", "train.adam_eps"}
    assert diff.loc["dpo.beta", mixes[0]] == "0.1" and diff.loc["dpo.beta", mixes[1]] == "0.01"


def test_generations_round_trip_with_model_text_untouched(store):
    math_run = run_of(store, "dpo", "1", "verifiable", 0)["run_id"]
    chat_run = run_of(store, "dpo", "1", "non_verifiable", 0)["run_id"]
    assert data.list_generation_suites(store["client"], math_run) == ["tiny_math"]
    assert data.list_generation_suites(store["client"], chat_run) == ["arena_hard", "tiny_chat"]
    frame = data.load_generations(store["client"], math_run, "tiny_math")
    assert len(frame) == 6 and list(frame.columns[:8]) == list(data.GENERATION_COLUMNS)
    assert list(frame["output"][:3]) == store["xss_outputs"]
    assert list(frame["correct"]) == [False, True, False, True, False, True]
    assert data.list_generation_suites(store["client"], math_run, "eval_final") == ["tiny_math"]
    assert len(data.load_generations(store["client"], math_run, "tiny_math", "eval_final")) == 4


def test_load_generations_of_a_missing_suite_is_a_data_error(store):
    run_id = run_of(store, "dpo", "1", "verifiable", 0)["run_id"]
    with pytest.raises(data.DataError, match="eval/arena_hard/generations.jsonl"):
        data.load_generations(store["client"], run_id, "arena_hard")


def test_data_module_imports_no_training_code():
    code = (
        "import sys, dashboard.data, dashboard.paper, dashboard.launch; "
        "print([m for m in ('torch', 'transformers', 'harness.train.trainer') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_arena_hard_v2_category_intervals_are_spreads_not_scores():
    from results.metrics import is_score_column

    assert is_score_column("eval/arena_hard/creative_writing_score")
    assert not is_score_column("eval/arena_hard/creative_writing_ci_low")
    assert not is_score_column("eval/arena_hard/creative_writing_ci_high")
    assert not is_score_column("eval/arena_hard/ci_low") and is_score_column("eval/arena_hard/score")
