"""How `harness leaderboard` starts the dashboard: `python -m dashboard.launch --tracking-uri URI --port P`.

    cmd = build_streamlit_command("http://mlflow:5000", 8501)
    subprocess.run(cmd, check=False)

`harness leaderboard` runs this module as a process (the harness never imports the dashboard);
`main` replaces itself with Streamlit.

The command runs Streamlit from the current interpreter (`python -m streamlit`), so the virtual
environment that has the harness installed is the one that serves the app.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP_PATH = Path(__file__).resolve().parent / "app.py"


# A leaderboard shows model samples and run metadata: loopback unless the user names an address
# (Streamlit alone listens on every interface).
DEFAULT_ADDRESS = "127.0.0.1"


def build_streamlit_command(
    tracking_uri: str | None,
    port: int = 8501,
    *,
    headless: bool = True,
    mlflow_ui_url: str | None = None,
    address: str = DEFAULT_ADDRESS,
    extra_options: dict[str, str] | None = None,
) -> list[str]:
    """`python -m streamlit run dashboard/app.py --server.port P ... -- --tracking-uri URI`.

    tracking_uri None leaves the choice to the app (MLFLOW_TRACKING_URI, else ./mlflow.db). headless
    keeps Streamlit from opening a browser (right on a remote machine); usage stats stay off.
    address is the interface to listen on (loopback by default; "0.0.0.0" for every interface).
    extra_options are more Streamlit config flags, e.g. {"client.toolbarMode": "viewer"}.
    """
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.port",
        str(int(port)),
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
        "--server.address",
        address,
    ]
    for name, value in (extra_options or {}).items():
        command += [f"--{name}", str(value)]
    app_args = []
    if tracking_uri:
        app_args += ["--tracking-uri", tracking_uri]
    if mlflow_ui_url:
        app_args += ["--mlflow-ui-url", mlflow_ui_url]
    return command + (["--", *app_args] if app_args else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard.launch", description="serve the leaderboard")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--mlflow-ui-url", default=None)
    parser.add_argument("--address", default=DEFAULT_ADDRESS)
    args = parser.parse_args(argv)
    command = build_streamlit_command(
        args.tracking_uri, args.port, mlflow_ui_url=args.mlflow_ui_url, address=args.address
    )
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
