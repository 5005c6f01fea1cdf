"""Shared fixtures. The embedded tiny assets are built once per machine (cached by recipe hash
under $HARNESS_CACHE or ~/.cache/harness) and reused by every test and subprocess."""

import pytest


@pytest.fixture(scope="session")
def tiny_assets():
    from harness.tiny import ensure_tiny_assets
    return ensure_tiny_assets(progress=True)
