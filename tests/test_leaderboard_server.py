"""`harness leaderboard` as a real server: it listens on loopback unless `--address` says otherwise.

Streamlit alone listens on every interface, and a leaderboard shows model samples and run
metadata. The listening sockets are read from the kernel (/proc/net/tcp and tcp6), not from the
command line the harness built.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real Streamlit server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets in state LISTEN on `port`, as the kernel reports them."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = TCP_LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    store = tmp_path / "mlflow.db"
    store.touch()  # the leaderboard only reads: the store must exist
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "leaderboard",
            "--tracking-uri",
            f"sqlite:///{store}",
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    return process, port


def wait_listening(process: subprocess.Popen, port: int, timeout_s: float = 90) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        addresses = listening_addresses(port)
        if addresses:
            return addresses
        assert process.poll() is None, f"the leaderboard exited with {process.returncode} before listening"
        time.sleep(0.3)
    raise AssertionError(f"nothing listened on port {port} within {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_leaderboard_listens_on_loopback_only_by_default(tmp_path):
    process, port = serve(tmp_path)
    try:
        assert wait_listening(process, port) == {"127.0.0.1"}
    finally:
        stop(process)


def test_leaderboard_listens_on_the_address_it_is_given(tmp_path):
    process, port = serve(tmp_path, "--address", "0.0.0.0")
    try:
        assert wait_listening(process, port) == {"0.0.0.0"}
    finally:
        stop(process)


def test_a_password_in_a_tracking_url_never_reaches_the_log_or_the_error(tmp_path):
    """A tracking server that does not answer: the wait is logged and the command fails, both
    naming the URL, and neither shows its password (read from the real process's stderr)."""
    port = free_port()  # nothing listens there
    url = f"http://researcher:hunter2@127.0.0.1:{port}"
    env = {**os.environ, "HARNESS_TRACKING_WAIT_S": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "leaderboard", "--tracking-uri", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert done.stderr.count(f"researcher:***@127.0.0.1:{port}") >= 2, done.stderr  # the wait's log line and the error


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "postgresql+psycopg://optuna:s3cr%21t@db.lab:5432/sweeps",
            "postgresql+psycopg://optuna:***@db.lab:5432/sweeps",
        ),
        ("see http://u:p@h:5000/ and https://a:b@c/x", "see http://u:***@h:5000/ and https://a:***@c/x"),
        (
            "postgresql://db.lab/sweeps?user=optuna&password=s3cret&sslmode=require",
            "postgresql://db.lab/sweeps?user=optuna&password=***&sslmode=require",
        ),
        ("sqlite:////work/mlflow.db", "sqlite:////work/mlflow.db"),
        ("http://mlflow.lab:5000", "http://mlflow.lab:5000"),
        ("user@host:22 and a:b", "user@host:22 and a:b"),
    ],
)
def test_redact_hides_url_passwords_and_nothing_else(text, expected):
    from harness.errors import redact

    assert redact(text) == expected


def test_a_tracking_server_behind_basic_auth_is_reached_with_the_urls_credentials():
    """A loopback HTTP server that answers /health only with the right basic-auth header: the
    harness's wait for the tracking server gets through with http://user:password@host:port."""
    import base64
    import http.server
    import threading
    from harness.tracking import TrackingServerUnreachable, wait_for_tracking_server

    expected = "Basic " + base64.b64encode(b"researcher:p@ss word").decode()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/health" and self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        wait_for_tracking_server(f"http://researcher:p%40ss%20word@127.0.0.1:{port}", wait_s=5)
        with pytest.raises(TrackingServerUnreachable, match=r"researcher:\*\*\*@.*Unauthorized"):
            wait_for_tracking_server(f"http://researcher:wrong@127.0.0.1:{port}", wait_s=0.5)
    finally:
        server.shutdown()


def test_a_password_in_a_config_url_is_not_stored_in_mlflow_params_or_tags(tmp_path):
    """A run's params are its flattened config: a judge or data URL with a password must not reach
    the tracking store (read back from the real SQLite store)."""
    from mlflow.tracking import MlflowClient
    from harness.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker("secrets", "run", tracking_uri=uri)
    tracker.log_params({"eval.judge.base_url": "https://me:sk-live-123@judge.lab/v1", "train.lr": 1e-6})
    tracker.set_tags({"harness.error": "could not reach postgresql://optuna:hunter2@db/sweeps"})
    tracker.finish()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.params["eval.judge.base_url"] == "https://me:***@judge.lab/v1"
    assert run.data.params["train.lr"] == "1e-06"
    assert run.data.tags["harness.error"] == "could not reach postgresql://optuna:***@db/sweeps"
