"""The TypeScript client (clients/typescript): it builds, and its unit and end-to-end tests pass.

The end-to-end tests start this repository's Flask server themselves, on the database
server these fixtures started, so they prove the client against the real thing.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
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
    """`npm run build` emits ESM and CommonJS .js with .d.ts beside them."""
    result = run(npm, "run", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in ("dist", "dist/cjs"):
        for name in ("index", "client", "store", "indexeddb", "coordination", "token", "records", "types", "owner",
                     "sender", "batching", "transport", "status", "events"):
            assert (CLIENT / folder / f"{name}.js").is_file()
            assert (CLIENT / folder / f"{name}.d.ts").is_file()
    declarations = (CLIENT / "dist" / "types.d.ts").read_text()
    assert "syncCartItem(item: CartItemRecord): Promise<void>;" in declarations


# What a fresh clone of the package holds (dist/ is built, never committed).
SOURCES = ("src", "scripts", "package.json", "package-lock.json", "README.md", "tsconfig.json",
           "tsconfig.build.json", "tsconfig.cjs.json")


def test_a_fresh_clone_packs_the_code_its_types_and_readable_source_maps(npm, tmp_path):
    """`npm pack` of a clone without dist/ builds it (prepare) and ships ESM, CommonJS, types and maps with sources."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in SOURCES:
        source = CLIENT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, clone / name)
    (clone / "node_modules").symlink_to(CLIENT / "node_modules")  # as `npm ci` installed them
    packed = subprocess.run([npm, "pack", "--json", "--pack-destination", str(tmp_path)], cwd=clone,
                            capture_output=True, text=True, timeout=600)
    assert packed.returncode == 0, packed.stdout[-3000:] + packed.stderr[-3000:]
    report = json.loads(packed.stdout[packed.stdout.index("["):])[0]
    files = {entry["path"] for entry in report["files"]}
    for folder in ("dist", "dist/cjs"):
        assert {f"{folder}/index.js", f"{folder}/index.d.ts", f"{folder}/client.js", f"{folder}/client.d.ts"} <= files
    assert "dist/cjs/package.json" in files and "README.md" in files
    assert not any(path.startswith(("src/", "test/", "node_modules/")) for path in files), sorted(files)

    installed = tmp_path / "shop" / "node_modules"
    (installed / "@fitkart").mkdir(parents=True)
    with tarfile.open(tmp_path / report["filename"]) as tarball:
        tarball.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "package").rename(installed / "@fitkart" / "local-sync")
    (installed / "idb").symlink_to(CLIENT / "node_modules" / "idb")
    package = installed / "@fitkart" / "local-sync"
    for map_file in package.glob("dist/**/*.js.map"):
        source_map = json.loads(map_file.read_text())
        assert source_map.get("sourcesContent") and all(source_map["sourcesContent"]), map_file  # no src/ needed

    node = shutil.which("node")
    for program, kind in (("import('@fitkart/local-sync').then((m) => console.log(typeof m.createLocalSync))", "esm"),
                          ("console.log(typeof require('@fitkart/local-sync').createLocalSync)", "cjs")):
        loaded = subprocess.run([node, "-e", program], cwd=tmp_path / "shop", capture_output=True, text=True,
                                timeout=60)
        assert loaded.stdout.strip() == "function", (kind, loaded.stdout, loaded.stderr)


def test_unit_and_end_to_end_tests_pass(npm, database_uri, decimal_mode):
    """node's test runner: unit tests on a fake fetch, end-to-end on the real server and database."""
    result = run(npm, "test", env={"FITKART_E2E_PYTHON": sys.executable, "FITKART_E2E_MONGODB_URI": database_uri,
                                   "FITKART_E2E_DECIMAL_MODE": decimal_mode})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = dict(line[2:].split(" ", 1) for line in result.stdout.splitlines()
                   if line.startswith("# ") and line[2:].split(" ", 1)[0] in ("tests", "pass", "fail", "skipped"))
    assert summary["fail"] == "0" and summary["skipped"] == "0", summary
    assert int(summary["pass"]) >= 75, summary  # 71 unit tests and 4 end-to-end ones
    print(f"TypeScript client: {summary['pass']} passed, {summary['fail']} failed")


def test_the_end_to_end_tests_fail_rather_than_skip_without_their_server(npm):
    """Without FITKART_E2E_PYTHON and FITKART_E2E_MONGODB_URI the end-to-end file fails, naming how to run it."""
    assert run(npm, "run", "pretest").returncode == 0
    environment = {name: value for name, value in os.environ.items() if not name.startswith("FITKART_E2E_")}
    result = subprocess.run([shutil.which("node"), "--test", "build-test/test/e2e.test.js"], cwd=CLIENT,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "tests/test_typescript_client.py" in result.stdout + result.stderr
    assert "# skipped 0" in result.stdout
