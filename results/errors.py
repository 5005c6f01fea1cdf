"""The errors the results layer raises (the harness's user-error classes, plus an unreachable store).

The dashboard catches these from here, so it needs nothing of the harness but this layer.
"""

from __future__ import annotations

from harness.errors import AssetMissingError, ConfigError, DataError, HarnessError

__all__ = ["AssetMissingError", "ConfigError", "DataError", "HarnessError", "TrackingUnavailable"]


class TrackingUnavailable(HarnessError):
    """The tracking URI cannot be reached or does not hold an MLflow store."""
