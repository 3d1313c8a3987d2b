"""The TypeScript client (clients/typescript): it builds, and its unit and end-to-end tests pass.

The end-to-end tests start this repository's Flask server themselves, on the database
server these fixtures started, so they prove the client against the real thing.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "typescript"


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, with the client's dependencies installed (`npm --prefix clients/typescript ci`)."""
    found = shutil.which("npm")
    assert found, "npm is needed for the TypeScript client's tests"
    assert (CLIENT / "node_modules").is_dir(), "run `npm --prefix clients/typescript ci` first"
    return found


def run(npm: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an npm script of the client, capturing its output."""
    return subprocess.run([npm, *args], cwd=CLIENT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=600)


def test_package_builds_javascript_and_type_declarations(npm):
    """`npm run build` emits ESM .js with .d.ts beside it."""
    result = run(npm, "run", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("index", "client", "outbox", "storage", "records"):
        assert (CLIENT / "dist" / f"{name}.js").is_file()
        assert (CLIENT / "dist" / f"{name}.d.ts").is_file()
    declarations = (CLIENT / "dist" / "client.d.ts").read_text()
    assert "syncCartItem(item: CartItemRecord): Promise<void>;" in declarations


def test_unit_and_end_to_end_tests_pass(npm, database_uri, decimal_mode):
    """node's test runner: unit tests on a fake fetch, end-to-end on the real server and database."""
    result = run(npm, "test", env={"FITKART_E2E_PYTHON": sys.executable, "FITKART_E2E_MONGODB_URI": database_uri,
                                   "FITKART_E2E_DECIMAL_MODE": decimal_mode, "FITKART_E2E_REQUIRED": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = dict(line[2:].split(" ", 1) for line in result.stdout.splitlines()
                   if line.startswith("# ") and line[2:].split(" ", 1)[0] in ("tests", "pass", "fail", "skipped"))
    assert summary["fail"] == "0" and summary["skipped"] == "0", summary
    assert int(summary["pass"]) >= 30, summary  # 26 unit tests and 4 end-to-end ones
    print(f"TypeScript client: {summary['pass']} passed, {summary['fail']} failed")
