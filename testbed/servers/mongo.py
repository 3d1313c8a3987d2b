"""Start a real MongoDB-compatible server for the tests: `mongod` if installed, else FerretDB.

FerretDB v1.24 (Apache-2.0) speaks the MongoDB wire protocol over SQLite files. It is
built once from the Go module proxy and cached in ~/.cache/fitkart (FITKART_FERRETDB_BIN
points at another binary). `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`
gives a binary that panics at start for want of `build/version/version.txt`, which
FerretDB's release tooling writes; so the same module source is built with that file.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pymongo

FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fitkart"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ferretdb_binary() -> Path:
    """The FerretDB binary, built and cached on first use."""
    configured = os.environ.get("FITKART_FERRETDB_BIN")
    if configured:
        return Path(configured)
    binary = CACHE / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"
    if not binary.exists():
        build_ferretdb(binary)
    return binary


def build_ferretdb(binary: Path) -> None:
    """Build FerretDB from its module source, with the version file its release adds."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Neither mongod nor Go is installed: cannot start a test database.")
    print(f"Building FerretDB {FERRETDB_VERSION} (once; cached in {binary.parent}) ...", flush=True)
    listing = subprocess.run([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
                             check=True, capture_output=True, text=True, cwd=tempfile.gettempdir())
    module_dir = Path(json.loads(listing.stdout)["Dir"])
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "ferretdb"
        shutil.copytree(module_dir, source)
        for path in source.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        (source / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go, "build", "-o", str(partial), "./cmd/ferretdb"], check=True, cwd=source)
        partial.rename(binary)


def is_ferretdb(build_info: dict) -> bool:
    """Whether a `buildInfo` answer is FerretDB's.

    FerretDB v1.24 reports a MongoDB version (`version: 7.0.42`) and adds fields of its own
    (`ferretdbVersion: v1.24.2`, `ferretdbFeatures`); a version string naming FerretDB counts too.
    """
    return (any("ferretdb" in str(key).lower() for key in build_info)
            or "ferretdb" in str(build_info.get("version", "")).lower())


# Run in a process of its own: FerretDB v1 answers a Decimal128 by dropping the connection, and a client
# closed just after may leave that socket to the garbage collector, which the tests' warnings-as-errors
# would then blame on whichever test happens to be running.
DECIMAL128_PROBE = """
import contextlib, sys, uuid
import pymongo
from bson import Decimal128

name = f"fitkart_probe_{uuid.uuid4().hex[:12]}"
with pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000) as client:
    try:
        for _ in range(2):  # one connection dropped by chance does not pass for a refusal
            try:
                client[name].probe.replace_one({"_id": "d"}, {"_id": "d", "value": Decimal128("0.01")}, upsert=True)
                stored = client[name].probe.find_one({"_id": "d"})
                print("yes" if stored is not None and stored["value"] == Decimal128("0.01") else "no")
                break
            except pymongo.errors.PyMongoError:
                client.admin.command("ping")  # raises when the server is down: then nothing is known
        else:
            print("no")
    finally:
        with contextlib.suppress(pymongo.errors.PyMongoError):
            client.drop_database(name)
"""


def stores_decimal128(uri: str) -> bool:
    """Whether the server at `uri` stores (and gives back) a Decimal128, tried in a scratch database.

    A failure counts as "cannot" only while the server still answers a ping; a server that is down
    fails the probe (and the test run) instead of passing for one without Decimal128.
    """
    probe = subprocess.run([sys.executable, "-c", DECIMAL128_PROBE, uri], capture_output=True, text=True,
                           timeout=60, check=True)
    return probe.stdout.strip() == "yes"


@dataclass(frozen=True)
class ServerKind:
    """What the test database server is, as it says itself: tests branch on these, not on how it was started."""

    uri: str  # the server's URI, without a database name
    is_ferretdb: bool  # FerretDB (v1: no nested arrays, no TTL indexes on SQLite, no compare-and-set under races)
    stores_decimal128: bool  # whether it can store Decimal128 (FerretDB v1 cannot)
    version: str  # what buildInfo reports: FerretDB's own version, else MongoDB's

    @classmethod
    def of(cls, uri: str, decimal128: bool | None = None) -> "ServerKind":
        """Ask the server at `uri`; `decimal128` (when not None) is taken instead of probing for it."""
        uri = uri.rstrip("/")
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            info = client.admin.command("buildInfo")
        ferretdb = is_ferretdb(info)
        version = str(info.get("ferretdbVersion") or info.get("version", "?"))
        return cls(uri=uri, is_ferretdb=ferretdb, version=f"{'FerretDB' if ferretdb else 'MongoDB'} {version}",
                   stores_decimal128=stores_decimal128(uri) if decimal128 is None else decimal128)

    @property
    def decimal_mode(self) -> str:
        """The mode the tests run the app in: decimal128 where the server stores it, else double."""
        return "decimal128" if self.stores_decimal128 else "double"


class MongoServer:
    """One database server process on a free loopback port, with its data in a temp dir."""

    def __init__(self, postgresql_url: str | None = None, admin: tuple[str, str] | None = None) -> None:
        self.mongod = shutil.which("mongod")
        # With (user, password), clients must log in: that user, an administrator, is made at start.
        self.admin = admin
        self._admin_made = False
        # FerretDB keeps its data in SQLite files by default; with a URL, in that PostgreSQL database.
        self.postgresql_url = None if self.mongod else postgresql_url
        self.kind = "mongod" if self.mongod else "ferretdb"
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix=f"fitkart-{self.kind}-")
        self.process: subprocess.Popen | None = None
        self.log_path = Path(self.data_dir) / "server.log"

    @property
    def base_uri(self) -> str:
        """The server's URI without a database name."""
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        """What runs, for reports: mongod, or FerretDB and its backend."""
        if self.mongod:
            return "mongod"
        return f"FerretDB v1.24.2 ({'PostgreSQL' if self.postgresql_url else 'SQLite'} backend)"

    @property
    def supports_decimal128(self) -> bool:
        """Whether the running server stores Decimal128 (asked of it; FerretDB v1 cannot, MongoDB can)."""
        return stores_decimal128(self.base_uri)

    def server_kind(self) -> ServerKind:
        """What the running server says it is."""
        return ServerKind.of(self.base_uri)

    def command(self) -> list[str]:
        """The command line that runs the server."""
        if self.mongod:
            return [self.mongod, "--port", str(self.port), "--bind_ip", "127.0.0.1",
                    "--dbpath", self.data_dir, "--quiet", *(["--auth"] if self.admin else [])]
        login = [] if self.admin is None else [
            "--test-enable-new-auth", f"--setup-username={self.admin[0]}", f"--setup-password={self.admin[1]}",
            "--setup-database=admin"]
        backend = (["--handler=postgresql", f"--postgresql-url={self.postgresql_url}"] if self.postgresql_url
                   else ["--handler=sqlite", f"--sqlite-url=file:{self.data_dir}/"])
        return [str(ferretdb_binary()), *backend,
                f"--listen-addr=127.0.0.1:{self.port}", "--telemetry=disable",
                f"--state-dir={self.data_dir}", "--debug-addr=127.0.0.1:0", "--log-level=warn", *login]

    def start(self, timeout: float = 30.0) -> "MongoServer":
        """Start the server and wait until it answers a ping."""
        command = self.command()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = pymongo.MongoClient(self.base_uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited at start: {self.log_path.read_text()[-2000:]}")
                try:
                    client.admin.command("ping")
                    if self.admin and self.mongod and not self._admin_made:  # the first user, from localhost
                        client.admin.command("createUser", self.admin[0], pwd=self.admin[1], roles=["root"])
                        self._admin_made = True
                    return self
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.kind} did not answer within {timeout} s") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (its data stays for a restart)."""
        terminate(self.process)
        self.process = None

    def remove(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def terminate(process: subprocess.Popen | None, seconds: float = 10) -> None:
    """SIGTERM a server process and wait for it; SIGKILL if it is still there after `seconds`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
