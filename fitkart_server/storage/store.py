"""The MongoDB connection: created lazily per process, indexes made once, the engine built on it."""

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import mongomock
import pymongo
from bson import Decimal128
from flask import Flask, current_app, g
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from ..model.documents import CAPABILITIES, PROVENANCE_FIELD, TOMBSTONES, Reject, Tombstone
from ..model.entities import ENTITIES
from ..sync.engine import Observer, SyncEngine
from ..sync.plan import GUARDED, plan_for
from ..sync.rejects import Allowance
from .housekeeping import Housekeeper
from .uris import DEFAULT_DATABASE, EMBEDDED, choose_uri, database_name, redact_uri

log = logging.getLogger(__name__)

# How long one reply may take in long CLI jobs (10 minutes): see Store.for_jobs.
JOB_SOCKET_TIMEOUT_MS = 600_000
# The timeouts of quick(): a rate-limit counter gives up on an absent database this soon.
QUICK_TIMEOUT_MS = 250
# FerretDB answers "not implemented" for TTL indexes on its SQLite backend.
NOT_IMPLEMENTED = 238
# The database refused who we are (bad credentials, or a user without rights): like being
# unreachable, it is the database's state, not the request's fault, and may be mended any time.
REFUSED_LOGIN_CODES = (13, 18)  # Unauthorized, AuthenticationFailed


class DatabaseUnavailable(Exception):
    """The database cannot serve requests now: unreachable, or set up wrongly."""


class DatabaseUnreachable(DatabaseUnavailable):
    """The database does not answer: writes can wait in the spool for it."""


def is_refused_login(error: Exception) -> bool:
    """Whether a driver error says the database refused our credentials or rights."""
    return isinstance(error, OperationFailure) and error.code in REFUSED_LOGIN_CODES


@contextmanager
def database_errors() -> Iterator[None]:
    """Driver errors that say the database cannot serve now, raised as DatabaseUnavailable; others unchanged."""
    try:
        yield
    except ConnectionFailure as error:
        raise unavailable(error) from error
    except OperationFailure as error:
        if not is_refused_login(error):
            raise
        raise unavailable(error) from error


def unavailable(error: PyMongoError) -> DatabaseUnavailable:
    """The DatabaseUnavailable a driver error stands for (no secrets: the class and, for a refusal, its words)."""
    if is_refused_login(error):
        # Not queued: credentials are the operator's to mend, and the client should hear so (503).
        return DatabaseUnavailable(f"database refused the login: {error.details.get('codeName', error.code)}")
    return DatabaseUnreachable(f"database unreachable: {error.__class__.__name__}")


def write_concern_for(setting: str, hello: dict) -> WriteConcern:
    """FITKART_WRITE_CONCERN for a server that answered `hello` so: `auto` is majority against a replica set
    (its reply names its `setName`) or a sharded cluster (a mongos says `msg: isdbgrid`), else 1."""
    if setting == "auto":
        setting = "majority" if hello.get("setName") or hello.get("msg") == "isdbgrid" else "1"
    return WriteConcern(w=int(setting) if setting.isdigit() else setting)


class Store:
    """One app's database: a client per process (fork-safe), prepared on first use."""

    # pymongo command listeners handed to every client a store makes (the tests watch the write path with one).
    command_listeners: tuple = ()

    def __init__(self, uri: str, *, timeout_ms: int, decimal_mode: str, tombstone_days: int,
                 socket_timeout_ms: int = 10_000, write_concern: str = "auto", write_plan: str = "auto") -> None:
        self.uri = uri
        self.embedded = uri == EMBEDDED
        self.timeout_ms = timeout_ms
        self.socket_timeout_ms = socket_timeout_ms
        self.write_concern = write_concern
        self._concern: WriteConcern | None = None
        self.decimal_mode = decimal_mode
        self.tombstone_days = tombstone_days
        # FITKART_WRITE_PLAN, and (once prepared) the plan chosen and why: see sync/plan.py.
        self.write_plan = write_plan
        self._chosen_plan: str | None = None
        self.write_plan_reason: str | None = None
        self._pid: int | None = None
        self._client = None
        self._prepared = False
        # FITKART_DECIMAL_MODE as resolved when the database is first used (prepare): the form money is stored
        # in and why, the database's refusal of Decimal128 (None: it stores it), and why money cannot be stored.
        self._chosen_mode: str | None = None
        self.decimal_mode_reason: str | None = None
        self.decimal128_refusal: str | None = None
        self.money_problem: str | None = None
        self.observer: Observer | None = None  # handed to every engine (metrics counts results)
        self.housekeeper: Housekeeper | None = None  # purges tombstones and rejects now and then
        self._quick: Store | None = None  # see quick()
        # Threads of one worker share the client; only one of them may create or prepare it.
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """Where the data lives, without secrets."""
        return "embedded in-process store (nothing is persisted)" if self.embedded else redact_uri(self.uri)

    def client(self):
        """This process's client; a forked worker makes its own instead of sharing one."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._client = self._new_client()
                    self._pid = os.getpid()
                    self._prepared = False
        return self._client

    def _new_client(self):
        """A client with short timeouts, so an absent database costs ~2 s, not minutes."""
        if self.embedded:
            return mongomock.MongoClient(tz_aware=True)
        options = {"tz_aware": True, "uuidRepresentation": "standard", "appname": "fitkart-sync"}
        lowered = self.uri.lower()
        for name in ("serverSelectionTimeoutMS", "connectTimeoutMS"):
            if name.lower() not in lowered:  # a timeout written in the URI wins
                options[name] = self.timeout_ms
        if "sockettimeoutms" not in lowered:
            # A database that answers too slowly becomes a 503, not a pile of stuck requests.
            options["socketTimeoutMS"] = self.socket_timeout_ms
        if self.command_listeners:
            options["event_listeners"] = list(self.command_listeners)
        # Retryable writes stay on (pymongo's default): a failover mid-write is retried once.
        return pymongo.MongoClient(self.uri, **options)

    def database(self) -> Database:
        """The prepared database; raises DatabaseUnavailable when it cannot serve."""
        database = self.client()[DEFAULT_DATABASE if self.embedded else database_name(self.uri)]
        if not self._prepared:
            with self._lock, database_errors():
                if not self._prepared:
                    self.prepare(database)
        if self.housekeeper is not None:
            self.housekeeper.tick(database)
        return database if self._concern is None else database.with_options(write_concern=self._concern)

    @property
    def chosen_decimal_mode(self) -> str:
        """The form money is stored in: FITKART_DECIMAL_MODE, or what `auto` chose (still `auto` before first use)."""
        return self._chosen_mode or self.decimal_mode

    @property
    def chosen_write_plan(self) -> str:
        """The write plan: FITKART_WRITE_PLAN, or what `auto` chose (still `auto` before first use)."""
        return self._chosen_plan or self.write_plan

    def engine(self, allowance: Allowance | None = None) -> SyncEngine:
        """The sync engine over this database; it asks `allowance` before storing on a caller's behalf."""
        return self._engine(self.database(), allowance=allowance)  # first: preparing it resolves the decimal mode

    def offline_engine(self, spill: Callable[[dict], None]) -> SyncEngine:
        """An engine that only validates, for writes the spool keeps: no database round trip, rejects spilled."""
        return self._engine(self.client()[DEFAULT_DATABASE if self.embedded else database_name(self.uri)],
                            spill=spill)

    def _engine(self, database: Database, **options) -> SyncEngine:
        """An engine over `database` in the chosen decimal mode."""
        # Where money cannot be stored as set, only writes that carry money are refused (503, not the client's fault).
        refusal = partial(DatabaseUnavailable, self.money_problem) if self.money_problem else None
        return SyncEngine(database, decimal_mode=self.chosen_decimal_mode, money_refusal=refusal,
                          tombstone_days=self.tombstone_days, observer=self.observer,
                          write_plan=self._chosen_plan or GUARDED, **options)

    def for_jobs(self) -> "Store":
        """The store long CLI jobs (verify, repair, backfill) use: reads may wait minutes.

        A busy or slow server may take longer than a request's socket timeout over one batch of
        a whole-collection scan (FerretDB v1 decodes every document in Go), or over a bulk repair.
        Server selection keeps its short timeout, so a database that is down still fails fast.
        """
        if self.embedded or self.socket_timeout_ms >= JOB_SOCKET_TIMEOUT_MS:
            return self  # the embedded store's data lives in this very client
        return Store(self.uri, timeout_ms=self.timeout_ms, decimal_mode=self.decimal_mode,
                     tombstone_days=self.tombstone_days, socket_timeout_ms=JOB_SOCKET_TIMEOUT_MS,
                     write_concern=self.write_concern, write_plan=self.write_plan)

    def quick(self) -> "Store":
        """A store of this database whose client gives up within QUICK_TIMEOUT_MS: for bookkeeping a request must
        never wait on (the rate limiter's counters), so an absent database costs it a quarter second, not 2 s."""
        if self.embedded:
            return self  # the embedded store's data lives in this very client
        if self._quick is None:
            self._quick = Store(self.uri, timeout_ms=QUICK_TIMEOUT_MS, decimal_mode=self.decimal_mode,
                                tombstone_days=self.tombstone_days, socket_timeout_ms=QUICK_TIMEOUT_MS * 4,
                                write_concern=self.write_concern, write_plan=self.write_plan)
        return self._quick

    def bookkeeping(self, name: str):
        """One of the mirror's own collections, raw (no preparing, no housekeeping): `quick().bookkeeping(...)`."""
        return self.client()[DEFAULT_DATABASE if self.embedded else database_name(self.uri)][name]

    def prepare(self, database: Database) -> None:
        """Create indexes (idempotent) and check the database can store what is configured."""
        for document in (*(entity.document for entity in ENTITIES), Reject, Tombstone):
            collection = database[document._get_collection_name()]
            for spec in document._meta["index_specs"]:
                options = {k: v for k, v in spec.items() if k != "fields" and v}
                collection.create_index(spec["fields"], **options)
        for entity in ENTITIES:  # the status page's "last write" and "writes in the last hour"
            database[entity.collection].create_index(f"{PROVENANCE_FIELD}.written_at", name="written_at")
        self._create_tombstone_ttl(database)
        self._concern = self._choose_write_concern(database)
        self._choose_write_plan(database)
        self._choose_decimal_mode(database)
        self._prepared = True

    def _create_tombstone_ttl(self, database: Database) -> None:
        """Let the database expire old tombstones where it can (lookups ignore them anyway)."""
        tombstones = database[TOMBSTONES]
        seconds = self.tombstone_days * 86400
        try:
            tombstones.create_index("deleted_at", expireAfterSeconds=seconds, name="deleted_at_ttl")
        except OperationFailure as error:
            if error.code == NOT_IMPLEMENTED:
                log.warning("This database has no TTL indexes: expired tombstones stay stored, "
                            "though they no longer block writes.")
                tombstones.create_index("deleted_at", name="deleted_at_ttl")
            elif "already exists" in str(error) or error.code in (85, 86):
                # The lifetime changed: MongoDB updates a TTL in place with collMod.
                database.command("collMod", tombstones.name, index={
                    "name": "deleted_at_ttl", "expireAfterSeconds": seconds})
            else:
                raise

    def _choose_write_concern(self, database: Database) -> WriteConcern | None:
        """FITKART_WRITE_CONCERN: majority against a replica set, 1 standalone, unless set."""
        if self.embedded:
            return None
        # Only `auto` needs to know what the server is: asking costs a round trip.
        hello = database.client.admin.command("hello") if self.write_concern == "auto" else {}
        return write_concern_for(self.write_concern, hello)

    def _choose_write_plan(self, database: Database) -> None:
        """Resolve FITKART_WRITE_PLAN (`auto`: by what the server says it is, see sync/plan.py); log it once."""
        if self.write_plan != "auto":
            plan, reason = self.write_plan, f"FITKART_WRITE_PLAN={self.write_plan}"
        elif self.embedded:
            plan, reason = GUARDED, "FITKART_WRITE_PLAN=auto and the embedded store filters in memory"
        else:
            plan, why = plan_for(database.client.admin.command("buildInfo"))
            reason = f"FITKART_WRITE_PLAN=auto and {why}"
        log.info("Writes use the %s plan: %s.", plan, reason)
        self._chosen_plan, self.write_plan_reason = plan, reason

    def _choose_decimal_mode(self, database: Database) -> None:
        """Resolve FITKART_DECIMAL_MODE (`auto`: decimal128 where the database stores it, else double); log it once."""
        setting = self.decimal_mode
        # Only where it decides something: FerretDB answers the probe by dropping the connection, which
        # costs the client a reconnect, so an explicit double or string mode is taken as it is.
        refusal = self._probe_decimal128(database) if setting in ("auto", "decimal128") else None
        if setting != "auto":
            mode, reason = setting, f"FITKART_DECIMAL_MODE={setting}"
        elif refusal is None:
            mode, reason = "decimal128", "FITKART_DECIMAL_MODE=auto and this database stores Decimal128"
        else:
            # Still exact: a numeric(10,2) amount has at most ten digits and a double keeps fifteen; and a
            # double, unlike a string, is a number to mongosh queries and $sum.
            mode = "double"
            reason = f"FITKART_DECIMAL_MODE=auto and this database cannot store Decimal128 ({refusal})"
        problem = None
        if mode == "decimal128" and refusal is not None:
            problem = ("FITKART_DECIMAL_MODE is decimal128, but this database cannot store Decimal128 values "
                       f"({refusal}). Set FITKART_DECIMAL_MODE=double (or string, or auto); until then writes "
                       "that carry money (products.price, orders.total_amount) are refused.")
            log.error(problem)
        else:
            level = logging.WARNING if setting == "auto" and mode == "double" else logging.INFO
            log.log(level, "Money (price, total_amount) is stored as %s: %s.", mode, reason)
        self._chosen_mode, self.decimal_mode_reason = mode, problem or reason
        self.decimal128_refusal, self.money_problem = refusal, problem

    def decimal128_problem(self) -> str | None:
        """Why this database cannot store Decimal128 (probed now if the mode did not need it), or None."""
        if self.decimal_mode in ("auto", "decimal128"):
            return self.decimal128_refusal
        return self._probe_decimal128(self.database())

    def _probe_decimal128(self, database: Database) -> str | None:
        """Why this database cannot store Decimal128 (its refusal, shortened), or None when it can."""
        probe = database[CAPABILITIES]
        refusal = None
        for _ in range(2):  # twice: one connection dropped by chance must not pass for a refusal
            try:
                probe.replace_one({"_id": "decimal128"}, {"_id": "decimal128", "value": Decimal128("0.01")},
                                  upsert=True)
                probe.delete_one({"_id": "decimal128"})
                return None
            except PyMongoError as error:
                if is_refused_login(error):
                    raise
                # FerretDB v1 drops the connection on a Decimal128; if the server still answers, the value
                # was the problem (a ping that fails raises, and the database is unavailable instead).
                database.client.admin.command("ping")
                refusal = f"storing one failed: {_short(error)}"
        return refusal

    def close(self) -> None:
        """Close this process's client (a later call opens a new one)."""
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client, self._pid = None, None
        if self._quick is not None:
            self._quick.close()

    def ping(self) -> None:
        """Ask the database to answer; raises DatabaseUnavailable when it does not."""
        database = self.database()
        with database_errors():
            database.client.admin.command("ping")


def _short(error: Exception) -> str:
    """The first line of a driver error, without its full server reply."""
    return str(error).split(", full error:")[0].split(" (configured timeouts")[0]


def get_store() -> Store:
    """The current app's store."""
    return current_app.extensions["fitkart_store"]


def get_engine() -> SyncEngine:
    """The sync engine of the current request, spending its caller's allowance (see ratelimit.py)."""
    if "fitkart_engine" not in g:
        g.fitkart_engine = get_store().engine(allowance=g.get("fitkart_allowance"))
    return g.fitkart_engine


def init_app(app: Flask) -> None:
    """Attach the store to the app and say where data goes."""
    uri = choose_uri(app.config["FITKART_MONGODB_URI"])
    store = Store(uri, timeout_ms=app.config["FITKART_DB_TIMEOUT_MS"],
                  decimal_mode=app.config["FITKART_DECIMAL_MODE"],
                  tombstone_days=app.config["FITKART_TOMBSTONE_DAYS"],
                  socket_timeout_ms=app.config["FITKART_DB_SOCKET_TIMEOUT_MS"],
                  write_concern=app.config["FITKART_WRITE_CONCERN"],
                  write_plan=app.config["FITKART_WRITE_PLAN"])
    if not store.embedded:  # the embedded store keeps nothing past the process anyway
        store.housekeeper = Housekeeper(
            tombstone_days=app.config["FITKART_TOMBSTONE_DAYS"], rejects_days=app.config["FITKART_REJECTS_DAYS"],
            rejects_max_bytes=app.config["FITKART_REJECTS_MAX_MB"] * 1024 * 1024)
    app.extensions["fitkart_store"] = store
    if store.embedded:
        origin = "FITKART_MONGODB_URI=embedded" if app.config["FITKART_MONGODB_URI"] else (
            "FITKART_MONGODB_URI is not set and nothing answers on localhost:27017")
        app.logger.warning("EMBEDDED MODE (%s): data lives in this process only and is lost "
                           "when it stops. Set FITKART_MONGODB_URI to keep it.", origin)
    else:
        app.logger.info("Mirroring into %s", store.description)
    if not app.testing:
        try:  # indexes and the decimal mode's choice at start-up; requests retry if this fails
            store.database()
        except DatabaseUnavailable as error:
            app.logger.warning("Database not ready at start-up (%s); requests will retry.", error)
