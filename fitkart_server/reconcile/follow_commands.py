"""`flask fitkart follow | drop-slot`: the mirror fed from Supabase's write-ahead log."""

import signal
import sys
import threading
import time

import click
import psycopg
from flask import current_app
from flask.cli import with_appcontext
from pymongo.errors import ConnectionFailure, PyMongoError

from ..clock import utc_now
from ..model.documents import FOLLOW
from ..model.entities import ENTITIES
from ..storage.commands import ERROR, database_or_exit, job_store
from ..storage.store import DatabaseUnavailable, Store
from ..sync.write import RecordRejected
from . import repair
from .commands import compare_all
from .follow import TABLES, Follower, FollowTotals
from .sources import PostgresSource, SourceError
from .wal import DEFAULT_SLOT, PostgresUnavailable, WalSetupError, WalSlot

# What ends a run with exit 2 (a message, never a trace); --retry waits out those that are_transient.
FAILURES = (psycopg.Error, PostgresUnavailable, SourceError, DatabaseUnavailable, PyMongoError)
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0

database_url_option = click.option(
    "--database-url", envvar="SUPABASE_DB_URL", metavar="URL", required=True,
    help="Direct Postgres connection of a role with REPLICATION, postgresql://postgres:...@db.<ref>.supabase.co:5432/"
         "postgres (env SUPABASE_DB_URL).")
slot_option = click.option("--slot", default=DEFAULT_SLOT, show_default=True, help="The replication slot's name.")


def opened_slot(database_url: str, slot: str) -> WalSlot:
    """The slot's connection, or exit 2 naming what to change."""
    try:
        return WalSlot(database_url, TABLES, slot)
    except WalSetupError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(ERROR)


@click.command("follow")
@with_appcontext
@database_url_option
@slot_option
@click.option("--once", is_flag=True, help="Apply what the log holds now, then exit (for cron).")
@click.option("--no-snapshot", is_flag=True, help="When the slot is new, do not copy the tables first.")
@click.option("--poll-seconds", default=1.0, show_default=True, help="Pause when the log has nothing new.")
@click.option("--max-changes", default=1000, show_default=True,
              help="Changes read per batch (whole transactions, so a large one comes whole).")
@click.option("--lag-warning-mb", type=int, help="Warn when PostgreSQL keeps more WAL than this for the slot "
              "[default: FITKART_LAG_WARNING_MB, 1024].")
@click.option("--lag-warning-seconds", type=int, help="Warn when the changes being applied were committed longer "
              "ago than this [default: FITKART_LAG_WARNING_SECONDS, 300].")
@click.option("--resync", is_flag=True,
              help="Start over after the slot was lost or dropped: a new slot, a copy of the tables, and a repair "
                   "(removing what Supabase deleted meanwhile).")
@click.option("--retry", is_flag=True,
              help="When either database restarts or cannot be reached, start again after a pause (1 s, doubling "
                   "to 60 s) instead of exiting; set-up errors and refusals still exit 2.")
def follow_command(database_url, slot, once, no_snapshot, poll_seconds, max_changes, lag_warning_mb,
                   lag_warning_seconds, resync, retry):
    """Apply every committed change of the six tables to the mirror, in commit order, from a replication slot.

    Creates the slot (wal2json) on first use and copies the tables from a snapshot taken after it,
    so nothing falls between copy and stream. Each batch of whole transactions goes through the
    sync engine as Supabase's own writes (source `wal`: whole rows, deletes by id, truncates), is
    recorded in `sync_follow`, and only then confirmed to PostgreSQL: a follower killed anywhere
    resumes where the mirror stands, replaying rather than skipping. One follower per slot (an
    advisory lock). SIGTERM or Ctrl-C stops after the current transaction (during the copy, after the
    current page). With --retry a database restarting or out of reach is waited out. Exit status: 0
    stopped or done, 2 the database is not set up for it (named), another follower holds the slot, a
    refusal, or (without --retry) either database failed.
    """
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    pause, store = RETRY_FIRST_SECONDS, job_store()
    config = current_app.config
    warn_at = (config["FITKART_LAG_WARNING_MB"] if lag_warning_mb is None else lag_warning_mb) * 1024 * 1024, (
        config["FITKART_LAG_WARNING_SECONDS"] if lag_warning_seconds is None else lag_warning_seconds)
    try:
        while True:
            started = time.monotonic()
            try:
                totals = follow_once(store, database_url, slot, stop, once=once, snapshot=not no_snapshot,
                                     poll_seconds=poll_seconds, max_changes=max_changes,
                                     warn_at=warn_at, resync=resync)
                break
            except FAILURES as error:
                if not retry or stop.is_set() or not is_transient(error):
                    click.echo(f"error: {failure(error)}", err=True)
                    sys.exit(ERROR)
                if resync and resync_recorded(store, slot):
                    resync = False  # the old slot is gone and the repair is due at the next start: not again
                if time.monotonic() - started > RETRY_MAX_SECONDS:
                    pause = RETRY_FIRST_SECONDS  # it had been running: a new failure starts the pauses over
                click.echo(f"warning: {failure(error)}; starting again in {pause:g} s (--retry)", err=True)
                if stop.wait(pause):
                    return
                pause = min(pause * 2, RETRY_MAX_SECONDS)
            except (WalSetupError, RecordRejected) as error:  # RecordRejected: a record contended past retrying
                click.echo(f"error: {error}", err=True)
                sys.exit(ERROR)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    click.echo(f"slot {slot}: {totals.transactions} transaction(s), {totals.changes} change(s) applied, "
               f"{totals.rejected} refused, {totals.snapshot_rows} row(s) copied; "
               f"lag {totals.lag_bytes:,} bytes, {totals.lag_seconds:.1f} s")


def follow_once(store: Store, database_url: str, slot: str, stop: threading.Event, *, once: bool, snapshot: bool,
                poll_seconds: float, max_changes: int, warn_at: tuple[int, float],
                resync: bool = False) -> FollowTotals:
    """One run of the follower, until `stop` (or, with `once`, until the log is drained); raises what ended it.

    With `resync`, the new slot's copy is followed by a repair before streaming: the copy adds and
    updates, and the repair removes the records Supabase deleted while there was no slot.
    """
    engine = store.engine()
    wal = WalSlot(database_url, TABLES, slot)
    try:
        follower = Follower(engine, wal, max_changes=max_changes, lag_warning_bytes=warn_at[0],
                            lag_warning_seconds=warn_at[1])
        if not follower.prepare(database_url, stop, snapshot=snapshot, resync=resync):
            return follower.totals
        if (engine.database[FOLLOW].find_one({"_id": slot}) or {}).get("resync") == "pending":
            # Due since the old slot was dropped, until it is done: a resync cut short repairs at the next start.
            if not resynced(engine, database_url, stop):
                return follower.totals
            engine.database[FOLLOW].update_one({"_id": slot}, {"$unset": {"resync": ""}})
        return follower.run(stop, once=once, poll_seconds=poll_seconds)
    finally:
        wal.close()


def resynced(engine, database_url: str, stop: threading.Event) -> bool:
    """Repair the mirror against Supabase now (what `flask fitkart repair` does), and say what it did; False: stopped
    (SIGTERM) before the end, to run again at the next start."""
    pages = repair.RepairPages(engine)
    source = PostgresSource(database_url)
    try:
        started = utc_now()
        compare_all(engine, source, ENTITIES, pages.add, stop=stop)
        pages.flush()
        repair.record_run(engine.database, "repair", source, started, pages.done,
                          "partial" if pages.refused_count else "repaired")
    except repair.Stopped:
        pages.flush()  # what was decided is written: the next start's repair finds less to do
        click.echo("resync: stopped during the repair; it runs again at the next start")
        return False
    finally:
        source.close()
    done = {name: counts for name, counts in pages.done.items() if any(counts.values())}
    click.echo(f"resync: repaired {done or 'nothing'}")
    return True


def is_transient(error: Exception) -> bool:
    """A database restarting or out of reach, which waiting mends (not a refusal, a bad grant or a cancel)."""
    if isinstance(error, psycopg.errors.QueryCanceled):
        return False  # a statement_timeout or an operator: waiting would only meet it again
    return isinstance(error, PostgresUnavailable | SourceError | DatabaseUnavailable | ConnectionFailure
                      | psycopg.OperationalError | psycopg.InterfaceError)


def resync_recorded(store: Store, slot: str) -> bool:
    """Whether a --resync got as far as recording itself (the old slot dropped, its repair due at the next start)."""
    try:
        return (store.database()[FOLLOW].find_one({"_id": slot}) or {}).get("resync") == "pending"
    except (PyMongoError, DatabaseUnavailable):
        return False


def failure(error: Exception) -> str:
    """What failed, in one line, without secrets (as errors_exit says it)."""
    if isinstance(error, psycopg.Error):
        return f"PostgreSQL failed: {error.__class__.__name__}: {error}"
    if isinstance(error, PyMongoError):
        return f"the mirror's database failed: {error.__class__.__name__}: {error}"
    return str(error)


@click.command("drop-slot")
@with_appcontext
@database_url_option
@slot_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop_slot_command(database_url, slot, yes):
    """Drop the follower's replication slot, so PostgreSQL stops keeping WAL for it.

    An abandoned slot makes PostgreSQL keep every change forever. After dropping it, the next
    `follow` creates a new slot and copies the tables again. Exit status: 0 dropped or absent, 2 error.
    """
    wal = opened_slot(database_url, slot)
    try:
        if not yes and not click.confirm(f"Drop slot {slot!r}? The follower then starts over with a full copy."):
            return
        click.echo(f"dropped slot {slot}" if wal.drop() else f"no slot named {slot}")
        database_or_exit().database[FOLLOW].delete_one({"_id": slot})  # its position means nothing now
    except WalSetupError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(ERROR)
    finally:
        wal.close()


COMMANDS = (follow_command, drop_slot_command)
