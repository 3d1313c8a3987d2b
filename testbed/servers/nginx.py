"""nginx in front of a test server, with deploy/nginx-fitkart.conf as shipped (its ports changed)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .mongo import free_port, terminate

SITE = Path(__file__).resolve().parent.parent.parent / "deploy" / "nginx-fitkart.conf"


def nginx_binary() -> str:
    """nginx, installing Debian's package first when missing (as root), as PostgreSQL and Chromium are."""
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists() and os.geteuid() == 0 \
            and shutil.which("apt-get"):
        print("Installing nginx (apt-get install -y nginx) ...", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=environment,
                       stdout=subprocess.DEVNULL)
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx")
    return found


class NginxProxy:
    """nginx on a free loopback port, passing requests to the hosts on `upstream_ports` by the shipped block."""

    def __init__(self, *upstream_ports: int) -> None:
        self.port = free_port()
        self.upstream_ports = upstream_ports
        self.root = Path(tempfile.mkdtemp(prefix="fitkart-nginx-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "NginxProxy":
        """Write the configuration (the shipped block inside a minimal nginx.conf) and start nginx."""
        site = SITE.read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        hosts = "".join(f"server 127.0.0.1:{port};\n    " for port in self.upstream_ports).rstrip()
        site = site.replace("server 127.0.0.1:5000;", hosts)
        (self.root / "site.conf").write_text(site)
        temp = {name: self.root / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (self.root / "nginx.conf").write_text(
            f"daemon off;\nuser root;\nworker_processes 1;\npid {self.root / 'nginx.pid'};\n"
            f"error_log {self.root / 'error.log'} info;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n  access_log off;\n"
            + "".join(f"  {name}_temp_path {path};\n" if name != "body" else f"  client_body_temp_path {path};\n"
                      for name, path in temp.items())
            + f"  include {self.root / 'site.conf'};\n}}\n")
        with open(self.root / "stderr.log", "wb") as errors:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [nginx_binary(), "-c", str(self.root / "nginx.conf"), "-p", str(self.root)],
                stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + 15

        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    said = (self.root / "stderr.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"nginx did not start: {said}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop nginx and remove its files."""
        terminate(self.process)
        shutil.rmtree(self.root, ignore_errors=True)
