"""A small stand-in for Supabase's REST API (PostgREST), serving tables of a real PostgreSQL.

It answers what FitKart Sync's REST source asks: `select=*`, `order=col.asc,...`, `limit`,
`offset`, the `Range` header, `col=gt.value`, `or=(a.gt.x,and(a.eq.x,b.gt.y))`, and
`Prefer: count=exact` with `Content-Range`. Rows are rendered to JSON by PostgreSQL itself,
as PostgREST does. Requests without the service-role key get 401.
"""

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg import sql

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
OR_AFTER = re.compile(r"^\((\w+)\.gt\.([^,]+),and\((\w+)\.eq\.([^,]+),(\w+)\.gt\.([^)]+)\)\)$")


class PostgrestServer:
    """Serves `/rest/v1/<table>` from a PostgreSQL database on a loopback port."""

    def __init__(self, database_url: str, service_role_key: str) -> None:
        self.database_url = database_url
        self.key = service_role_key
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.headers.get("apikey") != server.key or \
                        self.headers.get("Authorization") != f"Bearer {server.key}":
                    self._send(401, {"message": "Invalid API key"})
                    return
                try:
                    status, body, headers = server.answer(self.path, self.headers)
                except (ValueError, psycopg.Error) as error:
                    status, body, headers = 400, {"message": str(error)}, {}
                self._send(status, body, headers)

            def _send(self, status: int, body, headers: dict | None = None) -> None:
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The Supabase project URL this server stands in for."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str, headers) -> tuple[int, bytes, dict]:
        """Run one request against PostgreSQL."""
        parsed = urllib.parse.urlsplit(path)
        table = parsed.path.removeprefix("/rest/v1/")
        if not IDENTIFIER.match(table):
            raise ValueError(f"bad table {table!r}")
        params = urllib.parse.parse_qsl(parsed.query)
        conditions, values, order, limit, offset = [], [], [], None, 0
        for name, value in params:
            if name == "select":
                continue
            if name == "order":
                for part in value.split(","):
                    column, direction = part.split(".")
                    order.append(sql.SQL("{} {}").format(sql.Identifier(column),
                                                         sql.SQL("ASC" if direction == "asc" else "DESC")))
            elif name == "limit":
                limit = int(value)
            elif name == "offset":
                offset = int(value)
            elif name == "or":
                match = OR_AFTER.match(value)
                if not match:
                    raise ValueError(f"unsupported or filter {value!r}")
                first, first_value, _, _, second, second_value = match.groups()
                conditions.append(sql.SQL("({a} > %s OR ({a} = %s AND {b} > %s))").format(
                    a=sql.Identifier(first), b=sql.Identifier(second)))
                values += [first_value, first_value, second_value]
            elif IDENTIFIER.match(name) and value.startswith("gt."):
                conditions.append(sql.SQL("{} > %s").format(sql.Identifier(name)))
                values.append(value.removeprefix("gt."))
            else:
                raise ValueError(f"unsupported parameter {name}={value}")
        if "Range" in headers:
            first_row, last_row = (int(n) for n in headers["Range"].split("-"))
            offset, limit = first_row, last_row - first_row + 1
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        query = sql.SQL("SELECT * FROM {}{}").format(sql.Identifier("public", table), where)
        if order:
            query += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
        query += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
        with psycopg.connect(self.database_url) as connection:
            rendered = connection.execute(sql.SQL("SELECT coalesce(json_agg(t), '[]'::json)::text FROM ({}) t")
                                          .format(query), values).fetchone()[0]
            extra = {}
            if "count=exact" in headers.get("Prefer", ""):
                total = connection.execute(sql.SQL("SELECT count(*) FROM {}{}").format(
                    sql.Identifier("public", table), where), values).fetchone()[0]
                shown = len(json.loads(rendered))
                extra["Content-Range"] = f"{offset}-{offset + shown - 1}/{total}" if shown else f"*/{total}"
        return 200, rendered.encode(), extra

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
