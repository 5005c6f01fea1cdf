"""Pairwise suites: the AlpacaEval LC GLM, Arena-Hard v0.1 Bradley-Terry and v2.0 rules (verdict parser,
bootstrap mean with 90% CI, style control) on hand-computed tables, then alpaca_eval, arena_hard (v0.1
and v2.0 files, v2.0 per-category baselines and dropped questions) and tiny_chat end to end on
published-format fixtures with the reward-model judge and the HTTP judge on a loopback server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evaluators.arena_hard_v2 import bootstrap_mean_score, parse_verdict_v2, question_battles_v2
from evaluators.arena_style_control import (
    answer_style,
    style_control_runs,
    style_controlled_scores,
    styled_battles_from_rows,
)
from evaluators.bradley_terry import arena_hard_score, fit_bradley_terry, game_battles, parse_verdict
from evaluators.data import load_records
from evaluators.lc_winrate import NO_DIFFICULTY_NOTE, fit_length_controlled, length_controlled_winrate, winrate_stats
from evaluators.arena_hard import load_baseline_answers
from evaluators.tiny_chat_suite import seed_baseline_outputs
from evaluators.registry import EvalOptions, get_suite
from evaluators.checkpoint_eval import evaluate_checkpoint
from evaluators.run import score_predictions
from harness.errors import ConfigError, DataError
from helpers_tiny_reward_model import build_char_tokenizer, save_tiny_reward_model
from test_judges import LoopbackJudgeServer, chat_reply

FIXTURES = Path(__file__).parent / "fixtures" / "pairwise"
ALPACA = FIXTURES / "alpaca_eval_gpt4_baseline.json"
V01_QUESTIONS, V01_ANSWERS = FIXTURES / "arena_hard_v0.1_question.jsonl", FIXTURES / "arena_hard_v0.1_gpt-4-0314.jsonl"
V20_QUESTIONS, V20_ANSWERS = (
    FIXTURES / "arena_hard_v2.0_question.jsonl",
    FIXTURES / "arena_hard_v2.0_o3-mini-2025-01-31.jsonl",
)
V20_GEMINI = FIXTURES / "arena_hard_v2.0_gemini-2.0-flash-001.jsonl"  # hand-written, longer than o3-mini's
TINY_CHAT = FIXTURES / "tiny_chat_test.jsonl"


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------ plain win rate


def test_plain_win_rate_counts_ties_as_half_with_standard_error():
    stats = winrate_stats([1, 0, 0.5, 1])
    assert stats["winrate"] == pytest.approx(62.5)
    assert stats["winrate_se"] == pytest.approx(100 * np.std([1, 0, 0.5, 1], ddof=1) / 2)
    assert (stats["n_wins"], stats["n_wins_base"], stats["n_draws"]) == (2, 1, 1)


# ------------------------------------------------------------------------------ LC GLM


def test_lc_equals_fitted_plain_win_rate_when_lengths_are_equal():
    p = [1, 1, 0, 1, 0.5, 1, 0, 1]
    fitted = fit_length_controlled(p, [10] * 8, [10] * 8, C=1e4)  # negligible penalty
    assert fitted["lc_winrate"] == pytest.approx(68.75, abs=0.01)
    assert fitted["glm_weights"]["tanh_std_delta_len"] == 0.0
    # cross-validated C shrinks the model term towards 50, never past the plain win rate
    cv = fit_length_controlled(p, [10] * 8, [10] * 8)
    assert 50 < cv["lc_winrate"] <= 68.75


def test_lc_hand_computed_model_that_wins_only_by_length_scores_50():
    # delta_len = [+10, +10, +10, -10] -> std (ddof=1) = 10 -> features tanh(+-1); the judge's
    # preference follows length alone: 0.8 when longer, 0.2 when shorter. Exact fit: w_len =
    # logit(0.8) / tanh(1), model term 0 -> LC = 50 while the raw win rate is 65.
    result = fit_length_controlled([0.8, 0.8, 0.8, 0.2], [20, 20, 20, 0], [10, 10, 10, 10], C=1e6)
    assert winrate_stats([0.8, 0.8, 0.8, 0.2])["winrate"] == pytest.approx(65.0)
    assert result["lc_winrate"] == pytest.approx(50.0, abs=1e-3)
    assert result["glm_weights"]["tanh_std_delta_len"] == pytest.approx(logit(0.8) / math.tanh(1), rel=1e-4)


def test_lc_hand_computed_two_point_design():
    # features +-tanh(sqrt(3)/2)... two distinct rows, two parameters: exact fit, model term =
    # (logit 0.9 + logit 0.3) / 2, so LC = sigmoid of it (66.26) while the raw win rate is 60.
    result = fit_length_controlled([0.9, 0.3, 0.9, 0.3], [20, 0, 20, 0], [10, 10, 10, 10], C=1e6)
    expected = 100 * sigmoid((logit(0.9) + logit(0.3)) / 2)
    assert result["lc_winrate"] == pytest.approx(expected, abs=1e-3)
    assert expected == pytest.approx(66.2613, abs=1e-3)


def test_lc_below_raw_win_rate_when_the_model_wins_by_being_longer():
    rng = np.random.default_rng(0)
    delta = rng.normal(150, 200, size=60)  # the model is usually longer
    z = 2.0 * np.tanh(delta / delta.std(ddof=1))  # the judge likes length, and nothing else
    prefs = 1 / (1 + np.exp(-z))
    model = ["x" * int(300 + d) for d in delta]
    baseline = ["y" * 300] * 60
    result = length_controlled_winrate(prefs, model, baseline)
    assert result["winrate"] > 60
    assert result["lc_winrate"] < result["winrate"] - 10
    assert result["lc_winrate"] == pytest.approx(50, abs=3)


def test_lc_without_difficulty_says_so_and_bootstraps_its_se():
    rng = np.random.default_rng(1)
    prefs = rng.uniform(0, 1, size=30)
    model, baseline = ["a" * int(n) for n in rng.integers(10, 200, 30)], ["b" * 100] * 30
    result = length_controlled_winrate(prefs, model, baseline)
    assert result["backend"] == "harness"  # the alpaca_eval package is not installed here
    assert NO_DIFFICULTY_NOTE in result["notes"]
    assert result["notes"].count("bootstrap") == 1
    assert 0 < result["lc_winrate_se"] < 20
    again = length_controlled_winrate(prefs, model, baseline)
    assert again["lc_winrate_se"] == result["lc_winrate_se"]  # fixed seed


def test_lc_with_difficulty_uses_predicted_preference_se():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 1, size=40)
    prefs = 1 / (1 + np.exp(-(0.5 - difficulty)))
    model, baseline = ["a" * 100] * 40, ["b" * 100] * 40
    result = length_controlled_winrate(prefs, model, baseline, instruction_difficulty=difficulty)
    predicted = np.array(result["predicted_preferences"])
    assert NO_DIFFICULTY_NOTE not in result["notes"]
    assert result["glm_weights"]["instruction_difficulty"] < 0  # harder instructions, fewer wins
    assert result["lc_winrate_se"] == pytest.approx(100 * predicted.std(ddof=1) / math.sqrt(40))


# ----------------------------------------------------------------------- Bradley-Terry


def test_bt_two_player_three_wins_of_four_is_75():
    result = arena_hard_score([1, 1, 1, 0])
    assert result["score"] == pytest.approx(75.0, abs=1e-9)
    assert result["rating"] == pytest.approx(1000 + 400 * math.log10(3), abs=1e-6)
    assert result["ci_low"] <= result["score"] <= result["ci_high"]


def test_bt_ties_count_half_and_baseline_is_anchored_at_1000():
    assert arena_hard_score([1, 0.5, 0.5, 0])["score"] == pytest.approx(50.0)
    ratings = fit_bradley_terry(
        [("m", "base", 1.0), ("m", "base", 0.0), ("m", "base", 1.0), ("o", "base", 0.5)], anchor="base"
    )
    assert ratings["base"] == 1000.0
    assert ratings["o"] == pytest.approx(1000.0, abs=1e-6)
    assert ratings["m"] == pytest.approx(1000 + 400 * math.log10(2), abs=1e-6)


def test_bt_bootstrap_ci_is_reproducible_and_brackets_the_score():
    scores = np.random.default_rng(0).choice([0, 0.5, 1, 1], size=300).tolist()
    first, second = arena_hard_score(scores), arena_hard_score(scores)
    assert first == second
    assert first["ci_low"] < first["score"] < first["ci_high"]
    assert first["ci_high"] - first["ci_low"] < 15


def test_verdicts_strong_counts_three_times_and_unparsable_is_dropped():
    # game 1: A = baseline, B = model; game 2: A = model, B = baseline
    assert game_battles("B>>A", "A=B") == ([1.0, 1.0, 1.0, 0.5], 0)
    assert game_battles("A>B", "A>>B") == ([0.0, 1.0, 1.0, 1.0], 0)
    assert game_battles(None, "B>A") == ([0.0], 1)
    assert parse_verdict("Thoughts [[A>B]]... final verdict: [[b>>a]]") == "B>>A"
    assert parse_verdict("no verdict here [[C>D]]") is None


# ------------------------------------------------------------------------ Arena-Hard v2.0


def test_v2_verdict_parser_falls_back_to_single_brackets_and_takes_the_last():
    assert parse_verdict_v2("My final verdict: [B>A]") == "B>A"
    assert parse_verdict("My final verdict: [B>A]") is None  # v0.1 reads [[X]] only
    assert parse_verdict_v2("[A>B] at first, then [b>>a]") == "B>>A"
    assert parse_verdict_v2("[[A>B]] is final; ignore [B>>A]") == "A>B"  # a [[X]] match beats any [X]
    assert parse_verdict_v2("[[A]]") is None and parse_verdict_v2("no label") is None


def test_v2_question_is_dropped_when_either_game_has_no_verdict_and_strong_weighs_three():
    # game 1: A = baseline, B = model; game 2: A = model, B = baseline
    assert question_battles_v2("B>>A", "A=B") == [0.5, 1.0, 1.0, 1.0]
    assert question_battles_v2("A>B", "B<<A") == [1.0, 1.0, 1.0, 0.0]
    assert question_battles_v2(None, "A>>B") is None and question_battles_v2("A>B", None) is None


def test_v2_score_is_the_bootstrap_mean_with_a_90_percent_ci():
    # 8 wins, 8 losses: a bootstrap mean is Binomial(16, 1/2) / 16. Its 5% / 95% quantiles are
    # 5/16 and 11/16 (31.25, 68.75); a 95% CI would be 25 / 75; its mean is 50.
    result = bootstrap_mean_score([1.0] * 8 + [0.0] * 8, rounds=20000)
    assert (result["ci_low"], result["ci_high"]) == (31.25, 68.75)
    assert result["score"] == pytest.approx(np.mean(result["bootstrap_scores"]), abs=1e-9)
    assert result["score"] != np.median(result["bootstrap_scores"])
    assert result["score"] == pytest.approx(50.0, abs=0.3)
    assert len(bootstrap_mean_score([1.0, 0.0, 0.5])["bootstrap_scores"]) == 100  # v2.0's 100 resamples


def length_only_rows(wins_long: int, n_long: int, wins_short: int, n_short: int) -> list[dict]:
    """arena_hard v2.0 rows whose verdicts follow length alone: 4 in 5 longer answers win (both
    games), 1 in 5 shorter ones; longer = 200 tokens against the baseline's 100, shorter = 50."""
    rows = []
    for count, wins, tokens in ((n_long, wins_long, 200), (n_short, wins_short, 50)):
        for k in range(count):
            rows.append(
                {
                    "category": "hard_prompt",
                    "output": "x" * tokens,
                    "baseline_output": "y" * 100,
                    "num_tokens": tokens,
                    "baseline_num_tokens": 100,
                    "battle_scores": [1.0, 1.0] if k < wins else [0.0, 0.0],
                }
            )
    return rows


def test_style_control_returns_a_model_that_wins_only_by_length_to_50(tmp_path):
    # "long" answers longer on 20 of 25 questions, "short" on 5 of 25; a longer answer wins 80%
    # of the time whoever wrote it. Raw: 68 / 32. The length feature is +-1/3, standardised over
    # all 100 battles to +-sqrt(0.99); the exact fit is strength 0 for both (score 50) and the
    # length coefficient logit(0.8) / sqrt(0.99).
    paths = {}
    for name, rows in (("long", length_only_rows(16, 20, 1, 5)), ("short", length_only_rows(4, 5, 4, 20))):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = style_control_runs(paths, control=())
    assert raw["models"]["long"]["point"] == pytest.approx(68.0, abs=1e-3)
    assert raw["models"]["short"]["point"] == pytest.approx(32.0, abs=1e-3)
    controlled = style_control_runs(paths)
    assert controlled["features"] == ["length"]  # no markdown anywhere: those features are constant
    assert controlled["coefficients"]["length"] == pytest.approx(logit(0.8) / math.sqrt(0.99), rel=1e-4)
    for model in ("long", "short"):
        assert controlled["models"][model]["point"] == pytest.approx(50.0, abs=1e-3)
        assert controlled["models"][model]["score"] == pytest.approx(50.0, abs=4)  # bootstrap median
        assert controlled["models"][model]["ci_low"] < 50 < controlled["models"][model]["ci_high"]
    # fitted on "long" alone, its average length advantage is the reference point: nothing is removed
    alone = style_controlled_scores(styled_battles_from_rows("long", length_only_rows(16, 20, 1, 5)))
    assert alone["models"]["long"]["point"] > 65


def test_answer_style_counts_markdown_outside_code_blocks():
    text = (
        "# Title\n## Sub\nSome **bold** and __also__ text.\n1. one\n2. two\n- dash\n* star\n"
        "```\n# not a header\n- not a list\n**not bold**\n```\nend"
    )
    style = answer_style(text, 40)
    assert (style.token_len, style.headers, style.list_items, style.bold) == (40, 2, 4, 2)


# ------------------------------------------------------------------- assets for end to end


def save_tiny_policy(directory: Path, seed: int = 0) -> Path:
    """A throwaway tiny Llama causal LM with the char tokenizer and chat template."""
    tokenizer = build_char_tokenizer(with_chat_template=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairwise_assets")
    return {
        "policy": save_tiny_policy(root / "policy", seed=0),
        "trained": save_tiny_policy(root / "trained", seed=1),
        "rm": save_tiny_reward_model(root / "rm", seed=3),
    }


def rm_judge(assets, **extra) -> dict:
    return {"name": "reward_model", "model_dir": str(assets["rm"]), **extra}


def options(judge: dict, **kw) -> EvalOptions:
    settings = {"samples": 1, "max_new_tokens": 12, "batch_size": 8, "show_progress": False, **kw}
    return EvalOptions(judge=judge, **settings)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------ AlpacaEval


def test_alpaca_eval_scores_outputs_with_reward_model_and_stores_script_verbatim(assets, tmp_path):
    suite = get_suite("alpaca_eval")
    records = load_records(suite, ALPACA)
    outputs = [[f"Answer {i}: <script>alert('x')</script> & more"] for i in range(len(records))]
    metrics, rows = suite.score_outputs(suite, records, outputs, options(rm_judge(assets)))
    assert list(metrics)[:5] == ["lc_winrate", "lc_winrate_se", "winrate", "winrate_se", "avg_len"]
    assert 0 <= metrics["lc_winrate"] <= 100 and 0 <= metrics["winrate"] <= 100
    assert metrics["avg_len"] == pytest.approx(np.mean([len(o[0]) for o in outputs]))
    assert metrics["lc_difficulty_term"] == 0.0 and metrics["n_samples"] == 8
    assert [r["id"] for r in rows] == [str(i) for i in range(8)]
    assert all(0 <= r["preference"] <= 1 for r in rows)
    from evaluators.checkpoint_eval import write_jsonl

    stored = read_jsonl(write_jsonl(tmp_path / "generations.jsonl", rows))
    assert stored[0]["output"] == "Answer 0: <script>alert('x')</script> & more"
    assert stored[6]["prompt"] == records[6]["instruction"]  # braces in the instruction survive


def test_alpaca_eval_http_judge_win_rate_matches_the_judge(tmp_path, monkeypatch):
    # The judge prefers "a better answer" to the baseline, and the baseline to "meh": the model
    # wins on 6 of 8 instructions, whichever order the outputs are shown in.
    def judge(body):
        user = body["messages"][1]["content"]
        first = user.split('"model_identifier": "m"')[1].split('"model_identifier": "M"')[0]
        first_wins = "better" in first or ("meh" not in first and "better" not in user)
        return 200, chat_reply("m" if first_wins else "M")

    suite = get_suite("alpaca_eval")
    records = load_records(suite, ALPACA)
    outputs = [["a better answer"] if i < 6 else ["meh"] for i in range(8)]
    with LoopbackJudgeServer(judge) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "model": "gpt-4-turbo",
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
            "logprobs": False,
        }
        metrics, rows = suite.score_outputs(suite, records, outputs, options(config))
    assert metrics["winrate"] == pytest.approx(75.0)
    assert [r["preference"] for r in rows] == [1.0] * 6 + [0.0] * 2
    assert len(server.requests) == 8


def test_alpaca_eval_uses_instruction_difficulty_file_when_given(assets, tmp_path):
    difficulty = tmp_path / "instruction_difficulty.csv"
    difficulty.write_text(",instruction_difficulty\n" + "".join(f"{i},{(i - 4) / 2}\n" for i in range(8)))
    suite = get_suite("alpaca_eval")
    records = load_records(suite, ALPACA)
    metrics, _ = suite.score_outputs(
        suite,
        records,
        [[f"out {i}" * i] for i in range(8)],
        options(rm_judge(assets, instruction_difficulty=str(difficulty))),
    )
    assert metrics["lc_difficulty_term"] == 1.0
    difficulty.write_text(",instruction_difficulty\n0,0.1\n1,oops\n")
    with pytest.raises(DataError, match=r"instruction_difficulty\.csv, line 3"):
        suite.score_outputs(
            suite, records, [["x"]] * 8, options(rm_judge(assets, instruction_difficulty=str(difficulty)))
        )


def test_alpaca_eval_offline_without_data_says_how_to_supply_it():
    with pytest.raises(
        DataError,
        match=r"HF_HUB_OFFLINE.*JSON list of \{\"instruction\", \"output\", \"generator\"\}.*--data alpaca_eval=PATH",
    ):
        load_records(get_suite("alpaca_eval"), None)


def test_alpaca_eval_record_without_output_names_file_item_and_key(tmp_path):
    bad = json.loads(ALPACA.read_text())
    del bad[3]["output"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"bad\.json, item 3: record has no key 'output'"):
        load_records(get_suite("alpaca_eval"), path)


def test_score_predictions_on_alpaca_eval_reports_the_lc_win_rate(assets, tmp_path):
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("".join(json.dumps({"output": f"reply {i}" * (i + 1)}) + "\n" for i in range(8)))
    opts = options(rm_judge(assets))
    result = score_predictions("alpaca_eval", ALPACA, predictions, options=opts)
    suite = get_suite("alpaca_eval")
    direct, _ = suite.score_outputs(
        suite, load_records(suite, ALPACA), [[f"reply {i}" * (i + 1)] for i in range(8)], opts
    )
    assert (result["suite"], result["n_problems"], result["n_samples"]) == ("alpaca_eval", 8, 8)
    assert result["score"] == pytest.approx(direct["lc_winrate"])  # the headline metric
    assert result["stderr"] == pytest.approx(direct["lc_winrate_se"])
    assert len(read_jsonl(Path(result["results_path"]))) == 8


# ------------------------------------------------------------------------------ Arena-Hard


def answers_in(body) -> tuple[str, str, str]:
    user = body["messages"][1]["content"]
    a = user.split("<|The Start of Assistant A's Answer|>\n")[1].split("\n<|The End of Assistant A's Answer|>")[0]
    b = user.split("<|The Start of Assistant B's Answer|>\n")[1].split("\n<|The End of Assistant B's Answer|>")[0]
    return user.split("\n")[1], a, b


def longer_wins_judge(body):
    # the longer answer wins; the primes question gets single-bracket verdicts (read by v2.0 only);
    # "garbled" as assistant A gets no verdict at all
    question, a, b = answers_in(body)
    if "garbled" in a:
        return 200, chat_reply("I refuse to give a label.")
    left, right = ("[", "]") if "primes" in question else ("[[", "]]")
    return 200, chat_reply(f"Reasoning... My final verdict is {left}{'A>B' if len(a) > len(b) else 'B>A'}{right}.")


def shorter_first_outputs(records, baseline) -> list[list[str]]:
    """The model's answer is shorter than the baseline's on the first question, longer on the others."""
    return [
        [baseline[str(r["uid"])][:5]] if i == 0 else [baseline[str(r["uid"])] + " More detail."]
        for i, r in enumerate(records)
    ]


def test_arena_hard_v01_http_judge_bradley_terry_score(tmp_path):
    suite = get_suite("arena_hard")
    records = load_records(suite, V01_QUESTIONS)
    outputs = shorter_first_outputs(records, load_baseline_answers(V01_ANSWERS))
    with LoopbackJudgeServer(longer_wins_judge) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "model": "gpt-4-1106-preview",
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
            "baseline_answers": str(V01_ANSWERS),
        }
        metrics, rows = suite.score_outputs(suite, records, outputs, options(config))
    n = len(records)
    assert len(server.requests) == 2 * n  # both orders
    assert all(r["max_tokens"] == 4096 for r in server.requests)  # arena-hard-v0.1.yaml
    assert metrics["score"] == pytest.approx(100 * (n - 1) / n)  # BT on a two-player table = mean score
    assert metrics["ci_low"] <= metrics["score"] <= metrics["ci_high"]
    assert list(metrics)[:4] == ["score", "score_se", "ci_low", "ci_high"]
    assert metrics["arena_hard_version"] == "v0.1"
    assert rows[0]["verdicts"] == ["A>B", "B>A"] and rows[1]["verdicts"] == ["B>A", "A>B"]
    assert [r["id"] for r in rows] == [str(r["uid"]) for r in records]


def test_arena_hard_v20_http_judge_scores_each_category_by_v20_rules(tmp_path):
    # hard_prompt: the coding answer loses both games, the primes answer wins both through
    # single-bracket verdicts -> battles [0, 0, 1, 1]: the bootstrap mean of Binomial(4, 1/2) / 4
    # is 50, its 5% / 95% quantiles 0 / 100 (P(0 wins) = 1/16 > 5%). creative_writing: [1, 1] -> 100.
    suite = get_suite("arena_hard")
    records = load_records(suite, V20_QUESTIONS)
    outputs = shorter_first_outputs(records, load_baseline_answers(V20_ANSWERS))
    with LoopbackJudgeServer(longer_wins_judge) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
            "baseline_answers": str(V20_ANSWERS),
            "bootstrap_rounds": 2000,
        }
        metrics, rows = suite.score_outputs(suite, records, outputs, options(config))
    assert len(server.requests) == 6
    assert all(r["model"] == "gpt-4.1" and r["max_tokens"] == 16000 for r in server.requests)  # arena-hard-v2.0.yaml
    assert [r["verdicts"] for r in rows] == [["A>B", "B>A"], ["B>A", "A>B"], ["B>A", "A>B"]]
    assert [r["battle_scores"] for r in rows] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert list(metrics)[:4] == ["score", "score_se", "ci_low", "ci_high"]
    assert (metrics["arena_hard_version"], metrics["headline_category"]) == ("v2.0", "hard_prompt")
    assert metrics["score"] == metrics["hard_prompt_score"] == pytest.approx(50.0, abs=2)
    assert (metrics["ci_low"], metrics["ci_high"]) == (0.0, 100.0)
    assert metrics["hard_prompt_n_battles"] == 4.0 and metrics["creative_writing_n_battles"] == 2.0
    assert (metrics["creative_writing_score"], metrics["creative_writing_ci_low"]) == (100.0, 100.0)


@pytest.mark.parametrize("order", ["o3-mini first", "gemini first"])
def test_arena_hard_v20_judges_each_category_against_its_own_baseline(order, tmp_path):
    # the model's answers are o3-mini's plus a sentence: longer than o3-mini's, shorter than
    # gemini-2.0-flash-001's. The judge prefers the longer answer, so the model wins hard_prompt
    # (against o3-mini) and loses creative_writing (against gemini), whichever file comes first.
    suite = get_suite("arena_hard")
    records = load_records(suite, V20_QUESTIONS)
    o3 = load_baseline_answers(V20_ANSWERS)
    outputs = [[o3[str(r["uid"])] + " More detail."] for r in records]
    files = [str(V20_ANSWERS), str(V20_GEMINI)]
    with LoopbackJudgeServer(longer_wins_judge) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
            "baseline_answers": files if order == "o3-mini first" else files[::-1],
        }
        metrics, rows = suite.score_outputs(suite, records, outputs, options(config))
    assert [r["baseline_model"] for r in rows] == ["o3-mini-2025-01-31"] * 2 + ["gemini-2.0-flash-001"]
    assert rows[2]["baseline_output"] == load_baseline_answers(V20_GEMINI)[str(records[2]["uid"])]
    assert metrics["hard_prompt_score"] == 100.0 and metrics["creative_writing_score"] == 0.0
    assert [r["baseline_num_tokens"] for r in rows] == [13, 19, 54]  # metadata.token_len


def test_arena_hard_v20_question_with_an_unparsable_game_is_dropped_whole(tmp_path):
    # question 0: game 1 (A = baseline, B = "garbled") has a verdict, game 2 (A = "garbled") none:
    # v2.0 drops the question (v0.1 would keep game 1's loss: 2 of 3 battles won)
    suite = get_suite("arena_hard")
    records = load_records(suite, V20_QUESTIONS)
    baseline = load_baseline_answers(V20_ANSWERS)
    outputs = [["garbled"], [baseline[str(records[1]["uid"])] + "!!"], [baseline[str(records[2]["uid"])] + "!!"]]
    with LoopbackJudgeServer(longer_wins_judge) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "model": "j",
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
            "baseline_answers": str(V20_ANSWERS),
        }
        metrics, rows = suite.score_outputs(suite, records, outputs, options(config))
    assert (metrics["n_dropped_games"], metrics["n_dropped_questions"]) == (1.0, 1.0)
    assert metrics["hard_prompt_n_battles"] == 2.0
    assert metrics["score"] == 100.0 and (metrics["ci_low"], metrics["ci_high"]) == (100.0, 100.0)
    assert rows[0]["verdicts"] == ["A>B", None] and rows[0]["battle_scores"] is None


def test_arena_hard_reward_model_judge_end_to_end(assets):
    suite = get_suite("arena_hard")
    records = load_records(suite, V01_QUESTIONS)
    outputs = [["a short reply"], ["<script>x</script>"], ["ok"], ["prism mount"]]
    metrics, rows = suite.score_outputs(
        suite, records, outputs, options(rm_judge(assets, baseline_answers=str(V01_ANSWERS)))
    )
    assert 0 <= metrics["ci_low"] <= metrics["score"] <= metrics["ci_high"] <= 100
    assert metrics["n_dropped_games"] == 0 and metrics["n_battles"] >= 8
    assert rows[1]["output"] == "<script>x</script>"


def test_arena_hard_without_baseline_answers_says_where_to_get_them():
    suite = get_suite("arena_hard")
    with pytest.raises(DataError, match=r"eval\.judge\.baseline_answers.*gpt-4-0314\.jsonl"):
        suite.score_outputs(suite, load_records(suite, V20_QUESTIONS), [["a"]] * 3, options({}))


def test_arena_hard_missing_baseline_answer_is_named_and_files_can_be_merged(assets, tmp_path):
    lines = V20_ANSWERS.read_text().splitlines()
    first, rest = tmp_path / "o3-mini.jsonl", tmp_path / "gemini-2.0-flash-001.jsonl"
    first.write_text(lines[0] + "\n")
    rest.write_text("\n".join(lines[1:]) + "\n")
    suite = get_suite("arena_hard")
    records = load_records(suite, V20_QUESTIONS)
    with pytest.raises(DataError, match=r"no baseline answer for question '0122ab60646b4961' \(2 missing\)"):
        suite.score_outputs(suite, records, [["a"]] * 3, options({"baseline_answers": str(first)}))
    metrics, rows = suite.score_outputs(
        suite, records, [["a"]] * 3, options(rm_judge(assets, baseline_answers=[str(first), str(rest)]))
    )
    assert metrics["n_samples"] == 3 and [r["baseline_output"] for r in rows] == list(
        load_baseline_answers(V20_ANSWERS).values()
    )


def test_malformed_baseline_answer_names_file_line_and_key(tmp_path):
    lines = V01_ANSWERS.read_text().splitlines()
    broken = json.loads(lines[2])
    broken["choices"] = [{"turns": []}]
    path = tmp_path / "gpt-4-0314.jsonl"
    path.write_text("\n".join(lines[:2] + [json.dumps(broken)]) + "\n")
    with pytest.raises(DataError, match=r"gpt-4-0314\.jsonl, line 3: key 'choices'"):
        load_baseline_answers(path)


def test_malformed_question_without_prompt_or_turns_is_a_data_error(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text(json.dumps({"uid": "q1", "category": "hard_prompt", "text": "hi"}) + "\n")
    suite = get_suite("arena_hard")
    records = load_records(suite, path)
    with pytest.raises(DataError, match=r"record 0 \(id 'q1'\): has neither 'prompt' \(v2\.0 format\) nor 'turns'"):
        suite.score_outputs(suite, records, [["a"]], options({"baseline_answers": str(V20_ANSWERS)}))


def test_unknown_judge_in_suite_options_is_a_config_error():
    suite = get_suite("alpaca_eval")
    with pytest.raises(ConfigError, match=r"eval\.judge\.name is 'claude'"):
        suite.score_outputs(suite, load_records(suite, ALPACA), [["a"]] * 8, options({"name": "claude"}))


# ----------------------------------------------------------- generation + tiny_chat end to end


@pytest.mark.slow
def test_all_pairwise_suites_end_to_end_through_evaluate_checkpoint(assets, tmp_path):
    judge = rm_judge(
        assets,
        baseline_answers=str(V20_ANSWERS),
        baseline_policy=str(assets["policy"]),
        baseline_cache_dir=str(tmp_path / "baselines"),
        bootstrap_rounds=20,
    )
    results = evaluate_checkpoint(
        assets["trained"],
        ["alpaca_eval", "arena_hard", "tiny_chat"],
        samples=1,
        max_new_tokens=8,
        batch_size=8,
        data_paths={"alpaca_eval": str(ALPACA), "arena_hard": str(V20_QUESTIONS), "tiny_chat": str(TINY_CHAT)},
        judge=judge,
        out_dir=tmp_path / "eval",
        show_progress=False,
    )
    for suite in ("alpaca_eval", "tiny_chat"):
        assert {"lc_winrate", "lc_winrate_se", "winrate", "winrate_se", "avg_len"} <= set(results[suite])
        assert 0 <= results[suite]["lc_winrate"] <= 100
    assert {"score", "ci_low", "ci_high"} <= set(results["arena_hard"])
    rows = read_jsonl(tmp_path / "eval" / "tiny_chat" / "generations.jsonl")
    assert len(rows) == 6 and all(isinstance(r["num_tokens"], int) and r["num_tokens"] <= 8 for r in rows)
    assert len(list((tmp_path / "baselines").glob("*.json"))) == 1  # the seed's answers, cached


def test_seed_baseline_is_cached_by_policy_and_sampling(assets, tmp_path):
    opts = options({"baseline_cache_dir": str(tmp_path)}, max_new_tokens=6, seed=3)
    prompts = ["Say hello politely.", "Name a colour."]
    first = seed_baseline_outputs(prompts, opts, 2, policy_dir=assets["policy"])
    (cached,) = tmp_path.glob("*.json")
    stamp = cached.stat().st_mtime_ns
    assert seed_baseline_outputs(prompts, opts, 2, policy_dir=assets["policy"]) == first
    assert cached.stat().st_mtime_ns == stamp  # served from the cache, not regenerated
    other = options({"baseline_cache_dir": str(tmp_path)}, max_new_tokens=6, seed=4)
    seed_baseline_outputs(prompts, other, 2, policy_dir=assets["policy"])
    assert len(list(tmp_path.glob("*.json"))) == 2  # other sampling settings, other entry
    assert [len(group) for group in first] == [2, 2]


def test_tiny_chat_model_equal_to_seed_wins_half(assets, tmp_path):
    # the seed judged against its own answers (same sampling seed): identical texts, p = 0.5 each
    suite = get_suite("tiny_chat")
    records = load_records(suite, TINY_CHAT)
    opts = options(rm_judge(assets, baseline_policy=str(assets["policy"]), baseline_cache_dir=str(tmp_path)))
    seed_answers = seed_baseline_outputs([r["prompt"] for r in records], opts, 1, policy_dir=assets["policy"])
    metrics, rows = suite.score_outputs(suite, records, seed_answers, opts)
    assert metrics["winrate"] == pytest.approx(50.0)
    assert metrics["lc_winrate"] == pytest.approx(50.0, abs=1e-6)
    assert all(r["output"] == r["baseline_output"] for r in rows)


@pytest.mark.slow
def test_tiny_chat_defaults_judge_seed_against_itself_at_50(tiny_assets, tmp_path):
    # no data, no judge settings: the embedded chat test split, the tiny reward model and the
    # seed policy as baseline; the seed evaluated against itself samples identical answers
    results = evaluate_checkpoint(
        tiny_assets.policy_dir,
        ["tiny_chat"],
        samples=1,
        max_new_tokens=16,
        batch_size=16,
        judge={"baseline_cache_dir": str(tmp_path / "baselines")},
        out_dir=tmp_path / "eval",
        show_progress=False,
    )
    metrics = results["tiny_chat"]
    assert metrics["winrate"] == pytest.approx(50.0) and metrics["lc_winrate"] == pytest.approx(50.0, abs=1e-6)
    rows = read_jsonl(tmp_path / "eval" / "tiny_chat" / "generations.jsonl")
    assert len(rows) == metrics["n_samples"] and all(r["output"] == r["baseline_output"] for r in rows)
