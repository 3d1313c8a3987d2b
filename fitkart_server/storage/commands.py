"""`flask fitkart init-db | spool`, and what every `flask fitkart` command shares: exit status, the job's engine."""

import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from .replay import UNREACHABLE, Replayer, get_replayer, get_spool
from .spool import salvage
from .store import DatabaseUnavailable, Store, get_store

ERROR = 2  # the exit status of a command that could not do its work
BUSY = 3  # `spool --replay`: a server process is replaying the spool right now (it will drain it)


def job_store() -> Store:
    """The store for a long job (replies may take minutes), closed with the command."""
    store = get_store().for_jobs()
    if store is not get_store():
        click.get_current_context().call_on_close(store.close)
    return store


def database_or_exit():
    """The sync engine for a long job, or exit 2 with the reason."""
    try:
        return job_store().engine()
    except DatabaseUnavailable as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(ERROR)


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the collections' indexes (safe to run again)."""
    store = get_store()
    try:
        store.database()
    except DatabaseUnavailable as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Indexes ready in {store.description}.")


@click.command("spool")
@with_appcontext
@click.option("--replay", is_flag=True, help="Apply the queued writes now (the server also does it by itself).")
@click.option("--drop", is_flag=True, help="Forget every queued write, after confirming: they are lost.")
@click.option("--yes", is_flag=True, help="With --drop: do not ask.")
@click.option("--file", "set_aside", type=click.Path(exists=True, dir_okay=False),
              help="Read a spool file set aside as damaged instead: every entry it still yields, as JSON lines.")
def spool_command(replay: bool, drop: bool, yes: bool, set_aside: str | None) -> None:
    """Show the writes queued while the database was away; replay or drop them.

    Exit status: 0 done (or nothing queued), 2 the database is still away (or, with --file, the file could not
    be read to its end), 3 a server process is replaying it.
    """
    if set_aside:
        read_set_aside(set_aside)
        return
    spool = get_spool()
    if spool.problem:
        click.echo(f"warning: {spool.problem}", err=True)
    depth = spool.depth()
    click.echo(f"spool: {spool.path}")
    click.echo(f"queued writes: {depth.entries:,} ({depth.bytes:,} of {spool.max_bytes:,} bytes), "
               f"oldest {depth.oldest_seconds:,.0f} s ago")
    for entry in spool.head(10):
        who = entry.caller.user_id or entry.caller.role
        click.echo(f"  #{entry.seq} {entry.kind:<7}{entry.collection or '-':<16}{entry.source:<9}{who}")
    if drop and depth.entries:
        if yes or click.confirm(f"Drop {depth.entries:,} queued writes? They will never reach the mirror."):
            click.echo(f"dropped {spool.drop_all():,} queued writes")
        return
    if replay and depth.entries:
        # This process's own replayer (started with the app when the spool held anything) stands down first: one
        # replayer per process, or two would share one lease owner. The command drains with one of its own.
        if not get_replayer().stop() or not spool.take_lease():
            click.echo("a server process is replaying the spool right now; it will drain it", err=True)
            sys.exit(BUSY)
        try:
            done = Replayer(spool, current_app.extensions["fitkart_store"]).replay()
        except (*UNREACHABLE, DatabaseUnavailable) as error:
            click.echo(f"error: the database is still away ({error.__class__.__name__}); nothing more applied",
                       err=True)
            sys.exit(ERROR)
        finally:
            spool.release_lease()
        click.echo(f"replayed {done:,} queued writes into {current_app.extensions['fitkart_store'].description}")


def read_set_aside(path: str) -> None:
    """`spool --file`: what a damaged spool file still yields, one JSON line an entry; exit 2 if it stops early."""
    rows, stopped = salvage(path)
    for seq, kind, collection, source, who, body in rows:
        click.echo(json.dumps({"seq": seq, "op": kind, "collection": collection, "source": source, "by": who,
                               "record": body}, ensure_ascii=False))
    click.echo(f"read {len(rows):,} entries of {path}" + (f"; stopped at: {stopped}" if stopped else ""), err=True)
    if stopped:
        sys.exit(ERROR)


COMMANDS = (init_db_command, spool_command)
