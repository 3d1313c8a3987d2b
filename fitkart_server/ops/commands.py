"""`flask fitkart stats | rejects [--replay ID]`: the status page's facts in a terminal."""

import json
import sys

import click
from bson import ObjectId
from bson.errors import InvalidId
from flask import current_app
from flask.cli import with_appcontext

from ..clock import utc_now
from ..model.documents import REJECTS
from ..model.entities import BY_COLLECTION
from ..model.policy import Forbidden
from ..reconcile.follow import follow_state
from ..reconcile.slotwatch import follower_warnings, read_slot
from ..storage.commands import ERROR, database_or_exit
from ..storage.store import get_store
from ..sync.engine import SyncEngine
from ..sync.write import RecordRejected
from .stats import collection_stats, latest_rejects

REPLAYABLE = ("upsert", "delete")


def _when(moment) -> str:
    """A stored time as the terminal shows it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@click.command("stats")
@with_appcontext
@click.option("--database-url", metavar="URL",
              help="Also read each follower's slot from PostgreSQL now, as it stands even while the follower is "
                   "stopped [default: SUPABASE_DB_URL].")
def stats_command(database_url):
    """Per collection: documents, last write and its source, writes in the last hour; each WAL follower."""
    engine = database_or_exit()
    click.echo(f"mirror: {get_store().description}; {_money(engine)}; writes use the {engine.write_plan} plan")
    click.echo(f"{'collection':<16}{'documents':>11}  {'last write (UTC)':<20}{'source':<11}{'writes/hour':>11}")
    for row in collection_stats(engine.database):
        click.echo(f"{row.name:<16}{row.documents:>11,}  {_when(row.last_write_at):<20}"
                   f"{row.last_write_source or '-':<11}{row.writes_last_hour:>11,}")
    for follower in follow_state(engine.database):
        click.echo(f"WAL follower {follower['_id']}: {follower.get('state') or '-'} at "
                   f"{follower.get('confirmed_lsn') or '-'}, last commit applied "
                   f"{_when(follower.get('last_commit_at'))}, lag {follower.get('lag_bytes') or 0:,} bytes, "
                   f"{follower.get('lag_seconds') or 0} s, WAL kept {follower.get('retained_bytes') or 0:,} bytes "
                   f"(measured {_when(follower.get('measured_at'))}), {follower.get('total_changes') or 0:,} changes")
        url = database_url or current_app.config.get("SUPABASE_DB_URL")
        reading = read_slot(url, follower["_id"]) if url else None
        if reading is not None:
            click.echo(f"  slot {follower['_id']} now: {reading.summary()}")
        for warning in follower_warnings(follower, reading, current_app.config):
            click.echo(f"  warning: {warning}")


def _money(engine: SyncEngine) -> str:
    """How the engine stores money (the mode FITKART_DECIMAL_MODE chose), and whether it cannot."""
    if engine.money_refusal is not None:
        return f"money stored as {engine.decimal_mode}: refused here ({engine.money_refusal()})"
    return f"money stored as {engine.decimal_mode}"


@click.command("rejects")
@with_appcontext
@click.option("--limit", default=20, show_default=True, help="How many of the newest rejects to list.")
@click.option("--replay", "replay_id", metavar="ID", help="Re-submit this reject through the write engine.")
def rejects_command(limit: int, replay_id: str | None):
    """List refused writes, newest first; or replay one after its cause was fixed.

    A replay applies the stored record (or delete) with the engine's full rules, as its
    original source. Writes refused as another user's rows (403) and payloads cut at
    64 KiB are not replayed. Exit status: 0 done, 1 refused again, 2 error.
    """
    engine = database_or_exit()
    if replay_id is not None:
        sys.exit(replay(engine, replay_id))
    click.echo(f"{'id':<26}{'time (UTC)':<21}{'status':<7}{'op':<8}{'collection':<16}reason")
    for reject in latest_rejects(engine.database, limit):
        mark = " [replayed]" if reject.get("replayed_at") else ""
        click.echo(f"{reject['_id']!s:<26}{_when(reject['at']):<21}{reject.get('status') or '-'!s:<7}"
                   f"{reject.get('op') or '-':<8}{reject.get('collection') or '-':<16}{reject['reason']}{mark}")


def replay(engine: SyncEngine, reject_id: str) -> int:
    """Apply one stored reject again; the exit status."""
    rejects = engine.database[REJECTS]
    try:
        reject = rejects.find_one({"_id": ObjectId(reject_id)})
    except InvalidId:
        reject = None
    if reject is None:
        click.echo(f"error: no reject {reject_id}", err=True)
        return ERROR
    problem = _not_replayable(reject)
    if problem:
        click.echo(f"error: reject {reject_id} cannot be replayed: {problem}", err=True)
        return ERROR
    entity = BY_COLLECTION[reject["collection"]]
    payload = json.loads(reject["payload"])
    route = f"flask fitkart rejects --replay {reject_id}"
    try:
        if reject["op"] == "delete":
            result = f"deleted {engine.delete_records(entity, payload, source=reject['source'], route=route)}"
        else:
            result = engine.upsert_record(entity, payload, source=reject["source"], route=route).result
    except (RecordRejected, Forbidden) as refusal:
        click.echo(f"refused again: {refusal.message} (kept as a new reject)")
        return 1
    rejects.update_one({"_id": reject["_id"]}, {"$set": {"replayed_at": utc_now(), "replay_result": result}})
    click.echo(f"replayed {reject_id}: {entity.collection} {result}")
    return 0


def _not_replayable(reject: dict) -> str | None:
    """Why a reject cannot be replayed, or None."""
    if reject.get("op") not in REPLAYABLE or reject.get("collection") not in BY_COLLECTION:
        return "it is not one record's upsert or delete (a malformed batch or webhook)"
    if reject.get("status") == 403:
        return "it was refused as another user's row; replaying it as an operator would bypass that"
    if reject.get("status") == 400:  # a batch record nested past MAX_JSON_DEPTH: no client may send it as it is
        return "its record is nested deeper than a request may be; replaying it would bypass that limit"
    if reject.get("payload_truncated"):
        return "its payload was cut at 64 KiB when stored"
    if reject.get("source") not in ("client", "webhook", "reconcile"):
        return f"unknown source {reject.get('source')!r}"
    return None


COMMANDS = (stats_command, rejects_command)
