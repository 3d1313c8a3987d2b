"""A small filesystem of a test's own, so a disk fills up for real."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_disk(where: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted at `where` (made here; mounting needs root, as the tests run), unmounted
    afterwards. A machine where it cannot be mounted fails the test, as a server that cannot start does."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"a full disk needs a small tmpfs (as root): {mounted.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
