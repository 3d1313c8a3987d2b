"""`flask fitkart follow` as its own process, as an operator runs it (for the tests and the benchmark)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def start_follower(mongo_uri: str, database_url: str, *options: str, log=subprocess.DEVNULL) -> subprocess.Popen:
    """The follower on `database_url` into `mongo_uri`, with no setting of this environment's but those two."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("FITKART_")}
    environment.update(FITKART_MONGODB_URI=mongo_uri, SUPABASE_DB_URL=database_url)
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "fitkart_server", "fitkart", "follow", *options],
                            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
