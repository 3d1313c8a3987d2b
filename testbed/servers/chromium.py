"""Debian's Chromium for the browser tests, installed as PostgreSQL is when it is missing (as root)."""

import os
import shutil
import subprocess
from pathlib import Path

# Debian's /usr/bin/chromium is a shell wrapper; the browser itself lives at the first path.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
PACKAGES = ("chromium", "chromium-driver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-extensions"]


def installed_chromium() -> str | None:
    """The Chromium binary on this machine, or None."""
    for candidate in CANDIDATES:
        found = candidate if candidate.startswith("/") else shutil.which(candidate)
        if found and Path(found).is_file():
            return found
    return None


def chromium_path() -> str:
    """Debian's Chromium, installing it first if needed (as root, with apt-get); fails, never skips, without it."""
    if installed_chromium() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"Installing Chromium (apt-get install -y {' '.join(PACKAGES)}) ...", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=environment,
                       stdout=subprocess.DEVNULL)
    found = installed_chromium()
    if found is None:
        raise RuntimeError(f"Chromium is not installed: apt-get install -y {' '.join(PACKAGES)}")
    return found
