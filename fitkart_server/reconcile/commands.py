"""`flask fitkart verify | repair | backfill | migrate-legacy | convert-money`: the mirror against Supabase."""

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask.cli import with_appcontext
from pymongo.errors import PyMongoError

from ..bounds import cut
from ..clock import utc_now
from ..config import MONEY_FORMS
from ..model.entities import BY_COLLECTION, ENTITIES, Entity
from ..storage.commands import ERROR, database_or_exit
from ..storage.store import DatabaseUnavailable, get_store
from ..sync.engine import SyncEngine
from . import compare, ids, legacy, money, repair
from .sources import PostgresSource, RestSource, Source, SourceError

IN_SYNC, DRIFT = 0, 1
# Characters of one value in verify's text lines (as log lines are cut): the start and end around an ellipsis.
SHOWN_CHARACTERS = 200

source_options = [
    click.option("--database-url", envvar="SUPABASE_DB_URL", metavar="URL",
                 help="Direct Postgres connection, postgresql://postgres:...@db.<ref>.supabase.co:5432/postgres "
                      "(env SUPABASE_DB_URL)."),
    click.option("--supabase-url", envvar="SUPABASE_URL", metavar="URL",
                 help="https://<ref>.supabase.co, read through its REST API (env SUPABASE_URL)."),
    click.option("--service-role-key", envvar="SUPABASE_SERVICE_ROLE_KEY", metavar="KEY",
                 help="The service_role key, for the REST API (env SUPABASE_SERVICE_ROLE_KEY)."),
    click.option("--table", "tables", multiple=True, type=click.Choice(list(BY_COLLECTION)),
                 help="Only this table (repeatable). Default: all six."),
]


def with_source_options(command):
    """Add the options that choose the Supabase side and the tables."""
    for option in reversed(source_options):
        command = option(command)
    return command


@contextmanager
def opened_source(database_url: str | None, supabase_url: str | None, key: str | None) -> Iterator[Source]:
    """The Supabase side the options name: Postgres when given, else REST."""
    if database_url:
        source = PostgresSource(database_url)
    elif supabase_url and key:
        source = RestSource(supabase_url, key)
    else:
        raise click.UsageError("Give --database-url, or --supabase-url with --service-role-key.")
    try:
        yield source
    finally:
        source.close()


def chosen(tables: tuple[str, ...]) -> list[Entity]:
    """The entities of the chosen tables, in declaration order."""
    return [entity for entity in ENTITIES if not tables or entity.collection in tables]


@contextmanager
def progress(label: str, length: int) -> Iterator:
    """A progress bar on a terminal (stderr), nothing otherwise; yields its advance function."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label.ljust(15), file=sys.stderr) as bar:
        yield bar.update


@contextmanager
def errors_exit() -> Iterator[None]:
    """Either side failing mid-run is an error (exit 2) with its reason, never drift (1) or a trace."""
    try:
        yield
    except (SourceError, DatabaseUnavailable) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(ERROR)
    except PyMongoError as error:
        click.echo(f"error: the mirror's database failed: {error.__class__.__name__}: {error}", err=True)
        sys.exit(ERROR)


def compare_all(engine, source: Source, entities: list[Entity], on_drift=None,
                stop: threading.Event | None = None) -> dict[str, compare.TableReport]:
    """Compare each table, calling `on_drift` for every drifting record; `stop` set ends it (repair.Stopped) at the
    next page or drift."""
    def stopped() -> None:
        if stop is not None and stop.is_set():
            raise repair.Stopped

    reports = {}
    for entity in entities:
        report = compare.TableReport(entity.collection)
        with progress(entity.collection, source.count(entity.collection)) as shown:
            def advance(rows: int, shown=shown) -> None:
                stopped()
                shown(rows)

            for drift in compare.compare_table(entity, source, engine.database, report, advance):
                report.add(drift)
                if on_drift:
                    on_drift(entity, drift)
                stopped()
        reports[entity.collection] = report
    return reports


def summary_table(reports: dict[str, compare.TableReport]) -> str:
    """The per-table counts as an aligned text table."""
    lines = [f"{'table':<16}{'supabase':>10}{'mirror':>10}{'missing':>9}{'extra':>7}{'differ':>8}"]
    for name, report in reports.items():
        lines.append(f"{name:<16}{report.supabase_rows:>10}{report.mirror_rows:>10}{len(report.missing):>9}"
                     f"{len(report.extra):>7}{len(report.different):>8}")
    return "\n".join(lines)


def details(reports: dict[str, compare.TableReport], show: int) -> Iterator[str]:
    """Lines naming the drifting records, at most `show` of each kind per table."""
    for name, report in reports.items():
        for kind, label in (("missing", "only in Supabase"), ("extra", "only in the mirror")):
            for key in getattr(report, kind)[:show]:
                yield f"{name} {_key_text(key)}: {label}"
        for entry in report.different[:show]:
            for difference in entry["fields"]:
                if difference.get("only_in_mirror"):
                    yield (f"{name} {_key_text(entry['key'])}: {difference['field']} is no Supabase column: "
                           f"mirror={shown_value(difference['mirror'])}")
                    continue
                yield (f"{name} {_key_text(entry['key'])}: {difference['field']} differs: "
                       f"supabase={shown_value(difference['supabase'])} mirror={shown_value(difference['mirror'])}")
        hidden = sum(max(0, len(getattr(report, kind)) - show) for kind in ("missing", "extra", "different"))
        if hidden:
            yield f"{name}: {hidden} more (use --json or --show)"


def shown_value(value) -> str:
    """A value as verify prints it: JSON, cut to SHOWN_CHARACTERS (a value may be a megabyte; --json has it all)."""
    return cut(json.dumps(value, default=str), SHOWN_CHARACTERS)


def _key_text(key: dict) -> str:
    return " ".join(f"{name}={value}" for name, value in key.items())


@click.command("verify")
@with_appcontext
@with_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--show", default=20, show_default=True, help="Drifting records listed per table and kind.")
def verify_command(database_url, supabase_url, service_role_key, tables, as_json, show):
    """Compare Supabase with the mirror, table by table.

    Reports rows only in Supabase, documents only in the mirror, and records whose values
    differ (each differing field with both values). Values are normalised before
    comparing: uuid case; timestamps in UTC to the millisecond (BSON dates hold no more);
    numeric(10,2) as decimals whether the mirror stored Decimal128, double or string;
    text[] as lists; jsonb as JSON values. A column the mirror lacks equals a Supabase null.
    Exit status: 0 in sync, 1 drift, 2 error. Each run is kept in `sync_runs`.
    """
    engine = database_or_exit()
    started = utc_now()
    with errors_exit(), opened_source(database_url, supabase_url, service_role_key) as source:
        reports = compare_all(engine, source, chosen(tables))
        drift = sum(report.drift for report in reports.values())
        repair.record_run(engine.database, "verify", source, started,
                             {name: report.counts() for name, report in reports.items()},
                             "in_sync" if drift == 0 else "drift")
    if as_json:
        click.echo(json.dumps({"source": source.description, "drift": drift,
                               "tables": {name: report.as_dict() for name, report in reports.items()}},
                              indent=2, default=str))
    else:
        click.echo(summary_table(reports))
        for line in details(reports, show):
            click.echo(line)
        click.echo("in sync" if drift == 0 else f"drift: {drift} record(s)")
    sys.exit(IN_SYNC if drift == 0 else DRIFT)


@click.command("repair")
@with_appcontext
@with_source_options
@click.option("--dry-run", is_flag=True, help="Print what would be done, change nothing.")
def repair_command(database_url, supabase_url, service_role_key, tables, dry_run):
    """Make the mirror equal to Supabase: upsert missing and differing records, delete extra ones.

    Writes go through the sync engine with provenance `reconcile`; Supabase wins over
    staleness and tombstones. A row the mirror's rules refuse is kept in sync_rejects, named
    and counted, and the rest repaired. Exit status: 0 done (or nothing to do), 1 done but for
    rows the mirror refused (they stay drift), 2 error.
    """
    engine = database_or_exit()
    started = utc_now()
    pages = repair.RepairPages(engine)

    def act(entity: Entity, drift: compare.Drift) -> None:
        if dry_run:
            verb = "delete" if drift.kind == "extra" else "upsert"
            click.echo(f"would {verb} {entity.collection} {_key_text(drift.key)} ({drift.kind})")
            return
        pages.add(entity, drift)

    with errors_exit(), opened_source(database_url, supabase_url, service_role_key) as source:
        reports = compare_all(engine, source, chosen(tables), act)
        if not dry_run:
            pages.flush()
            repair.record_run(engine.database, "repair", source, started, pages.done,
                              "partial" if pages.refused_count else "repaired")
    total = sum(report.drift for report in reports.values())
    click.echo(summary_table(reports))
    refused = pages.refused_count
    for collection, key, reason in pages.refused:
        click.echo(f"refused {collection} {_key_text(key)}: {reason}")
    if refused > len(pages.refused):
        click.echo(f"…and {refused - len(pages.refused)} more refused (see `flask fitkart rejects`)")
    click.echo(f"{'would repair' if dry_run else 'repaired'} {total - refused} record(s)" +
               (f"; {refused} refused by the mirror's rules (kept in sync_rejects)" if refused else ""))
    sys.exit(DRIFT if refused else IN_SYNC)


@click.command("backfill")
@with_appcontext
@with_source_options
@click.option("--page-size", default=1000, show_default=True, help="Rows per bulk write.")
@click.option("--max-pages", type=int, help="Stop after this many pages per table (run again to resume).")
@click.option("--restart", is_flag=True, help="Ignore saved progress and start from the first row.")
def backfill_command(database_url, supabase_url, service_role_key, tables, page_size, max_pages, restart):
    """Copy every row from Supabase into the mirror, in bulk pages; resumable.

    Progress is saved after each page in `sync_backfill`; a run that stopped resumes after
    the last finished page. Rows go through the engine like a batch: a mirror record newer
    than the Supabase row, or one deleted since, is kept as it is.
    """
    engine = database_or_exit()
    started = utc_now()
    results = {}
    with errors_exit(), opened_source(database_url, supabase_url, service_role_key) as source:
        for entity in chosen(tables):
            with progress(entity.collection, source.count(entity.collection)) as advance:
                results[entity.collection] = repair.backfill_table(
                    engine, entity, source, page_size=page_size, max_pages=max_pages, restart=restart,
                    advance=advance)
        complete = all(result["complete"] for result in results.values())
        repair.record_run(engine.database, "backfill", source, started, results,
                             "complete" if complete else "partial")
    for name, result in results.items():
        state = "done" if result["complete"] else "paused (run again to resume)"
        click.echo(f"{name:<16}{result['rows']:>8} rows  {result['written']:>8} written  "
                   f"{result['kept']:>6} already there  {result['rejected']:>6} rejected  {state}")


@click.command("migrate-legacy")
@with_appcontext
def migrate_legacy_command():
    """Move the old Express server's data into the new collections, through the sync engine.

    Reads `cartitems`, `wishlistitems`, `userroles` and the mongoose copies in `profiles`,
    `products` and `orders` (documents without the mirror's `_fitkart`, with `__v`);
    idempotent. What cannot be moved stays where it was and is kept in `sync_rejects`.
    """
    engine = database_or_exit()
    report = legacy.migrate(engine)
    for name, counts in report.items():
        click.echo(f"{name:<16} moved {counts['moved']:>6}  could not move {counts['failed']:>6}")
    sys.exit(IN_SYNC if all(counts["failed"] == 0 for counts in report.values()) else DRIFT)


@click.command("migrate-ids")
@with_appcontext
def migrate_ids_command():
    """Move records another program stored under an _id other than their key under it (as the engine stores them).

    The engine finds records by that _id (the point write plan by nothing else). A record whose key is
    another record's is left where it is, as is one lacking a key column (verify shows both). Safe to
    stop and run again: a move cut short is finished first. Exit status: 0 every record is under its
    key, 1 some were left, 2 error.
    """
    engine = database_or_exit()
    left = 0
    with errors_exit():
        for entity in ENTITIES:
            report = ids.migrate_ids(engine.database, entity)
            left += report.taken + report.no_key
            click.echo(f"{report.collection:<16} moved {report.moved:>7}  already keyed {report.keyed:>8}  "
                       f"key taken {report.taken:>5}  no key {report.no_key:>5}")
    sys.exit(IN_SYNC if left == 0 else DRIFT)


@click.command("convert-money")
@with_appcontext
@click.option("--to", "target", required=True, type=click.Choice(MONEY_FORMS),
              help="The form every amount is stored in afterwards.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="Conversions per bulk write (and documents per read).")
def convert_money_command(target, batch_size):
    """Store every amount (products.price, orders.total_amount) as decimal128, double or string.

    Reads each collection with one cursor and converts what is not yet in the target form,
    whatever form it is in; a write made meanwhile wins over the conversion. Safe to stop and
    run again (what was converted counts as already right); a second run changes nothing.
    Values that are no numeric(10,2) amount are left as they were. It changes only the form:
    no version or write time. Refuses decimal128 where the database cannot store it. Exit
    status: 0 every amount is in the form, 1 some were left (see the counts), 2 error.
    """
    store = get_store().for_jobs()
    if store is not get_store():
        click.get_current_context().call_on_close(store.close)
    with errors_exit():
        database = store.database()
        refusal = store.decimal128_problem() if target == "decimal128" else None
        if refusal:
            click.echo(f"error: this database cannot store Decimal128 ({refusal}); "
                       "convert to double or string.", err=True)
            sys.exit(ERROR)
        # The engine's own conversion, so an amount converted here is exactly what the engine would store.
        store_money = SyncEngine(database, decimal_mode=target).store_money
        reports = []
        for collection, column in money.money_columns():
            report = money.convert_money(database, collection, column, store_money, batch_size)
            click.echo(_conversion_line(report, target))
            reports.append(report)
    sys.exit(_conversion_summary(reports, target, store.chosen_decimal_mode))


def _conversion_line(report: money.MoneyConversion, target: str) -> str:
    """One column's counts, as convert-money prints them."""
    return (f"{report.collection:<10}{report.column:<14}{report.converted:>9} converted{report.already:>9} already "
            f"{target:<11}{report.not_amounts:>6} not amounts{report.changed_meanwhile:>6} changed meanwhile")


def _conversion_summary(reports: list[money.MoneyConversion], target: str, mode: str) -> int:
    """Say what convert-money did in all; its exit status."""
    converted = sum(report.converted for report in reports)
    left = sum(report.not_amounts for report in reports)
    raced = sum(report.changed_meanwhile for report in reports)
    click.echo(f"converted {converted} amount(s) to {target}" if converted
               else f"nothing to convert: every amount was already {target}")
    if left:
        click.echo(f"{left} value(s) are no numeric(10,2) amount and were left as they were")
    if raced:
        click.echo(f"{raced} amount(s) were written meanwhile: run again")
    if mode != target:
        # Otherwise the next writes of these records store the other form again.
        click.echo(f"note: new writes store {mode} (FITKART_DECIMAL_MODE); set FITKART_DECIMAL_MODE={target} "
                   "to keep every amount in one form")
    return IN_SYNC if not left and not raced else DRIFT


COMMANDS = (verify_command, repair_command, backfill_command, migrate_legacy_command, migrate_ids_command,
            convert_money_command)
