"""A throwaway PostgreSQL (Debian's package) for the Supabase side of the tests."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from .mongo import free_port

SCHEMA = Path(__file__).resolve().parent.parent.parent / "sql" / "fitkart_schema.sql"


def installed_initdbs() -> list[str]:
    """initdb of each installed PostgreSQL server, oldest version first."""
    return sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))


def postgres_bindir() -> Path:
    """The newest installed server's bin directory, installing Debian's package first if needed (as root)."""
    if not installed_initdbs() and os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing PostgreSQL (apt-get install -y postgresql) ...", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=environment,
                       stdout=subprocess.DEVNULL)
    found = installed_initdbs()
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


def ensure_wal2json(bindir: Path) -> None:
    """Debian's wal2json for this server's version, installed first when missing (as root), as Supabase ships it."""
    version = bindir.parent.name
    if Path(f"/usr/lib/postgresql/{version}/lib/wal2json.so").exists():
        return
    package = f"postgresql-{version}-wal2json"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"Installing wal2json (apt-get install -y {package}) ...", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=environment,
                       stdout=subprocess.DEVNULL)
    if not Path(f"/usr/lib/postgresql/{version}/lib/wal2json.so").exists():
        raise RuntimeError(f"wal2json is not installed: apt-get install -y {package}")


class PostgresServer:
    """initdb + postgres on a free loopback port, with trust authentication, in a temp dir."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bindir = postgres_bindir()
        self.settings = settings or {}
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fitkart-postgres-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user.
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _as_user(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *command] if os.geteuid() == 0 else command

    def start(self) -> "PostgresServer":
        """Create the cluster and wait until it accepts connections."""
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
        subprocess.run(self._as_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                                      "--auth=trust", "--encoding=UTF8", "--no-sync"]),
                       check=True, capture_output=True)
        with open(self.root / "server.log", "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self._as_user([
                str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                *(f"-c{name}={value}" for name, value in self.settings.items())]),
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        """A connection string for a database of this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, fitkart_tables: bool = True) -> str:
        """A new database, with the FitKart tables unless told otherwise; its connection string."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        if fitkart_tables:
            with psycopg.connect(self.url(name), autocommit=True) as connection:
                connection.execute(SCHEMA.read_text())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Remove a database made by create_database."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
