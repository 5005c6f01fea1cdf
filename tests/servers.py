"""Real servers for the multi-host tests: a throwaway PostgreSQL cluster and an MLflow server.

    postgres = PostgresServer.start(root)          # initdb in `root`, loopback, a free port
    url = postgres.create_database("optuna")       # postgresql://harness:...@127.0.0.1:PORT/optuna
    tracking = MlflowServer.start(root, postgres.create_database("mlflow"))
    postgres.restart(down_s=3)                     # a real blip: stop, wait, start again

With `HARNESS_TEST_POSTGRES_URL` set (a role that may CREATE DATABASE, e.g.
postgresql://harness:secret@127.0.0.1:5432/postgres) that server is used instead and tests that
restart the server are skipped. PostgreSQL refuses to run as root, so as root the cluster runs
as the `postgres` user (Debian's package creates it) or, failing that, `nobody`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

PASSWORD = "harness-test-secret"
USER = "harness"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


@dataclass
class PostgresServer:
    admin_url: str  # a URL whose role may create databases
    data_dir: Path | None = None  # None: an external server we must not restart
    bindir: Path | None = None
    port: int = 0
    log_path: Path | None = None
    user: pwd.struct_passwd | None = None

    @classmethod
    def start(cls, root: Path) -> "PostgresServer":
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (apt-get install postgresql); or set "
                "HARNESS_TEST_POSTGRES_URL to an existing server"
            )
        user = _unprivileged_user()
        root.mkdir(parents=True, exist_ok=True)
        server = cls(
            admin_url="",
            data_dir=root / "data",
            bindir=bindir,
            port=free_port(),
            log_path=root / "postgres.log",
            user=user,
        )
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        (root / "socket").mkdir(exist_ok=True)
        if user is not None:
            for path in (root, pwfile, root / "socket"):
                os.chown(path, user.pw_uid, user.pw_gid)
        server._run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        server._pg_ctl_start()
        server.admin_url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{server.port}/postgres"
        return server

    @classmethod
    def external(cls, url: str) -> "PostgresServer":
        return cls(admin_url=url)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}
        return subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.data_dir.parent,
            timeout=120,
            **kwargs,
        )

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir.parent / 'socket'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.is_file() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n{log[-2000:]}")

    @property
    def restartable(self) -> bool:
        return self.data_dir is not None

    def stop(self, mode: str = "fast") -> None:
        if self.restartable:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 3.0) -> float:
        """Stop the server (closing every client connection), stay down `down_s`, start it again;
        returns how long it was unreachable."""
        began = time.monotonic()
        self.stop("fast")
        time.sleep(down_s)
        self._pg_ctl_start()
        return time.monotonic() - began

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql)

    def create_database(self, prefix: str) -> str:
        """A fresh database; returns its URL (same role as the admin URL)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    artifacts: Path

    @classmethod
    def launch(cls, root: Path, backend_url: str, port: int | None = None, workers: int = 1) -> "MlflowServer":
        """Start `mlflow server` without waiting for it (it takes tens of seconds on a busy machine:
        imports and the schema migrations of a fresh database)."""
        root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        artifacts = root / "artifacts"
        log_path = root / "mlflow-server.log"
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            backend_url,
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=root,
                env=env,
                start_new_session=True,
            )
        return cls(f"http://127.0.0.1:{port}", process, log_path, artifacts)

    @classmethod
    def start(cls, root: Path, backend_url: str, port: int | None = None, timeout_s: float = 180) -> "MlflowServer":
        server = cls.launch(root, backend_url, port)
        server.wait_healthy(timeout_s)
        return server

    def wait_healthy(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout_s:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (import this fixture into a test module to use it)."""
    try:
        server, root = start_postgres_for_tests()
    except RuntimeError as exc:
        pytest.skip(f"no PostgreSQL for the multi-host tests: {exc}")
    yield server
    server.stop("immediate")
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def start_postgres_for_tests() -> tuple[PostgresServer, Path | None]:
    """The server the tests use: HARNESS_TEST_POSTGRES_URL's, else a throwaway cluster."""
    url = os.environ.get("HARNESS_TEST_POSTGRES_URL")
    if url:
        return PostgresServer.external(url), None
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    os.chmod(root, 0o755)
    return PostgresServer.start(root / "cluster"), root


# -- worker hosts ------------------------------------------------------------------------------


def namespaces_available() -> bool:
    """`unshare` with new UTS/PID/mount namespaces (root, or a kernel allowing user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child", "true"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


class Host:
    """One worker machine, modelled on this one: its own hostname (UTS namespace), its own process
    table and /proc (PID and mount namespaces), working directory, HOME, TMPDIR and asset cache
    (a symlink to the prebuilt tiny assets). It shares nothing with other hosts but the servers'
    URLs in its environment and the shared output root the sweep file names. `kill()` is the
    machine dying: SIGKILL to its process group takes down the namespace's init, and the kernel
    kills every process in it at once (trials included), with no chance to clean up."""

    def __init__(self, name: str, root: Path, env: dict[str, str], tiny_dir: Path) -> None:
        self.name, self.root = name, root / name
        self.work = self.root / "work"
        for sub in ("work", "home", "tmp", "cache/tiny"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        link = self.root / "cache" / "tiny" / tiny_dir.name
        if not link.exists():
            link.symlink_to(tiny_dir, target_is_directory=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HARNESS_"))}
        self.env = {
            **base,
            "HOME": str(self.root / "home"),
            "TMPDIR": str(self.root / "tmp"),
            "HARNESS_CACHE": str(self.root / "cache"),
            "OMP_NUM_THREADS": "1",
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / "worker.log"

    def command(self, argv: list[str]) -> list[str]:
        return [
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            'hostname "$0" && "$@"',
            self.name,
            *argv,
        ]

    def start(self, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            self.command(argv),
            cwd=self.work,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self.process

    def run(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(argv), cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def kill(self) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
