"""Test-only graders for MathVerifyPool's `grader="module:function"` hook.

Workers import this module by name (`helpers_slow_grader`): pytest puts tests/ on sys.path and
spawned workers inherit the parent's sys.path.
"""

import os
import time

from harness.rewards import math_verify_reward

HANG_MARKER = "HANG_FOREVER"
CRASH_MARKER = "CRASH_NOW"


def grade_or_hang(gold: str, prediction: str) -> float:
    """Math-Verify, except that HANG_MARKER never returns and CRASH_MARKER kills the worker."""
    if CRASH_MARKER in prediction:
        os._exit(1)  # like a segfault or the OOM killer: no Python exception, no reply
    if HANG_MARKER in prediction:
        while True:
            time.sleep(3600)
    return math_verify_reward(gold, prediction)
