"""Screenshot a dashboard view with a real browser (Playwright driving Debian's chromium).

    python -m dashboard.screenshot --tracking-uri sqlite:///mlflow.db --out docs/leaderboard.png
    python -m dashboard.screenshot --tracking-uri http://mlflow:5000 --out curves.png --view Curves

Starts `streamlit run dashboard/app.py` (dashboard.launch) on a free port, waits for the
leaderboard's "N runs" caption (the table itself is a canvas grid), clicks to the view, waits
for it to draw and saves a full-page PNG. Needs the `playwright` Python package (test extra)
and a chromium binary (`apt-get install -y chromium`); `playwright install` is not needed.
The browser test (tests/test_dashboard_browser.py) uses the same helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from dashboard.launch import build_streamlit_command
from results.errors import AssetMissingError, HarnessError

CHROMIUM = os.environ.get("HARNESS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEW_READY = {  # what shows that a view has drawn (data-testid of Streamlit elements)
    "Leaderboard": "stDataFrame",
    "Paper tables": "stDataFrame",
    "Grid": "stVegaLiteChart",
    "Curves": "stVegaLiteChart",
    "Compare": "stDataFrame",
    "Samples": "stCode",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(
                f"streamlit exited with status {process.returncode} before serving; "
                f"its log ({log}):\n{log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise HarnessError(f"streamlit did not answer on {url} within {timeout_s:.0f} s; log: {log}")


@contextlib.contextmanager
def serve_app(tracking_uri: str, port: int | None = None, timeout_s: float = 60) -> Iterator[str]:
    """Run the dashboard as a real `streamlit run` subprocess; yields its base URL."""
    port = port or free_port()
    command = build_streamlit_command(
        tracking_uri, port, headless=True, address="127.0.0.1", extra_options={"client.toolbarMode": "viewer"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "streamlit.log"
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process, log, timeout_s)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def open_browser(width: int = 1600, height: int = 1000) -> Iterator:
    """A headless chromium page (Playwright), using the system chromium binary."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise AssetMissingError(
            "dashboard.screenshot needs the playwright Python package: "
            "`pip install playwright` (no `playwright install` needed)."
        ) from None
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        raise AssetMissingError(
            f"No chromium at {CHROMIUM}: `apt-get install -y chromium`, or point HARNESS_CHROMIUM at a chromium binary."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield page
        finally:
            browser.close()


def wait_for_runs(page, expected: int | None = None, timeout_s: float = 60) -> str:
    """Wait for the leaderboard caption ("17 runs · ..."); returns its text."""
    pattern = re.compile(rf"\b{expected} runs\b" if expected is not None else r"\b\d+ runs\b")
    caption = page.get_by_text(pattern).first
    caption.wait_for(state="visible", timeout=timeout_s * 1000)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=timeout_s * 1000)
    return caption.inner_text()


def settle(page, timeout_s: float = 30) -> None:
    """Wait until Streamlit has finished its rerun and charts have drawn."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_s * 1000
    )
    page.wait_for_timeout(1200)  # vega and the data grid animate in after the rerun ends


def goto_view(page, view: str, timeout_s: float = 60) -> None:
    """Click the view in the sidebar's radio and wait for its header and first element."""
    if view not in VIEW_READY:
        raise HarnessError(f"--view {view!r}: expected one of {', '.join(VIEW_READY)}.")
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text(view, exact=True).click()
    page.get_by_role("heading", name=view).wait_for(timeout=timeout_s * 1000)
    page.locator(f'[data-testid="{VIEW_READY[view]}"]').first.wait_for(state="visible", timeout=timeout_s * 1000)
    settle(page, timeout_s)


def take_screenshot(
    tracking_uri: str,
    out: str | Path,
    view: str = "Leaderboard",
    *,
    expected_runs: int | None = None,
    width: int = 1600,
    height: int = 1000,
    timeout_s: float = 90,
) -> Path:
    """Serve the app against tracking_uri, open `view` and save a full-page PNG at out."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with serve_app(tracking_uri, timeout_s=timeout_s) as url, open_browser(width, height) as page:
        page.goto(url, timeout=timeout_s * 1000)
        wait_for_runs(page, expected_runs, timeout_s)
        if view != "Leaderboard":
            goto_view(page, view, timeout_s)
        else:
            settle(page, timeout_s)
        page.screenshot(path=str(out), full_page=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--view", default="Leaderboard", choices=list(VIEW_READY))
    parser.add_argument("--expect-runs", type=int, default=None, help="wait until exactly N runs are listed")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        path = take_screenshot(
            args.tracking_uri, args.out, args.view, expected_runs=args.expect_runs, width=args.width, height=args.height
        )
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
