"""The Supabase side of verify, repair and backfill: rows of a table, streamed in key order.

Two sources: a direct Postgres connection (psycopg 3, one read-only repeatable-read
transaction, so every table is read from one snapshot) and Supabase's REST API (PostgREST,
with the service-role key). Both page by key (keyset), so memory stays flat whatever
the table size.
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Protocol

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

PAGE_SIZE = 1000


class SourceError(Exception):
    """The Supabase side could not be read."""


class Source(Protocol):
    """Rows of Supabase tables, in key order."""

    description: str

    def count(self, table: str) -> int:
        """How many rows the table has."""
        ...

    def rows(self, table: str, key: tuple[str, ...], after: tuple | None = None) -> Iterator[dict]:
        """Every row whose key comes after `after`, in key order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class PostgresSource:
    """Reads the project database directly, inside one read-only snapshot."""

    def __init__(self, url: str, page_size: int = PAGE_SIZE) -> None:
        try:
            self.connection = psycopg.connect(url, row_factory=dict_row, connect_timeout=10)
        except psycopg.Error as error:
            raise SourceError(f"cannot connect to PostgreSQL: {error}") from None
        self.connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.page_size = page_size
        info = self.connection.info
        self.description = f"postgres://{info.host}:{info.port}/{info.dbname}"

    def count(self, table: str) -> int:
        """SELECT count(*)."""
        query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier("public", table))
        return self.connection.execute(query).fetchone()["n"]

    def rows(self, table: str, key: tuple[str, ...], after: tuple | None = None) -> Iterator[dict]:
        """Pages of `SELECT * ... WHERE (key) > (last) ORDER BY key LIMIT n`."""
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in key)
        while True:
            where = sql.SQL("")
            params: list = []
            if after is not None:
                where = sql.SQL("WHERE ({}) > ({})").format(
                    columns, sql.SQL(", ").join(sql.Placeholder() * len(key)))
                params = list(after)
            query = sql.SQL("SELECT * FROM {} {} ORDER BY {} LIMIT {}").format(
                sql.Identifier("public", table), where, columns, sql.Literal(self.page_size))
            page = self.connection.execute(query, params).fetchall()
            yield from page
            if len(page) < self.page_size:
                return
            after = tuple(page[-1][name] for name in key)

    def close(self) -> None:
        """End the snapshot and disconnect."""
        self.connection.close()


class RestSource:
    """Reads through PostgREST (`<SUPABASE_URL>/rest/v1/<table>`) with the service-role key."""

    def __init__(self, supabase_url: str, service_role_key: str, page_size: int = PAGE_SIZE,
                 timeout: float = 30) -> None:
        self.base = supabase_url.rstrip("/") + "/rest/v1"
        self.headers = {"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}",
                        "Accept": "application/json"}
        self.page_size = page_size
        self.timeout = timeout
        self.description = supabase_url.rstrip("/")

    def _get(self, table: str, params: list[tuple[str, str]], headers: dict | None = None):
        """One GET; the parsed body and the response headers."""
        url = f"{self.base}/{urllib.parse.quote(table)}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response), response.headers
        except urllib.error.HTTPError as error:
            error.close()
            raise SourceError(f"cannot read {table} from {self.description}: HTTP {error.code}") from None
        except (OSError, ValueError) as error:
            raise SourceError(f"cannot read {table} from {self.description}: {error}") from None

    def count(self, table: str) -> int:
        """PostgREST's exact count, from `Content-Range: 0-0/N`."""
        _, headers = self._get(table, [("select", "*")], {"Prefer": "count=exact", "Range-Unit": "items",
                                                          "Range": "0-0"})
        total = (headers.get("Content-Range") or "*/0").rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else 0

    def rows(self, table: str, key: tuple[str, ...], after: tuple | None = None) -> Iterator[dict]:
        """Pages ordered by the key, each starting after the last key seen (a PostgREST filter)."""
        order = ",".join(f"{name}.asc" for name in key)
        while True:
            params = [("select", "*"), ("order", order), ("limit", str(self.page_size))]
            if after is not None:
                params.append(_after_filter(key, after))
            page, _ = self._get(table, params)
            yield from page
            if len(page) < self.page_size:
                return
            after = tuple(page[-1][name] for name in key)


    def close(self) -> None:
        """Nothing to release."""


def _after_filter(key: tuple[str, ...], after: tuple) -> tuple[str, str]:
    """The PostgREST filter for "key > after": `id=gt.X`, or an `or=(...)` for two columns."""
    if len(key) == 1:
        return key[0], f"gt.{after[0]}"
    (first, second), (first_value, second_value) = key, after
    return "or", f"({first}.gt.{first_value},and({first}.eq.{first_value},{second}.gt.{second_value}))"
