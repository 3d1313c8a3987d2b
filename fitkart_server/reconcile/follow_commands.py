"""`flask fitkart follow | drop-slot`: the mirror fed from Supabase's write-ahead log."""

import signal
import sys
import threading

import click
import psycopg
from flask.cli import with_appcontext

from ..model.documents import FOLLOW
from ..storage.commands import ERROR, database_or_exit
from ..sync.write import RecordRejected
from .commands import errors_exit
from .follow import TABLES, Follower
from .wal import DEFAULT_SLOT, WalSetupError, WalSlot

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
@click.option("--lag-warning-mb", default=1024, show_default=True,
              help="Warn when PostgreSQL keeps more WAL than this for the slot.")
def follow_command(database_url, slot, once, no_snapshot, poll_seconds, max_changes, lag_warning_mb):
    """Apply every committed change of the six tables to the mirror, in commit order, from a replication slot.

    Creates the slot (wal2json) on first use and copies the tables from a snapshot taken after it,
    so nothing falls between copy and stream. Each batch of whole transactions goes through the
    sync engine as Supabase's own writes (source `wal`: whole rows, deletes by id, truncates), is
    recorded in `sync_follow`, and only then confirmed to PostgreSQL: a follower killed anywhere
    resumes where the mirror stands, replaying rather than skipping. One follower per slot (an
    advisory lock). SIGTERM or Ctrl-C stops after the current transaction (during the copy, after the
    current page). Exit status: 0 stopped or done, 2 the database is not set up for it (named), another
    follower holds the slot, or either database failed.
    """
    engine = database_or_exit()
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    wal = opened_slot(database_url, slot)
    follower = Follower(engine, wal, max_changes=max_changes, lag_warning_bytes=lag_warning_mb * 1024 * 1024)
    try:
        with errors_exit():
            copied = follower.prepare(database_url, stop, snapshot=not no_snapshot)
            totals = follower.run(stop, once=once, poll_seconds=poll_seconds) if copied else follower.totals
    except (WalSetupError, RecordRejected) as error:  # RecordRejected: a record contended past retrying
        click.echo(f"error: {error}", err=True)
        sys.exit(ERROR)
    except psycopg.Error as error:  # PostgreSQL went away: what was applied is confirmed or replays on restart
        click.echo(f"error: PostgreSQL failed: {error.__class__.__name__}: {error}", err=True)
        sys.exit(ERROR)
    finally:
        wal.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    click.echo(f"slot {slot}: {totals.transactions} transaction(s), {totals.changes} change(s) applied, "
               f"{totals.rejected} refused, {totals.snapshot_rows} row(s) copied; "
               f"lag {totals.lag_bytes:,} bytes, {totals.lag_seconds:.1f} s")


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
