"""The report's statistics as the design runs its cells (issue 23): paired by seed, cells kept apart by
non-axis params, the LC win rate only where identifiable, and the hidden ground truth beside the proxy."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from dashboard_fixtures import log_history
from evaluators.pairwise import length_overlap
from results.metrics import headline_columns, lc_unidentifiable
from results.paired import describe_paired, paired_difference
from results.report import report_command
from results.runs import runs_frame

# -- paired statistics ------------------------------------------------------------------------


def test_paired_difference_by_hand():
    """A - B per common seed: 50-45 = 5, 55-50 = 5, 47-49 = -2 (B's seed 3 and A's unscored seed 4 have no
    partner). mean 8/3 = 2.6667; deviations 7/3, 7/3, -14/3 -> sum of squares 98/3, / (n-1) = 49/3,
    / n = 49/9 -> SE 7/3 = 2.3333; 2 of 3 seeds have the mean's (positive) sign."""
    a = pd.DataFrame({"seed": ["0", "1", "2", "4"], "s": [50.0, 55.0, 47.0, math.nan]})
    b = pd.DataFrame({"seed": ["0", "1", "2", "3"], "s": [45.0, 50.0, 49.0, 10.0]})
    result = paired_difference(a, b, "s")
    assert result["n"] == 3 and result["agree"] == 2
    assert result["mean"] == pytest.approx(8 / 3) and result["se"] == pytest.approx(7 / 3)
    assert describe_paired(result) == "+2.7 ± 2.3 (2 of 3 seeds agree in sign; within 2 SE)"
    one = paired_difference(a.iloc[:1], b, "s")
    assert one["n"] == 1 and math.isnan(one["se"]) and describe_paired(one) == "+5.0 (1 seed: no SE across seeds)"
    assert paired_difference(a, b.iloc[3:], "s")["n"] == 0


# -- LC identifiability -------------------------------------------------------------------------


def test_length_overlap_is_the_smaller_share_on_either_side_of_the_baseline_length():
    # deltas +3, -1, 0, +5: two answers no longer than the baseline's (-1, 0), three no shorter (+3, 0, +5)
    assert length_overlap([3, -1, 0, 5]) == 0.5
    assert length_overlap([4, 9, 1]) == 0.0  # every answer longer: equal length is outside the data


def test_lc_identifiability_rule():
    base = "eval/tiny_chat/lc_winrate"

    def run(se, overlap=None):
        values = {base: 60.0, f"{base}_se": se}
        if overlap is not None:
            values["eval/tiny_chat/lc_length_overlap"] = overlap
        return pd.Series(values)

    assert lc_unidentifiable(run(2.0, 0.3), base) is None
    assert lc_unidentifiable(run(5.0, 0.1), base) is None  # both bounds included
    assert "SE 5.1 > 5 points" in lc_unidentifiable(run(5.1, 0.3), base)
    assert "extrapolation" in lc_unidentifiable(run(2.0, 0.05), base)
    assert lc_unidentifiable(run(2.0), base) is None  # an older run without the overlap: the SE alone
    assert lc_unidentifiable(run(math.nan, 0.3), base) == "no SE logged"
    assert lc_unidentifiable(run(9.0, 0.0), "eval/tiny_chat/winrate") is None  # only LC win rates


def test_quality_is_never_the_headline():
    frame = pd.DataFrame(
        [
            {
                "eval/tiny_chat/quality": 0.5,
                "eval/tiny_chat/lc_winrate": 60.0,
                "eval/tiny_chat/lc_length_overlap": 0.2,
                "eval/tiny_chat/winrate": 61.0,
            }
        ]
    )
    assert headline_columns(frame) == ["eval/tiny_chat/lc_winrate"]


# -- a store: non_verifiable cells, three seeds ------------------------------------------------

# (method, s, variant params, seed) -> (lc_winrate, quality, overlap); online - offline quality per seed:
# 0.10, 0.20, -0.03 -> mean 0.09, SE sqrt(((0.01)^2 + 0.11^2 + 0.12^2) / 2 / 3) = 0.066583.
SCORES = {
    ("dpo", "1", "0.0", 0): (80.0, 0.60, 0.30),
    ("dpo", "1", "0.0", 1): (82.0, 0.70, 0.25),
    ("dpo", "1", "0.0", 2): (79.0, 0.47, 0.20),
    ("dpo", "inf", "0.0", 0): (60.0, 0.50, 0.40),
    ("dpo", "inf", "0.0", 1): (61.0, 0.50, 0.35),
    ("dpo", "inf", "0.0", 2): (62.0, 0.50, 0.45),
    ("grpo", "1", "0.0", 0): (90.0, 0.26, 0.00),
    ("grpo", "1", "0.0", 1): (91.0, 0.28, 0.02),
    ("grpo", "1", "0.001", 0): (70.0, 0.55, 0.30),
    ("grpo", "1", "0.001", 1): (72.0, 0.57, 0.30),
}


def add_run(client, experiment, method, sync_every, entropy, seed, index, search_lr=None):
    tags = {
        "harness.kind": "train",
        "method": method,
        "sync_every": sync_every,
        "ref_sync_every": "inf",
        "task_mix": "non_verifiable",
        "seed": str(seed),
        "cell_key": f"{method}-s{sync_every}-seed{seed}-grpo.entropy_coef={entropy}",
    }
    run_id = client.create_run(
        experiment,
        run_name=f"{method}-s{sync_every}-e{entropy}-seed{seed}" + (f"-lr{search_lr}" if search_lr else ""),
        tags=tags,
    ).info.run_id
    params = {
        "method": method,
        "sync_every": sync_every,
        "seed": str(seed),
        "train.lr": search_lr or "5e-05",
        "grpo.entropy_coef": entropy,
        "dpo.beta": "0.01",
        "model.device": f"cuda:{index % 2}",
        "output_dir": f"/runs/{index}",
    }
    win, quality, overlap = SCORES[(method, sync_every, entropy, seed)]
    if search_lr:  # a worse search trial of the same cell and seed
        win, quality = win - 30.0, quality - 0.3
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    # validation: step 20 has the best length-normalized reward, step 40 the highest reward
    log_history(
        client,
        run_id,
        {
            "val/reward": [(20, 0.5), (40, 0.8)],
            "val/response_len": [(20, 10.0), (40, 40.0)],
            "val/len_norm_reward": [(20, 0.04 if search_lr else 0.05), (40, 0.02)],
            "val/entropy": [(20, 1.0), (40, 0.9)],
            "val/quality": [(20, quality), (40, quality - 0.1)],
            **{f"time/{p}_s": [(1, 1.0)] for p in ("generate", "score", "train", "sync")},
        },
    )
    metrics = {
        "selected_step": 20,
        "eval/tiny_chat/lc_winrate": win,
        "eval/tiny_chat/lc_winrate_se": 2.0,
        "eval/tiny_chat/winrate": win + 1,
        "eval/tiny_chat/winrate_se": 2.0,
        "eval/tiny_chat/quality": quality,
        "eval/tiny_chat/quality_se": 0.03,
        "eval/tiny_chat/lc_length_overlap": overlap,
    }
    if method == "dpo" and sync_every == "1" and seed == 0:  # evaluated with --as-alternative
        metrics.update(
            {
                "selected_step_max_val_reward": 40,
                "eval_max_val_reward/tiny_chat/lc_winrate": 88.0,
                "eval_max_val_reward/tiny_chat/lc_winrate_se": 2.5,
                "eval_max_val_reward/tiny_chat/quality": 0.31,
            }
        )
    if method == "grpo" and entropy == "0.001":  # both seeds evaluated at the max-reward pick
        metrics.update(
            {
                "selected_step_max_val_reward": 40,
                "eval_max_val_reward/tiny_chat/lc_winrate": {0: 85.0, 1: 80.0}[seed],
                "eval_max_val_reward/tiny_chat/lc_winrate_se": 2.5,
                "eval_max_val_reward/tiny_chat/quality": {0: 0.30, 1: 0.37}[seed],
            }
        )
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("truth", artifact_location=str(root / "artifacts"))
    for index, (method, sync_every, entropy, seed) in enumerate(SCORES):
        add_run(client, experiment, method, sync_every, entropy, seed, index)
    add_run(client, experiment, "dpo", "1", "0.0", 1, 99, search_lr="1e-04")
    out = root / "report"
    text = report_command(None, str(out), tracking_uri=uri, experiment="truth").read_text(encoding="utf-8")
    return {"uri": uri, "client": client, "experiment": experiment, "text": text}


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.search(r"^#{1,%d} " % len(heading.split(" ", 1)[0]), text[start:], flags=re.M)
    return text[start : start + stop.start()] if stop else text[start:]


def table(text: str) -> dict[str, dict[str, str]]:
    lines = text[text.index("\n|") + 1 :].split("\n\n")[0].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {r[header[0]] + (f" · {r['run']}" if "run" in r else ""): r for r in rows}


def test_a_non_axis_param_keeps_cells_apart_but_search_trials_and_placement_do_not(store):
    frame = runs_frame(store["client"], [store["experiment"]])
    assert set(frame.loc[frame["method"] == "grpo", "variant"]) == {"grpo.entropy_coef=0.0", "grpo.entropy_coef=0.001"}
    # the DPO runs differ in model.device and output_dir (placement) and, for one cell and seed, in the
    # searched train.lr: neither makes a cell of its own
    assert set(frame.loc[frame["method"] == "dpo", "variant"]) == {""}
    rows = table(section(store["text"], "### non_verifiable"))
    assert list(rows) == ["offline DPO", "online DPO", "GRPO [grpo.entropy_coef=0.0]", "GRPO [grpo.entropy_coef=0.001]"]
    assert rows["GRPO [grpo.entropy_coef=0.001]"]["n seeds"] == "2"
    assert rows["online DPO"]["n seeds"] == "3"  # the worse lr trial of seed 1 is not a fourth seed


def test_results_table_sets_quality_beside_the_win_rate_and_hides_an_unidentifiable_lc(store):
    rows = table(section(store["text"], "### non_verifiable"))
    header = list(rows["offline DPO"])
    assert header.index("tiny_chat quality (truth)") == header.index("tiny_chat lc_winrate") + 1
    # offline: 0.50 every seed -> mean 0.500, SE across seeds 0.000
    assert rows["offline DPO"]["tiny_chat quality (truth)"] == "0.500 ± 0.000"
    assert rows["offline DPO"]["tiny_chat lc_winrate"] == "61.0 ± 0.6"
    # GRPO without entropy bonus: its answers outgrew every baseline (overlap 0.00, 0.02 < 0.1)
    assert rows["GRPO [grpo.entropy_coef=0.0]"]["tiny_chat lc_winrate"] == "— (not identifiable)"
    notes = section(store["text"], "## Notes")
    assert re.search(
        r"Run grpo-s1-e0.0-seed0 \(\w{8}\): eval/tiny_chat/lc_winrate not identifiable \(only 0% "
        r"of answers on one side of the baseline's length \(< 10%\): equal length is an extrapolation",
        notes,
    )
    assert "grpo-s1-e0.0-seed1 (" in notes and "missing in grpo" not in notes
    # blanked for every reader: the paper comparison and the paired table have no LC for that cell either
    paper = table(
        section(store["text"], "#### non_verifiable: comparison with the paper")[
            section(store["text"], "#### non_verifiable: comparison with the paper").index("stand in for") :
        ]
    )
    assert paper["GRPO [grpo.entropy_coef=0.0]"]["tiny_chat (ours)"] == "—"
    paired = table(section(store["text"], "#### non_verifiable: paired by seed"))
    assert paired["GRPO [grpo.entropy_coef=0.0]"]["tiny_chat lc_winrate − online DPO"] == "— (no seed scored in both)"
    assert rows["GRPO [grpo.entropy_coef=0.0]"]["tiny_chat quality (truth)"] == "0.270 ± 0.010"


def test_cells_are_compared_paired_by_seed(store):
    rows = table(section(store["text"], "#### non_verifiable: paired by seed"))
    offline = rows["offline DPO"]  # offline - online, per seed: quality -0.10, -0.20, +0.03
    assert (
        offline["tiny_chat quality (truth) − online DPO"] == "-0.090 ± 0.067 (2 of 3 seeds agree in sign; within 2 SE)"
    )
    # win rate: 60-80, 61-82, 62-79 = -20, -21, -17 -> mean -19.33, SE sqrt((0.44+2.78+5.44)/2/3) = 1.20
    assert offline["tiny_chat lc_winrate − online DPO"] == "-19.3 ± 1.2 (3 of 3 seeds agree in sign; beyond 2 SE)"
    observations = section(store["text"], "## Observations")
    assert "online DPO − offline DPO on tiny_chat quality (truth): +0.090 ± 0.067 (2 of 3 seeds agree" in observations


def test_selection_section_gives_quality_at_both_picks_for_every_run(store):
    rows = table(
        section(store["text"], "#### non_verifiable: ground truth at the length-normalized and the max-val-reward pick")
    )
    evaluated = rows["online DPO · dpo-s1-e0.0-seed0"]
    assert evaluated["len-norm step"] == "20" and evaluated["max-val-reward step"] == "40"
    assert evaluated["tiny_chat quality (truth) @len-norm"] == "0.600"
    assert evaluated["tiny_chat quality (truth) @max-val-reward"] == "0.310"
    assert evaluated["tiny_chat lc_winrate @max-val-reward"] == "88.0"
    other = rows["online DPO · dpo-s1-e0.0-seed1"]  # not evaluated at its max-reward pick: a dash and a note
    assert other["max-val-reward step"] == "40" and other["tiny_chat quality (truth) @max-val-reward"] == "—"
    assert "--rule max_val_reward --as-alternative" in section(store["text"], "## Notes")
    assert len(rows) == 10  # every run that counts (the worse search trial does not)


def test_the_two_picks_are_compared_per_cell_paired_by_seed(store):
    rows = table(section(store["text"], "#### non_verifiable: the two picks compared, paired by seed"))
    # GRPO [0.001], len-norm - max-reward pick per seed: quality 0.55-0.30 = 0.25, 0.57-0.37 = 0.20 -> mean
    # 0.225, SE sqrt((0.025^2 + 0.025^2) / 1 / 2) = 0.025; win rate 70-85 = -15, 72-80 = -8 -> -11.5, SE 3.5
    grpo = rows["GRPO [grpo.entropy_coef=0.001]"]
    assert grpo["tiny_chat quality (truth): len-norm − max-val-reward"] == (
        "+0.225 ± 0.025 (2 of 2 seeds agree in sign; beyond 2 SE)"
    )
    assert grpo["tiny_chat lc_winrate: len-norm − max-val-reward"] == (
        "-11.5 ± 3.5 (2 of 2 seeds agree in sign; beyond 2 SE)"
    )
    # online DPO: seed 0 alone is scored at both picks (0.60 - 0.31)
    online = rows["online DPO"]
    assert online["tiny_chat quality (truth): len-norm − max-val-reward"] == "+0.290 (1 seed: no SE across seeds)"
    assert rows["offline DPO"]["tiny_chat quality (truth): len-norm − max-val-reward"] == "— (no seed scored in both)"


def test_leaderboard_shows_quality_beside_the_headline(store):
    from dashboard.views.tables import leaderboard_frame

    frame = runs_frame(store["client"], [store["experiment"]])
    table_ = leaderboard_frame(frame, store["uri"], "http://ui", aggregate=True)
    columns = list(table_.columns)
    assert columns.index("tiny_chat/quality (truth)") == columns.index("tiny_chat/lc_winrate") + 2  # after ± SE
    assert "variant" in columns
