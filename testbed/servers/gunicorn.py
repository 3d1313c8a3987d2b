"""The server as deployed, for the tests and the benchmark: gunicorn with gunicorn.conf.py."""

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..waiting import wait_until
from .mongo import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


def request(url: str, body: dict | None = None, timeout: float = 15) -> tuple[int, dict]:
    """One JSON request as the frontend makes it; status and body (status 0: no answer at all)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            try:
                return error.code, json.load(error)
            except ValueError:
                return error.code, {}
    except (OSError, ValueError, http.client.HTTPException):  # cut off mid-answer: no acknowledgement
        return 0, {}


# Every server started in this process, so a failed test can show their logs (tests/conftest.py).
STARTED: list["GunicornServer"] = []


class GunicornServer:
    """`gunicorn -c gunicorn.conf.py wsgi:app` on a free port, against a given database."""

    def __init__(self, database_uri: str, decimal_mode: str | None, *, workers: int = 2, threads: int = 4,
                 env: dict | None = None, log_path: Path | None = None, root: Path = ROOT) -> None:
        self.port = free_port()
        self.workers = workers
        self.root = root  # where it runs from: the repository, or a host's own copy (see host_copy)
        # Its own rate-limit counters (every test server's callers are 127.0.0.1), spool and log.
        self.files = Path(tempfile.mkdtemp(prefix="fitkart-server-"))
        self.log_path = log_path or self.files / "gunicorn.log"  # its standard error: the master's and the app's log
        STARTED.append(self)
        settings = {"FITKART_MONGODB_URI": database_uri, "WEB_CONCURRENCY": str(workers),
                    "FITKART_THREADS": str(threads),
                    "FITKART_RATELIMIT_STORAGE": f"sqlite:///{self.files / 'ratelimit.sqlite3'}",
                    "FITKART_SPOOL_PATH": str(self.files / "spool.sqlite3")}
        if decimal_mode is not None:  # None: the default, as a new user meets it
            settings["FITKART_DECIMAL_MODE"] = decimal_mode
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("FITKART_")}
        self.env = {**inherited, **settings, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "GunicornServer":
        """Start and wait for /healthz."""
        gunicorn = Path(sys.executable).with_name("gunicorn")
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=self.root, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while request(f"{self.url}/healthz", timeout=1)[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        return self

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The master's worker processes."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def terminate(self) -> int:
        """SIGTERM (graceful stop); the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        """Make sure it is gone, workers too: a worker outliving its master would keep the port."""
        if self.process and self.process.poll() is None:
            try:
                workers = self.worker_pids()
            except OSError:
                workers = []
            self.process.kill()
            self.process.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not any(Path(f"/proc/{pid}/status").exists() and not _zombie(pid) for pid in workers),
                       seconds=10)


def _zombie(pid: int) -> bool:
    """A process that has exited and waits only to be reaped (it holds no sockets)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def host_copy(into: Path) -> Path:
    """The server's files copied to `into`, as on a machine of its own: its own empty instance folder (nothing
    written under the repository's is seen by it). gunicorn imports the app from where it runs."""
    for name in ("fitkart_server", "wsgi.py", "gunicorn.conf.py"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    (into / "instance").mkdir()
    return into
