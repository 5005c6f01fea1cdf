"""Judges: the registry, the reward-model judge, and the OpenAI-compatible judge (the openai SDK)
against a real HTTP server on 127.0.0.1 (retries, timeouts, on-disk cache, error messages,
AlpacaEval logprobs/text verdicts, Arena-Hard verdicts in both orders, each benchmark's defaults)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evaluators.judge_prompts import (
    ALPACA_EVAL_SYSTEM_PROMPT,
    ARENA_HARD_CREATIVE_WRITING_SYSTEM_PROMPT,
    ARENA_HARD_SYSTEM_PROMPT,
)
from evaluators.judges import Comparison, RewardModelJudge, check_judge_config, make_judge, probability_to_label
from evaluators.openai_judge import OpenAICompatibleJudge, alpaca_preference
from harness.errors import AssetMissingError, ConfigError
from helpers_tiny_reward_model import save_tiny_reward_model


def chat_reply(content: str, top_logprobs: list[tuple[str, float]] | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if top_logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": content,
                    "logprob": 0.0,
                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top_logprobs],
                }
            ]
        }
    return {"id": "cmpl-1", "object": "chat.completion", "model": "judge", "choices": [choice]}


class LoopbackJudgeServer:
    """A real chat-completions server on 127.0.0.1: `respond(request_json) -> (status, body)`.

    `statuses` (optional) is a queue of HTTP statuses to answer first (e.g. [500] then normal),
    each with a `retry-after-ms: 10` header as OpenAI's API sends (the SDK honours it).
    `delay_s` delays every answer. Every request is recorded in `requests` (parsed JSON) with its
    headers in `headers` (names lower-cased).
    """

    def __init__(self, respond):
        self.respond = respond
        self.statuses: list[int] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    forced = server.statuses.pop(0) if server.statuses else None
                if self.path != "/v1/chat/completions":
                    status, payload = 404, {"error": f"no route {self.path}"}
                elif forced is not None:
                    status, payload = forced, {"error": {"message": "try again"}}
                else:
                    status, payload = server.respond(body)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                time.sleep(server.delay_s)
                self.send_response(status)
                if forced is not None:
                    self.send_header("retry-after-ms", "10")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def http_judge(server: LoopbackJudgeServer, tmp_path, **overrides) -> OpenAICompatibleJudge:
    config = {
        "name": "openai_compatible",
        "base_url": server.base_url,
        "model": "judge-model",
        "api_key_env": None,
        "cache_dir": str(tmp_path / "judge_cache"),
        "max_attempts": 3,
        "timeout_s": 10,
        "concurrency": 2,
    }
    config.update(overrides)
    return make_judge(config)


ITEMS = [
    Comparison("Name a fruit.", "An apple, crisp and sweet.", "Pear."),
    Comparison("Say hi.", "Hi", "Hello there, friend!"),
]


# ------------------------------------------------------------------------------ registry


def test_unknown_judge_name_is_a_config_error_listing_known_names():
    with pytest.raises(ConfigError, match=r"eval\.judge\.name is 'gpt5'.*openai_compatible.*reward_model"):
        make_judge({"name": "gpt5"})


def test_unknown_judge_key_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['base_ulr'\]"):
        make_judge({"name": "openai_compatible", "base_ulr": "http://x", "model": "m"})


def test_check_judge_config_validates_without_loading_anything(tmp_path):
    config = {
        "name": "reward_model",
        "model_dir": str(tmp_path / "absent"),
        "baseline_answers": "a.jsonl",
        "samples": 2,
    }
    assert check_judge_config(config) == {"model_dir": str(tmp_path / "absent")}  # suite keys set aside
    with pytest.raises(AssetMissingError, match="absent"):
        make_judge(config)  # building it does load the model


def test_openai_judge_needs_base_url_and_model():
    with pytest.raises(ConfigError, match=r"eval\.judge\.base_url is None"):
        make_judge({"name": "openai_compatible", "model": "m", "api_key_env": None})


def test_unset_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_TEST_JUDGE_KEY"):
        make_judge(
            {
                "name": "openai_compatible",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
                "api_key_env": "HARNESS_TEST_JUDGE_KEY",
            }
        )


@pytest.mark.parametrize(
    ("p", "label"), [(0.95, "A>>B"), (0.7, "A>B"), (0.5, "A=B"), (0.4, "A=B"), (0.3, "B>A"), (0.05, "B>>A")]
)
def test_probability_to_verdict_thresholds(p, label):
    assert probability_to_label(p) == label


# ------------------------------------------------------------------------ reward model judge


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp("rm"), seed=3)


def test_reward_model_judge_preference_is_sigmoid_of_score_difference(reward_model_dir):
    judge = make_judge({"name": "reward_model", "model_dir": str(reward_model_dir)})
    assert isinstance(judge, RewardModelJudge)
    prefs = judge.preferences(ITEMS)
    scorer = judge.scorer
    for item, pref in zip(ITEMS, prefs):
        sm, sb = scorer.score([item.prompt, item.prompt], [item.model_output, item.baseline_output])
        assert pref.p_model == pytest.approx(1 / (1 + math.exp(-(sm - sb))), rel=1e-5)


def test_reward_model_verdicts_mirror_between_the_two_orders(reward_model_dir):
    judge = RewardModelJudge(reward_model_dir, strong_threshold=0.9, weak_threshold=0.6)
    prefs = judge.preferences(ITEMS)
    mirror = {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B", "B>A": "A>B", "B>>A": "A>>B"}
    for pref, (game1, game2) in zip(prefs, judge.verdicts(ITEMS)):
        assert game2.label == probability_to_label(pref.p_model)  # game 2: A = model
        assert game1.label == mirror[game2.label]  # game 1: A = baseline


# --------------------------------------------------------------------------- HTTP judge


def test_http_judge_retries_after_500_then_succeeds(tmp_path):
    with LoopbackJudgeServer(lambda body: (200, chat_reply("M"))) as server:
        server.statuses = [500, 503]
        judge = http_judge(server, tmp_path, logprobs=False, randomize_order=False)
        prefs = judge.preferences(ITEMS[:1])
    assert len(server.requests) == 3  # two failures, then the answer
    assert prefs[0].p_model == 1.0  # "M" = output_2 = the model (not swapped)


def test_http_judge_gives_up_after_max_attempts_with_a_clear_error(tmp_path):
    with LoopbackJudgeServer(lambda body: (200, chat_reply("M"))) as server:
        server.statuses = [429] * 10
        judge = http_judge(server, tmp_path, max_attempts=3, logprobs=False)
        with pytest.raises(ConfigError, match=r"failed 3 times \(last: HTTP 429"):
            judge.preferences(ITEMS[:1])
    assert len(server.requests) == 3


def test_http_judge_does_not_retry_a_401(tmp_path):
    with LoopbackJudgeServer(lambda body: (401, {"error": "bad key"})) as server:
        judge = http_judge(server, tmp_path)
        with pytest.raises(ConfigError, match=r"HTTP 401.*api_key_env"):
            judge.preferences(ITEMS[:1])
    assert len(server.requests) == 1


def test_http_judge_cache_makes_a_rerun_cost_zero_requests(tmp_path):
    with LoopbackJudgeServer(
        lambda body: (200, chat_reply("m", [("m", math.log(0.3)), ("M", math.log(0.7))]))
    ) as server:
        first = http_judge(server, tmp_path).preferences(ITEMS)
        sent = len(server.requests)
        second = http_judge(server, tmp_path).preferences(ITEMS)  # a fresh judge, same cache dir
    assert sent == 2
    assert len(server.requests) == 2  # the re-run was served from disk
    assert [p.p_model for p in first] == [p.p_model for p in second]
    assert list((tmp_path / "judge_cache").rglob("*.tmp")) == []  # atomic writes leave no temp files


def test_http_judge_bad_response_shape_is_a_clear_error_and_is_not_cached(tmp_path):
    with LoopbackJudgeServer(lambda body: (200, {"result": "M"})) as server:
        judge = http_judge(server, tmp_path)
        with pytest.raises(ConfigError, match=r"no choices\[0\]\.message\.content.*base_url"):
            judge.preferences(ITEMS[:1])
    assert not list((tmp_path / "judge_cache").rglob("*.json"))


def test_http_judge_non_json_reply_is_a_clear_error(tmp_path):
    with LoopbackJudgeServer(lambda body: (200, "<html>gateway</html>")) as server:
        with pytest.raises(ConfigError, match="non-JSON"):
            http_judge(server, tmp_path).preferences(ITEMS[:1])


def test_http_judge_sends_official_alpaca_prompt_key_and_logprob_request(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_JUDGE_KEY", "sk-test")
    with LoopbackJudgeServer(
        lambda body: (200, chat_reply("M", [("M", math.log(0.8)), ("m", math.log(0.2))]))
    ) as server:
        judge = http_judge(server, tmp_path, api_key_env="HARNESS_TEST_JUDGE_KEY", randomize_order=False)
        prefs = judge.preferences(ITEMS[:1])
    request = server.requests[0]
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    assert request["model"] == "judge-model" and request["max_tokens"] == 1
    assert request["logprobs"] is True and request["top_logprobs"] == 5
    assert request["messages"][0] == {"role": "system", "content": ALPACA_EVAL_SYSTEM_PROMPT}
    user = request["messages"][1]["content"]
    # output_1 ("m") = baseline, output_2 ("M") = model when not swapped
    assert user.index('"""Pear."""') < user.index('"""An apple, crisp and sweet."""')
    assert prefs[0].p_model == pytest.approx(0.8)


def test_randomized_order_is_undone_when_reading_the_preference(tmp_path):
    # the server always prefers whichever output says "apple": the model's answer in ITEMS[0]
    def prefer_apple(body):
        user = body["messages"][1]["content"]
        first = user.split('"model_identifier": "m"')[1].split('"model_identifier": "M"')[0]
        return 200, chat_reply("m" if "apple" in first else "M")

    many = [Comparison(f"Name fruit number {k}.", "An apple.", "Pear.") for k in range(12)]
    with LoopbackJudgeServer(prefer_apple) as server:
        prefs = http_judge(server, tmp_path, logprobs=False).preferences(many)
    firsts = [r["messages"][1]["content"].split('"model_identifier": "M"')[0] for r in server.requests]
    assert 0 < sum("apple" in f for f in firsts) < len(many)  # both orders were used
    assert [p.p_model for p in prefs] == [1.0] * len(many)


def test_alpaca_text_verdict_without_logprobs():
    assert alpaca_preference(chat_reply("M")) == (1.0, "M")
    assert alpaca_preference(chat_reply("### Which is best, m or M?\nm")) == (0.0, "### Which is best, m or M?\nm")
    assert alpaca_preference(chat_reply("I cannot decide."))[0] is None


def test_arena_verdicts_use_official_prompts_in_both_orders(tmp_path):
    # this judge always prefers the longer answer, strongly
    def prefer_longer(body):
        user = body["messages"][1]["content"]
        a = user.split("<|The Start of Assistant A's Answer|>\n")[1].split("\n<|The End of Assistant A's Answer|>")[0]
        b = user.split("<|The Start of Assistant B's Answer|>\n")[1].split("\n<|The End of Assistant B's Answer|>")[0]
        return 200, chat_reply(f"Both are fine. My final verdict is: [[{'A>>B' if len(a) > len(b) else 'B>>A'}]]")

    items = [
        Comparison("Q1", "a long model answer", "short", "hard_prompt"),
        Comparison("Q2", "tiny", "a long baseline answer", "creative_writing"),
    ]
    with LoopbackJudgeServer(prefer_longer) as server:
        games = http_judge(server, tmp_path, max_tokens=256).verdicts(items)
    assert [(g1.label, g2.label) for g1, g2 in games] == [("B>>A", "A>>B"), ("A>>B", "B>>A")]
    systems = {r["messages"][1]["content"].split("\n")[1]: r["messages"][0]["content"] for r in server.requests}
    assert systems["Q1"] == ARENA_HARD_SYSTEM_PROMPT
    assert systems["Q2"] == ARENA_HARD_CREATIVE_WRITING_SYSTEM_PROMPT
    assert all(r["max_tokens"] == 256 and "logprobs" not in r for r in server.requests)


def test_http_judge_request_that_times_out_is_retried_then_named(tmp_path):
    with LoopbackJudgeServer(lambda body: (200, chat_reply("M"))) as server:
        server.delay_s = 1.0
        judge = http_judge(server, tmp_path, timeout_s=0.2, max_attempts=2, logprobs=False)
        with pytest.raises(ConfigError, match=r"failed 2 times \(last: \w*Timeout.*timeout_s"):
            judge.preferences(ITEMS[:1])
        time.sleep(1.2)  # let the server finish the abandoned replies before it shuts down
    assert len(server.requests) == 2


def test_http_judge_defaults_are_each_benchmarks_own_and_go_through_the_sdk(tmp_path):
    # alpaca_eval weighted_alpaca_eval_gpt4_turbo/configs.yaml: gpt-4-1106-preview, max_tokens 1,
    # temperature 1, logprobs, top_logprobs 5; arena-hard-auto config/arena-hard-v0.1.yaml:
    # gpt-4-1106-preview, temperature 0, max_tokens 4096; config/arena-hard-v2.0.yaml: gpt-4.1, 0, 16000
    def reply(body):
        if "logprobs" in body:
            return 200, chat_reply("M", [("M", math.log(0.6)), ("m", math.log(0.4))])
        return 200, chat_reply("[[A=B]]")

    with LoopbackJudgeServer(reply) as server:
        config = {
            "name": "openai_compatible",
            "base_url": server.base_url,
            "api_key_env": None,
            "cache_dir": str(tmp_path / "cache"),
        }
        judge = make_judge(config)
        judge.preferences(ITEMS[:1])
        judge.verdicts(ITEMS[:1], version="v0.1")
        judge.verdicts(ITEMS[:1], version="v2.0")
        make_judge({**config, "model": "my-judge", "temperature": 0.5}).verdicts(ITEMS[:1], version="v2.0")
    settings = [
        (r["model"], r["temperature"], r["max_tokens"], r.get("logprobs"), r.get("top_logprobs"))
        for r in server.requests
    ]
    assert (
        settings
        == [("gpt-4-1106-preview", 1.0, 1, True, 5)]
        + [("gpt-4-1106-preview", 0.0, 4096, None, None)] * 2
        + [("gpt-4.1", 0.0, 16000, None, None)] * 2
        + [("my-judge", 0.5, 16000, None, None)] * 2
    )
    assert judge.alpaca_annotator == "weighted_alpaca_eval_gpt4_turbo"
    assert all(h["user-agent"].startswith("OpenAI/Python") for h in server.headers)  # the openai SDK sent them
