"""The official AlpacaEval LC (`length_controlled_v1`) from the real alpaca_eval package, or a
loud reason why not.

alpaca_eval (extra `alpaca`: alpaca_eval>=0.6.6,<0.7 with scikit-learn<1.10, as 0.6.6 passes
`penalty` to LogisticRegressionCV, which scikit-learn 1.10 removes) downloads `df_gamed.csv` and
`instruction_difficulty.csv` from the hub data set tatsu-lab/alpaca_eval on every call. Before
calling it: with HF_HUB_OFFLINE set no attempt is made (those files may still be in the local hub
cache, but alpaca_eval forces no offline lookup); otherwise one connection probe of HUB_PROBE_S
seconds replaces huggingface_hub's retries (~24 s) when the hub is unreachable. Every way the
official path does not run is a warning naming the reason, and the caller falls back.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

HUB_PROBE_S = 3.0
TRUE_VALUES = {"1", "true", "yes", "on"}


def official_unavailable_reason() -> str | None:
    """Why the official GLM cannot run here (None: worth trying)."""
    try:
        import alpaca_eval.metrics.glm_winrate  # noqa: F401
    except ImportError as err:
        return f"the alpaca_eval package is not importable ({err}); install the extra: pip install '.[alpaca]'"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES:
        return "HF_HUB_OFFLINE is set, so alpaca_eval cannot fetch df_gamed.csv / instruction_difficulty.csv"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_S).close()
    except OSError as err:
        return f"the hub ({host}:{port}) is unreachable ({type(err).__name__}: {err})"
    return None


def official_lc(
    p: np.ndarray,
    model_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    instruction_index: Sequence[int] | None,
) -> dict[str, Any] | None:
    """LC from alpaca_eval's own `get_length_controlled_winrate`, or None after a warning saying why."""
    reason = official_unavailable_reason()
    if reason is not None:
        log.warning("official AlpacaEval LC not computed: %s; falling back to the harness GLM", reason)
        return None
    import pandas as pd
    from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate

    index = list(instruction_index) if instruction_index is not None else list(range(len(p)))
    frame = pd.DataFrame(
        {
            "preference": 1.0 + p,  # alpaca_eval: 1 = output_1 (baseline) wins, 2 = output_2 (model)
            "output_1": list(baseline_outputs),
            "output_2": list(model_outputs),
            "index": index,
            "generator_1": "baseline",
            "generator_2": "model",
            "annotator": "harness",
        }
    )
    try:
        metrics = get_length_controlled_winrate(frame, save_weights_dir=None, is_add_glm_preference_inplace=True)
    except Exception as err:  # hub error, index outside the official set, API drift
        log.warning(
            "official AlpacaEval LC failed: alpaca_eval raised %s: %s; falling back to the harness GLM",
            type(err).__name__,
            err,
        )
        return None
    predicted = frame["glm_preference"].to_numpy(dtype=float)
    se = metrics.get("lc_standard_error")
    if se is None:
        se = float(predicted.std(ddof=1) / math.sqrt(len(predicted))) * 100
    return {
        "lc_winrate": float(metrics["length_controlled_winrate"]),
        "lc_winrate_se": float(se),
        "glm_weights": {},
        "glm_C": float("nan"),
        "backend": "alpaca_eval",
        "notes": "",
        "predicted_preferences": predicted.tolist(),
    }
