"""The Streamlit app, driven by streamlit.testing's AppTest against a real MLflow store."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.launch import build_streamlit_command
from dashboard.views import charts, tables
from dashboard_fixtures import add_failed_run, add_running_run, add_unevaluated_run, clone_store, fill_store

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
APP = str(DASHBOARD / "app.py")
TRAIN_ROWS = 17


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    info = fill_store(uri)
    info["uri"] = uri
    return info


@pytest.fixture
def app_for(monkeypatch):
    """An AppTest reading `uri` from MLFLOW_TRACKING_URI, with fresh caches and no argv of ours."""

    def make(uri: str) -> AppTest:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setattr(sys, "argv", ["app.py"])
        st.cache_data.clear()
        st.cache_resource.clear()
        return AppTest.from_file(APP, default_timeout=60)

    return make


def open_view(at: AppTest, view: str) -> AppTest:
    at.run()
    if view != "Leaderboard":
        at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


# -- leaderboard -----------------------------------------------------------------------------


def test_leaderboard_lists_every_run_with_scores_and_links(store, app_for):
    at = open_view(app_for(store["uri"]), "Leaderboard")
    table = at.dataframe[0].value
    assert len(table) == TRAIN_ROWS
    assert any(c.startswith(f"{TRAIN_ROWS} runs") for c in texts(at.caption))
    assert {
        "run",
        "mlflow",
        "method",
        "sync_every",
        "ref_sync_every",
        "task_mix",
        "seed",
        "selected_step",
        "tiny_math/pass_at_1",
        "tiny_math/pass_at_1_se",
        "arena_hard/score",
    } <= set(table.columns)
    logged = next(r for r in store["runs"] if r["run_name"] == "dpo-s10-verifiable-seed1")
    row = table[table["run"] == "dpo-s10-verifiable-seed1"].iloc[0]
    assert row["tiny_math/pass_at_1"] == pytest.approx(logged["scores"]["eval/tiny_math/pass_at_1"])
    assert row["mlflow"] == f"http://localhost:5000/#/experiments/{store['experiment_id']}/runs/{logged['run_id']}"
    assert len(at.get("download_button")) == 1


def test_leaderboard_aggregates_seeds_on_toggle(store, app_for):
    at = open_view(app_for(store["uri"]), "Leaderboard")
    at.toggle(key="aggregate").set_value(True).run()
    table = at.dataframe[0].value
    assert len(table) == 9 and set(table["n_seeds"]) == {1, 2}
    row = table[(table["label"] == "online DPO") & (table["task_mix"] == "verifiable")].iloc[0]
    assert row["tiny_math/pass_at_1"] == pytest.approx(49.5)  # (51 + 48) / 2
    assert row["tiny_math/pass_at_1_se"] == pytest.approx(1.5)
    assert any(c.startswith(f"9 cells from {TRAIN_ROWS} runs") for c in texts(at.caption))


def test_sidebar_filters_narrow_every_view(store, app_for):
    at = open_view(app_for(store["uri"]), "Leaderboard")
    at.sidebar.multiselect(key="filter_method").set_value(["grpo"]).run()
    assert set(at.dataframe[0].value["method"]) == {"grpo"} and len(at.dataframe[0].value) == 4
    at.sidebar.multiselect(key="filter_task_mix").set_value(["verifiable"]).run()
    assert len(at.dataframe[0].value) == 2


def test_leaderboard_csv_matches_the_table(store):
    runs = data.runs_frame(data.connect(store["uri"]), [store["experiment_id"]])
    table = tables.leaderboard_frame(runs, store["uri"], "http://ui:1")
    csv = pd.read_csv(pd.io.common.StringIO(table.to_csv(index=False)))
    assert len(csv) == TRAIN_ROWS and list(csv.columns) == list(table.columns)
    assert csv["mlflow"].str.startswith("http://ui:1/#/experiments/").all()


# -- paper tables, grid ----------------------------------------------------------------------


def test_paper_tables_one_per_task_mix_with_the_paper_numbers(store, app_for):
    at = open_view(app_for(store["uri"]), "Paper tables")
    assert len(at.dataframe) == len(store["task_mixes"])
    assert texts(at.subheader) == ["verifiable", "non_verifiable"]
    math_table = at.dataframe[0].value
    assert list(math_table["method"]) == ["seed", "offline DPO", "semi-online DPO s=10", "online DPO", "GRPO"]
    assert list(math_table["paper: Math500"]) == ["47.4", "53.7", "57.2", "58.7", "58.1"]
    assert math_table.loc[3, "tiny_math/pass_at_1"] == "49.5 ± 1.5"


def test_grid_draws_a_heatmap_of_the_chosen_metric(store, app_for):
    at = open_view(app_for(store["uri"]), "Grid")
    at.selectbox(key="grid_metric").set_value("train/entropy").run()
    assert len(at.get("vega_lite_chart")) == 1
    grid = at.dataframe[0].value
    # the seed run logged no training curves, so it has no row for this metric
    assert list(grid.index) == ["offline DPO", "semi-online DPO s=10", "online DPO", "GRPO"]
    assert list(grid.columns) == ["verifiable", "non_verifiable"]
    assert grid.loc["offline DPO", "verifiable"].startswith("1.2")  # no entropy collapse offline
    assert float(grid.loc["online DPO", "verifiable"].split(" ")[0]) < 0.5  # collapse online
    at.selectbox(key="grid_metric").set_value("eval/arena_hard/score").run()
    assert at.dataframe[0].value.loc["seed", "non_verifiable"] == "21.3 ± 1.1"  # SE from the 95% CI


# -- curves, compare -------------------------------------------------------------------------


def test_curves_overlay_runs_and_mark_the_selected_step(store, app_for):
    at = open_view(app_for(store["uri"]), "Curves")
    at.multiselect(key="curve_metrics").set_value(["val/len_norm_reward", "train/entropy", "time/generate_s"]).run()
    charts_drawn = at.get("vega_lite_chart")
    assert len(charts_drawn) == 3
    assert "strokeDash" in charts_drawn[0].proto.spec  # the selected-checkpoint rule
    assert any(c.startswith("8 runs") for c in texts(at.caption))


def test_checkpoint_marks_sit_on_the_curve_at_the_selected_step():
    history = pd.DataFrame(
        {"run": ["a"] * 4 + ["b"] * 2, "step": [10, 20, 30, 40, 10, 20], "value": [0.1, 0.5, 0.3, 0.2, 1.0, 2.0]}
    )
    marks = charts.checkpoint_marks(history, {"a": 20.0, "b": 25.0, "c": float("nan")})
    assert marks.to_dict("records") == [
        {"run": "a", "step": 20.0, "value": 0.5},
        {"run": "b", "step": 25.0, "value": 2.0},
    ]


def test_compare_shows_only_differing_params_and_metric_differences(store, app_for):
    at = open_view(app_for(store["uri"]), "Compare")
    params, metrics = at.dataframe[0].value, at.dataframe[1].value
    assert list(params.index) == ["seed"]
    assert list(metrics.columns)[-1] == "dpo-sinf-verifiable-seed1 − dpo-sinf-verifiable-seed0"
    assert metrics.loc["tiny_math/pass_at_1"].iloc[-1] == pytest.approx(28.0 - 31.0)
    assert len(at.get("vega_lite_chart")) == 1
    at.multiselect(key="compare_runs").set_value(["dpo-sinf-verifiable-seed0", "dpo-sinf-non_verifiable-seed0"]).run()
    assert set(at.dataframe[0].value.index) == {"task_mix", "dpo.beta", "train.adam_eps"}


# -- samples: model text stays text ----------------------------------------------------------


def test_samples_show_model_text_inert(store, app_for):
    at = open_view(app_for(store["uri"]), "Samples")
    assert at.selectbox(key="samples_run").value == "dpo-sinf-verifiable-seed0"
    frame = at.dataframe[0].value
    assert list(frame["output"][:3]) == store["xss_outputs"]
    assert "<script>alert(1)</script>" in texts(at.code)
    at.number_input(key="samples_row").set_value(1).run()
    assert "**bold** [link](javascript:alert(1))" in texts(at.code)
    rendered = [
        at.markdown,
        at.caption,
        at.info,
        at.warning,
        at.error,
        at.success,
        at.title,
        at.header,
        at.subheader,
        at.latex,
        at.get("html"),
    ]
    for element in (e for group in rendered for e in group):
        assert not any(x in str(element.value) for x in ("alert(1)", "<script", "onerror")), element.value


def test_samples_filter_correct_and_incorrect(store, app_for):
    at = open_view(app_for(store["uri"]), "Samples")
    at.radio(key="samples_filter").set_value("Incorrect").run()
    assert list(at.dataframe[0].value["id"]) == ["q0", "q2", "q4"]
    at.radio(key="samples_filter").set_value("Correct").run()
    assert list(at.dataframe[0].value["id"]) == ["q1", "q3", "q5"]
    at.radio(key="samples_checkpoint").set_value("final").run()  # the final checkpoint's generations
    assert list(at.dataframe[0].value["id"]) == ["q1", "q3"]


# -- empty and broken states -----------------------------------------------------------------


def test_empty_store_says_there_are_no_runs(tmp_path, app_for):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # creates the empty database
    at = open_view(app_for(uri), "Leaderboard")
    assert any("No runs in the tracking store" in m for m in texts(at.info))
    assert not at.dataframe


@pytest.mark.parametrize(
    "uri, message",
    [("http://127.0.0.1:9", "cannot connect"), ("sqlite:////nonexistent-dir/x/mlflow.db", "no MLflow database")],
)
def test_unreachable_tracking_uri_warns_without_a_traceback(uri, message, app_for):
    for view in ("Leaderboard", "Samples"):
        at = open_view(app_for(uri), view)
        assert any(message in w for w in texts(at.warning)) and not at.exception


def test_running_sweep_and_unevaluated_run_are_explained(store, tmp_path, app_for):
    uri = clone_store(store["uri"], tmp_path)
    add_running_run(uri, store["experiment_id"], store["parent_run_id"])
    add_unevaluated_run(uri, store["experiment_id"], store["parent_run_id"])
    add_failed_run(uri, store["experiment_id"], store["parent_run_id"])
    at = open_view(app_for(uri), "Leaderboard")
    table = at.dataframe[0].value
    assert len(table) == TRAIN_ROWS + 3 and "status" in table
    assert any("still running" in m and "dpo-s5-non_verifiable-seed0" in m for m in texts(at.info))
    assert any("no eval/* metrics" in m and "grpo-s1-verifiable-seed7" in m for m in texts(at.warning))
    assert any("failed" in m and "dpo-s100-verifiable-seed0" in m for m in texts(at.warning))
    failed = table[table["run"] == "dpo-s100-verifiable-seed0"].iloc[0]
    assert failed["status"] == "FAILED" and failed["error"].endswith("CUDA out of memory")
    for view in ("Paper tables", "Grid", "Curves", "Compare"):
        at.sidebar.radio(key="view").set_value(view).run()
        assert not at.exception, (view, [e.value for e in at.exception])
    at.sidebar.radio(key="view").set_value("Samples").run()
    at.selectbox(key="samples_run").set_value("grpo-s1-verifiable-seed7").run()
    assert any("no eval/<suite>/generations.jsonl" in m for m in texts(at.info)) and not at.exception


# -- tracking URI sources --------------------------------------------------------------------


def test_argv_tracking_uri_wins_over_the_environment(store, app_for, monkeypatch):
    at = app_for("http://127.0.0.1:9")
    monkeypatch.setattr(sys, "argv", ["app.py", "--tracking-uri", store["uri"]])
    open_view(at, "Leaderboard")
    assert len(at.dataframe[0].value) == TRAIN_ROWS


def test_sidebar_text_box_switches_the_tracking_uri(store, app_for):
    at = open_view(app_for("http://127.0.0.1:9"), "Leaderboard")
    assert at.warning and not at.dataframe
    at.sidebar.text_input(key="tracking_uri").set_value(store["uri"]).run()
    assert len(at.dataframe[0].value) == TRAIN_ROWS and not at.warning


def test_build_streamlit_command_runs_app_py_with_the_uri():
    command = build_streamlit_command("http://mlflow:5000", 8600)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == DASHBOARD / "app.py" and Path(command[4]).is_file()
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[-3:] == ["--", "--tracking-uri", "http://mlflow:5000"]
    assert "--" not in build_streamlit_command(None, 8501)


def test_dashboard_never_imports_training_code():
    allowed_harness = {"harness.errors"}
    for path in DASHBOARD.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in {"torch", "transformers", "evaluators"}, (path, name)
                assert not name.startswith("harness") or name in allowed_harness, (path, name)
