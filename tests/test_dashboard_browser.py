"""The dashboard in a real browser: `streamlit run` subprocess + Playwright driving chromium."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dashboard import screenshot
from dashboard_fixtures import fill_store

TRAIN_ROWS = 17
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [
    pytest.mark.slow,  # a real Streamlit server and headless chromium
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="the playwright Python package is not installed (pip install playwright)",
    ),
    pytest.mark.skipif(
        not Path(screenshot.CHROMIUM).exists(),
        reason=f"no chromium at {screenshot.CHROMIUM} (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    fill_store(uri)
    return uri


def assert_png(path: Path) -> None:
    content = path.read_bytes()
    assert content[:8] == PNG_MAGIC and len(content) > 10_000, (path, len(content))


def test_browser_shows_the_leaderboard_then_curves_and_keeps_model_text_inert(store_uri, tmp_path):
    dialogs = []
    with screenshot.serve_app(store_uri) as url, screenshot.open_browser() as page:
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url)
        assert screenshot.wait_for_runs(page, TRAIN_ROWS).startswith(f"{TRAIN_ROWS} runs")
        screenshot.goto_view(page, "Curves")
        assert page.locator('[data-testid="stVegaLiteChart"]').count() == 2
        page.screenshot(path=str(tmp_path / "curves.png"), full_page=True)
        screenshot.goto_view(page, "Samples")
        code = page.locator('[data-testid="stCode"]').nth(1)
        assert code.inner_text().strip() == "<script>alert(1)</script>"
        assert page.locator('img[src="x"]').count() == 0
    assert dialogs == []  # no injected script ever ran
    assert_png(tmp_path / "curves.png")


def test_screenshot_script_writes_a_png(store_uri, tmp_path):
    out = tmp_path / "shots" / "leaderboard.png"
    assert screenshot.main(["--tracking-uri", store_uri, "--out", str(out), "--expect-runs", str(TRAIN_ROWS)]) == 0
    assert_png(out)
