"""Math-Verify reward: a pure grading function and a pool of killable worker processes.

`math_verify_reward(gold, prediction)` is the paper's verifiable reward: the gold answer is
wrapped in `$...$`, the prediction is parsed boxed-first, and `math_verify.verify` decides 1/0.

Some answers make sympy run (practically) forever, e.g. `\\boxed{9^{9^{9^{9}}}}`. Math-Verify's
own timeout uses SIGALRM, which only works on the main thread, so the pure function switches it
off and `MathVerifyPool` provides the real timeout instead: answers are graded in worker
processes (started with "spawn": the parent has torch threads, forking it is unsafe) and a
worker that is stuck on one answer for `timeout_s` is SIGKILLed and replaced; that answer gets
0.0 and `pool.timeouts` goes up by one. The other answers of the batch keep their scores.

Work is sent in small chunks; a worker reports each answer as it finishes, so the deadline is
per answer (it restarts at every reported result) and, after a kill, the unfinished rest of the
chunk is simply sent again. Scores are cached per (gold, prediction): rollouts repeat a lot.

Test hook: `grader="module:function"` names the grading function the workers import (default:
this module's `math_verify_reward`), so a test can hand the pool a grader that hangs.
"""

from __future__ import annotations

import collections
import importlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from harness.errors import ConfigError

DEFAULT_GRADER = "harness.rewards.math_verify_pool:math_verify_reward"

_CHUNK_SIZE = 8  # answers per message: amortizes pipe round trips, bounds re-sent work
_STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter importing sympy on a busy 2-core box
_WARMUP = ("1", "$\\boxed{1}$")  # first grade initializes math_verify's lazy parsers


# ------------------------------------------------------------------------- pure function


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Gold answers repeat across all samples of a prompt: parse each once per process."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = gold.strip()
    if not text.startswith("$"):
        text = f"${text}$"
    return parse(
        text,
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def _parse_prediction(prediction: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # boxed_match_priority=0: a boxed answer wins over any other number in the text.
    return parse(
        prediction,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def math_verify_reward(gold: str, prediction: str) -> float:
    """1.0 if `prediction`'s final answer equals `gold` under Math-Verify, else 0.0.

    Runs in-process with no timeout (see the module docstring); any exception gives 0.0.
    """
    from math_verify import verify

    try:
        gold_parsed = _parse_gold(gold)
        if not gold_parsed:
            return 0.0
        pred_parsed = _parse_prediction(prediction)
        if not pred_parsed:
            return 0.0
        return 1.0 if verify(gold_parsed, pred_parsed, timeout_seconds=None) else 0.0
    except Exception:  # a grading failure is a wrong answer, never a crashed step
        return 0.0


# ------------------------------------------------------------------------------ worker


def _resolve_grader(path: str) -> Callable[[str, str], float]:
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"grader {path!r} is not of the form 'module:function'")
    return getattr(importlib.import_module(module_name), function_name)


def _die_with_parent() -> None:
    """SIGKILL this worker when the parent dies, even mid-computation (harness.procs)."""
    import signal

    from harness.procs import die_with_parent

    try:
        die_with_parent(signal.SIGKILL)
    except Exception:
        pass  # the daemon flag, the atexit finalizer and EOF on the pipe remain


def _silence_math_verify_timeout_warning() -> None:
    # The warning says "you must provide the timeout yourself": the pool does exactly that.
    try:
        import math_verify.grader
        import math_verify.parser

        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    except Exception:
        pass


def _worker_main(conn: multiprocessing.connection.Connection, grader_path: str) -> None:
    """Worker loop: receive chunks of (item_id, gold, prediction), send (item_id, score) each."""
    _die_with_parent()
    _silence_math_verify_timeout_warning()
    try:
        grader = _resolve_grader(grader_path)
        grader(*_WARMUP)
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if chunk is None:
            return
        for item_id, gold, prediction in chunk:
            try:
                score = float(grader(gold, prediction))
            except Exception:
                score = 0.0
            conn.send((item_id, score))


# -------------------------------------------------------------------------------- pool


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    started_at: float
    ready: bool = False
    chunk: list = field(default_factory=list)  # items sent and not yet answered, in order
    progress_at: float = 0.0  # when the current item started (last result or chunk send)


def _stop_workers(workers: list[_Worker]) -> None:
    """Ask politely, then SIGKILL whatever is left. Also the finalizer: must not touch the pool."""
    for worker in workers:
        try:
            worker.conn.send(None)
        except Exception:
            pass
    deadline = time.monotonic() + 1.0
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5.0)
        worker.conn.close()
    workers.clear()


class MathVerifyPool:
    """Grades (gold, prediction) pairs with Math-Verify in killable worker processes.

    Workers start on the first `score` call (or `start()`). `timeouts` counts graded answers
    that hit `timeout_s` (reward 0.0); a timed-out pair is cached as 0.0 like any other.
    Not re-entrant, but safe to call from any one thread at a time (a lock serializes calls).
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 5.0,
        grader: str = DEFAULT_GRADER,
        cache_size: int = 100_000,
    ):
        if workers < 1:
            raise ConfigError(f"MathVerifyPool: workers={workers!r}; expected an integer >= 1.")
        if not timeout_s > 0:
            raise ConfigError(f"MathVerifyPool: timeout_s={timeout_s!r}; expected a number > 0.")
        try:
            _resolve_grader(grader)  # fail here, not inside a worker
        except Exception as exc:
            raise ConfigError(
                f"MathVerifyPool: grader={grader!r} cannot be imported ({exc}); expected an "
                f"importable 'module:function' path such as {DEFAULT_GRADER!r}."
            ) from exc
        self.num_workers = int(workers)
        self.timeout_s = float(timeout_s)
        self.grader = grader
        self.cache_size = int(cache_size)
        self.timeouts = 0
        self.crashes = 0  # workers that died on their own (e.g. out of memory)
        self.cache: dict[tuple[str, str], float] = {}
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        # Runs at garbage collection or interpreter exit: no orphan workers either way.
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    # -- lifecycle

    def start(self) -> float:
        """Start the workers and wait until they are ready; returns the seconds it took."""
        began = time.monotonic()
        with self._lock:
            try:
                self._fill_workers()
                while not all(worker.ready for worker in self._workers):
                    self._wait_and_handle(queue=collections.deque(), results={})
            except BaseException:
                _stop_workers(self._workers)
                raise
        return time.monotonic() - began

    def close(self) -> None:
        """Stop all workers (idempotent). The pool restarts them if `score` is called again."""
        with self._lock:
            _stop_workers(self._workers)

    def __enter__(self) -> MathVerifyPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def processes(self) -> list[multiprocessing.process.BaseProcess]:
        """The live worker process objects (for tests and monitoring)."""
        return [worker.process for worker in self._workers]

    # -- scoring

    def score(self, golds: list[str], predictions: list[str]) -> list[float]:
        """One score in {0.0, 1.0} per (gold, prediction), in input order."""
        if len(golds) != len(predictions):
            raise ValueError(f"MathVerifyPool.score: {len(golds)} golds but {len(predictions)} predictions.")
        keys = [(str(gold), str(prediction)) for gold, prediction in zip(golds, predictions)]
        with self._lock:
            missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
            results = self._grade(missing) if missing else {}
            scores = [results[key] if key in results else self.cache[key] for key in keys]
            self._remember(results)
        return scores

    def _remember(self, results: dict[tuple[str, str], float]) -> None:
        self.cache.update(results)
        while len(self.cache) > self.cache_size:
            del self.cache[next(iter(self.cache))]  # dicts keep insertion order: oldest first

    def _grade(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
        items = [(item_id, gold, prediction) for item_id, (gold, prediction) in enumerate(keys)]
        queue = collections.deque(items[i : i + _CHUNK_SIZE] for i in range(0, len(items), _CHUNK_SIZE))
        results: dict[int, float] = {}
        try:
            self._fill_workers()
            while len(results) < len(items):
                self._dispatch(queue)
                self._wait_and_handle(queue, results)
        except BaseException:
            # Chunks still in flight would answer the next call with stale item ids.
            _stop_workers(self._workers)
            raise
        return {keys[item_id]: score for item_id, score in results.items()}

    def _fill_workers(self) -> None:
        while len(self._workers) < self.num_workers:
            parent_conn, child_conn = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_worker_main,
                args=(child_conn, self.grader),
                daemon=True,  # multiprocessing's own atexit handler terminates daemons too
                name="math-verify-worker",
            )
            process.start()
            child_conn.close()
            self._workers.append(_Worker(process, parent_conn, started_at=time.monotonic()))

    def _dispatch(self, queue: collections.deque) -> None:
        for worker in self._workers:
            if worker.ready and not worker.chunk and queue:
                chunk = queue.popleft()
                try:
                    worker.conn.send(chunk)
                except OSError:  # died since the last wait: the sentinel will say so
                    queue.appendleft(chunk)
                    continue
                worker.chunk = list(chunk)
                worker.progress_at = time.monotonic()

    def _next_deadline(self, worker: _Worker) -> float | None:
        if not worker.ready:
            return worker.started_at + _STARTUP_TIMEOUT_S
        if worker.chunk:
            return worker.progress_at + self.timeout_s
        return None

    def _wait_and_handle(self, queue: collections.deque, results: dict[int, float]) -> None:
        """Block until a message, a worker death or the nearest deadline; handle whichever."""
        deadlines = [d for d in map(self._next_deadline, self._workers) if d is not None]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        waitables = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        multiprocessing.connection.wait(waitables, timeout=wait_s)
        for worker in list(self._workers):
            alive = self._drain(worker, results)
            if not alive:
                self._replace(worker, queue, results, timed_out=False)
            elif (deadline := self._next_deadline(worker)) is not None and time.monotonic() >= deadline:
                if not worker.ready:
                    raise RuntimeError(f"MathVerifyPool: a worker did not start within {_STARTUP_TIMEOUT_S:.0f} s.")
                self._replace(worker, queue, results, timed_out=True)

    def _drain(self, worker: _Worker, results: dict[int, float]) -> bool:
        """Read every pending message of one worker; False if the worker is gone."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ready":
                    worker.ready = True
                elif message[0] == "failed":
                    raise RuntimeError(f"MathVerifyPool: worker failed to start: {message[1]}")
                else:
                    item_id, score = message
                    results[item_id] = score
                    worker.chunk.pop(0)  # results arrive in chunk order
                    worker.progress_at = time.monotonic()
        except (EOFError, OSError):
            return False
        return worker.process.is_alive()

    def _replace(self, worker: _Worker, queue, results, *, timed_out: bool) -> None:
        """Kill `worker`; its current item scores 0.0 on timeout; the rest of its chunk is re-sent."""
        worker.process.kill()
        worker.process.join(5.0)
        worker.conn.close()
        self._workers.remove(worker)
        if not worker.ready:
            raise RuntimeError(
                f"MathVerifyPool: a worker exited during startup (exit code "
                f"{worker.process.exitcode}); check that {self.grader!r} imports in a fresh process."
            )
        pending = worker.chunk
        if pending:
            # The item it was on scores 0.0. That holds for a worker that died on its own too
            # (OOM killer, segfault): retrying a crashing answer would kill workers forever.
            stuck, pending = pending[0], pending[1:]
            results[stuck[0]] = 0.0
            if timed_out:
                self.timeouts += 1
            else:
                self.crashes += 1
        if pending:
            queue.appendleft(pending)
        self._fill_workers()
