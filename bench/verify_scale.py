"""Verify at scale: rows spread over the six tables in PostgreSQL and the mirror, 1% drift planted.

    .venv/bin/python -m bench.verify_scale [--rows 100000 --rows 1000000]

For each size: rows are generated inside PostgreSQL (generate_series), copied into the mirror
in the form the sync engine stores them, one in a hundred altered (missing, different or extra
in turn), then `flask fitkart verify` runs as an operator would run it. Prints wall time,
rows/s, the verify process's peak RSS and whether the drift it found is exactly the drift
planted. Also run at the end of `python -m bench.run`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import psycopg
import pymongo
from psycopg.rows import dict_row
from pymongo import InsertOne

from fitkart_server.model.entities import ENTITIES, Entity
from fitkart_server.sync.engine import SyncEngine
from fitkart_server.sync.write import provenance
from testbed.data.supabase_rows import generate_rows
from testbed.servers.mongo import MongoServer
from testbed.servers.postgres import PostgresServer

# How the rows are spread over the tables (products first: carts and wishlists reference them).
SHARES = {"products": 0.10, "cart_items": 0.20, "wishlist_items": 0.20, "profiles": 0.15, "orders": 0.20,
          "user_roles": 0.15}
DRIFT_EVERY = 100  # one record in a hundred drifts: 1%


def table_sizes(total: int) -> dict[str, int]:
    """Rows per table for `total` rows in all (the remainder goes to cart_items)."""
    sizes = {table: int(total * share) for table, share in SHARES.items()}
    sizes["cart_items"] += total - sum(sizes.values())
    return sizes


def stored(engine: SyncEngine, entity: Entity, row: dict) -> dict:
    """A Supabase row as the mirror stores it: key as `_id`, uuids as text, money per decimal mode."""
    document = {}
    for column, value in row.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, Decimal):
            value = engine.store_money(value)
        document[column] = value
    return {"_id": entity.key_of(document), **document, "_fitkart": provenance("reconcile", 1)}


def drifted(entity: Entity, documents: Iterator[dict], planted: dict[str, int]) -> Iterator[dict]:
    """The documents with every hundredth one missing, changed or joined by an extra one, in turn."""
    for index, document in enumerate(documents):
        if index % DRIFT_EVERY:
            yield document
            continue
        kind = ("missing", "different", "extra")[index // DRIFT_EVERY % 3]
        planted[kind] += 1
        if kind == "different":
            yield {**document, "created_at": document["created_at"] + timedelta(days=1)}
        elif kind == "extra":
            yield document
            extra = {**document, **{name: str(uuid.uuid4()) for name in {entity.key[0], "id"}}}
            yield {**extra, "_id": entity.key_of(extra)}


def fill_mirror(database_url: str, database, engine: SyncEngine) -> dict[str, int]:
    """Copy every table into the mirror with 1% drift; the drift planted, by kind."""
    planted = {"missing": 0, "different": 0, "extra": 0}
    with psycopg.connect(database_url, row_factory=dict_row) as connection:
        for entity in ENTITIES:
            with connection.cursor(name=f"copy_{entity.collection}") as cursor:
                cursor.itersize = 5000
                cursor.execute(f"SELECT * FROM public.{entity.collection}")
                documents = (stored(engine, entity, row) for row in cursor)
                batch = []
                for document in drifted(entity, documents, planted):
                    batch.append(InsertOne(document))
                    if len(batch) == 2000:
                        database[entity.collection].bulk_write(batch, ordered=False)
                        batch = []
                if batch:
                    database[entity.collection].bulk_write(batch, ordered=False)
    return planted


FLASK = os.path.join(os.path.dirname(sys.executable), "flask")


def flask_env(mongodb_uri: str, decimal_mode: str) -> dict:
    """The environment `flask fitkart ...` runs in, against the mirror being measured."""
    return {**os.environ, "FITKART_MONGODB_URI": mongodb_uri, "FITKART_DECIMAL_MODE": decimal_mode,
            "FLASK_APP": "fitkart_server"}


def run_verify(mongodb_uri: str, database_url: str, decimal_mode: str) -> tuple[float, float, dict]:
    """`flask fitkart verify --json` as a child process: wall seconds, its peak RSS in MB, its report."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([FLASK, "fitkart", "verify", "--json", "--database-url", database_url],
                                   env=flask_env(mongodb_uri, decimal_mode), stdout=subprocess.PIPE, stderr=errors)
        output = process.stdout.read()
        process.stdout.close()
        # wait4, not wait: it also gives this one child's resource usage (ru_maxrss, in KiB on Linux).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        if process.returncode not in (0, 1) or not output.strip():  # 0 in sync, 1 drift; 2 is an error
            errors.seek(0)
            sys.exit(f"verify failed ({process.returncode}): {errors.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, json.loads(output)


def found_drift(report: dict) -> dict[str, int]:
    """The drift verify reported, by kind, over all tables."""
    return {kind: sum(table[kind] if isinstance(table[kind], int) else len(table[kind])
                      for table in report["tables"].values()) for kind in ("missing", "different", "extra")}


def measure(postgres: PostgresServer, mongo: MongoServer, total: int, decimal_mode: str) -> dict:
    """Generate `total` rows with 1% drift, verify them; the figures of that one size."""
    name = f"scale_{total}"
    database_url = postgres.create_database(name)
    client = pymongo.MongoClient(mongo.base_uri)
    try:
        began = time.monotonic()
        generate_rows(database_url, **{
            "products": (sizes := table_sizes(total))["products"], "carts": sizes["cart_items"],
            "wishlists": sizes["wishlist_items"], "profiles": sizes["profiles"], "orders": sizes["orders"],
            "roles": sizes["user_roles"]})
        generated = time.monotonic() - began
        client.drop_database(name)
        subprocess.run([FLASK, "fitkart", "init-db"], env=flask_env(f"{mongo.base_uri}/{name}", decimal_mode),
                       check=True, capture_output=True)
        database = client[name]
        began = time.monotonic()
        planted = fill_mirror(database_url, database, SyncEngine(database, decimal_mode=decimal_mode))
        filled = time.monotonic() - began
        seconds, peak_mb, report = run_verify(f"{mongo.base_uri}/{name}", database_url, decimal_mode)
        return {"rows": total, "generate_s": generated, "fill_s": filled, "verify_s": seconds,
                "rows_per_s": total / seconds, "peak_rss_mb": peak_mb, "planted": planted,
                "found": found_drift(report)}
    finally:
        client.drop_database(name)
        client.close()
        postgres.drop_database(name)


def print_table(results: list[dict]) -> None:
    """One line per size."""
    print(f"{'verify at scale: rows':<24}{'verify s':>10}{'rows/s':>10}{'peak RSS MB':>13}  drift planted = found")
    for result in results:
        exact = "yes" if result["planted"] == result["found"] else f"NO: found {result['found']}"
        print(f"{result['rows']:<24,}{result['verify_s']:>10.1f}{result['rows_per_s']:>10,.0f}"
              f"{result['peak_rss_mb']:>13.0f}  {sum(result['planted'].values()):,} {exact}"
              f"  (generate {result['generate_s']:.0f} s, fill mirror {result['fill_s']:.0f} s)", flush=True)


def run_sizes(mongo: MongoServer, sizes: list[int], decimal_mode: str) -> list[dict]:
    """Measure every size against one PostgreSQL and the given mirror server."""
    postgres = PostgresServer().start()
    try:
        return [measure(postgres, mongo, total, decimal_mode) for total in sizes]
    finally:
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows in all (repeatable); "
                        "default 100000 and 1000000")
    args = parser.parse_args()
    mongo = MongoServer().start()
    try:
        decimal_mode = "decimal128" if mongo.supports_decimal128 else "double"
        print(f"database: {mongo.description}", flush=True)
        print_table(run_sizes(mongo, args.rows or [100_000, 1_000_000], decimal_mode))
    finally:
        mongo.remove()


if __name__ == "__main__":
    main()
