"""Where settings come from: the environment, `.env` in the working directory, and `instance/config.py`.

Each case runs `create_app()` in a fresh interpreter, from a copy of the package in a temporary
directory (so its instance folder, where Flask looks next to the package, is temporary too) and
a temporary working directory: nothing in the repository is written.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fitkart_server

PACKAGE = Path(fitkart_server.__file__).resolve().parent
SETTINGS = ("FITKART_MONGODB_URI", "FITKART_MAX_BATCH", "FITKART_TOMBSTONE_DAYS", "FITKART_REJECTS_DAYS",
            "FITKART_REJECTS_RATE")
REPORT = """
import json, sys
from fitkart_server import create_app
how, names = sys.argv[1], sys.argv[2:]
app = create_app({"TESTING": True} if how == "test-config" else None)
print(json.dumps({"package": __import__("fitkart_server").__file__, "instance_path": app.instance_path,
                  **{name: app.config[name] for name in names}}))
app.extensions["fitkart_replayer"].stop()
"""


@pytest.fixture
def place(tmp_path) -> dict[str, Path]:
    """A copy of the package with its own (empty) instance folder, and a working directory."""
    site, work, script = tmp_path / "site", tmp_path / "work", tmp_path / "bin" / "report.py"
    shutil.copytree(PACKAGE, site / "fitkart_server", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "instance").mkdir()
    work.mkdir()
    # A script file, as `flask` and `gunicorn` are (under `python -c`, python-dotenv always looks in the
    # working directory, which would hide where it looks otherwise).
    script.parent.mkdir()
    script.write_text(REPORT)
    return {"site": site, "instance": site / "instance", "work": work, "script": script}


def settings(place: dict[str, Path], environment: dict[str, str], how: str = "no-test-config") -> dict:
    """The settings create_app() ends up with, run from `place` with these environment variables."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith(("FITKART_", "SUPABASE_", "PROMETHEUS_", "FLASK_", "PYTHON"))}
    env = {**inherited, "PYTHONPATH": str(place["site"]), **environment}
    result = subprocess.run([sys.executable, str(place["script"]), how, *SETTINGS], cwd=place["work"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert Path(found["package"]).is_relative_to(place["site"])  # the copy, not the repository's package
    # So the files it keeps there (rate-limit counters, spool) are the temporary directory's too.
    assert Path(found["instance_path"]) == place["instance"]
    assert (place["instance"] / "spool.sqlite3").exists()
    return found


def test_dotenv_in_the_working_directory_fills_in_what_the_environment_leaves_unset(place):
    """`.env` in the working directory is read; a variable also set in the environment keeps the environment's value."""
    (place["work"] / ".env").write_text("FITKART_MONGODB_URI=embedded\nFITKART_TOMBSTONE_DAYS=12\n"
                                        "FITKART_REJECTS_DAYS=6\nFITKART_REJECTS_RATE='5 per minute'\n")
    found = settings(place, {"FITKART_REJECTS_DAYS": "5"})
    assert found["FITKART_MONGODB_URI"] == "embedded"
    assert found["FITKART_TOMBSTONE_DAYS"] == 12 and found["FITKART_REJECTS_RATE"] == "5 per minute"
    assert found["FITKART_REJECTS_DAYS"] == 5
    assert found["FITKART_MAX_BATCH"] == 1000  # in neither: the default


def test_instance_config_overrides_the_environment_and_dotenv(place):
    """instance/config.py, read when create_app() gets no test config, wins over the environment and `.env`."""
    (place["work"] / ".env").write_text("FITKART_TOMBSTONE_DAYS=12\nFITKART_REJECTS_DAYS=6\n")
    (place["instance"] / "config.py").write_text('FITKART_MONGODB_URI = "embedded"\nFITKART_MAX_BATCH = 7\n'
                                                 "FITKART_REJECTS_DAYS = 3\n")
    found = settings(place, {"FITKART_MAX_BATCH": "9"})
    assert found["FITKART_MONGODB_URI"] == "embedded"
    assert found["FITKART_MAX_BATCH"] == 7 and found["FITKART_REJECTS_DAYS"] == 3
    assert found["FITKART_TOMBSTONE_DAYS"] == 12  # not in instance/config.py: `.env` still counts

    # With a test config, instance/config.py is not read: the environment's value stands.
    tested = settings(place, {"FITKART_MAX_BATCH": "9", "FITKART_MONGODB_URI": "embedded"}, how="test-config")
    assert tested["FITKART_MAX_BATCH"] == 9 and tested["FITKART_REJECTS_DAYS"] == 6
