"""A gateway of the tests' own in front of the sync server: it passes requests through, or, for the batch route,
answers as a misconfigured proxy or a WAF would (its own refusal), asks callers to come back later (429 with
Retry-After), or reorders the results of the server's answers. Its own answers allow the page's origin, as a
gateway serving a browser app is set up to, so the page reads them as it reads the server's.
"""

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .mongo import free_port

BATCH = "/api/sync/batch"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length"}


@dataclass
class Mode:
    """What the gateway does to batch requests until `until` (monotonic; 0: for good)."""

    refuse: tuple[int, dict] | None = None  # answer this status and JSON body itself
    retry_after: int | None = None  # answer 429 with this Retry-After itself
    reorder: bool = False  # pass through, with each 200's results reversed
    until: float = 0.0


@dataclass
class Gateway:
    """The gateway on a free port of localhost, forwarding to `upstream` (the sync server's URL)."""

    upstream: str
    origin: str
    mode: Mode = field(default_factory=Mode)
    # Every batch request (monotonic time, the status answered), in order.
    batches: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                gateway.handle(self)

            def do_POST(self) -> None:
                gateway.handle(self)

            def do_OPTIONS(self) -> None:
                gateway.handle(self)

            def do_DELETE(self) -> None:
                gateway.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, seconds: float = 0.0, **mode) -> None:
        """Act as `mode` says for `seconds` (0: until set again), then pass everything through."""
        self.mode = Mode(**mode, until=time.monotonic() + seconds if seconds else 0.0)

    def requests_between(self, start: float, end: float) -> int:
        """Batch requests that reached the gateway between two monotonic times."""
        return sum(1 for at, _ in self.batches if start <= at < end)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        mode = self.mode
        active = not mode.until or time.monotonic() < mode.until
        batch = request.command == "POST" and urlsplit(request.path).path == BATCH
        if batch and active and mode.refuse:
            status, answer = mode.refuse
            return self._answer(request, status, json.dumps(answer).encode(), {"Content-Type": "application/json"})
        if batch and active and mode.retry_after is not None:
            return self._answer(request, 429, b'{"message": "slow down"}', {
                "Content-Type": "application/json", "Retry-After": str(mode.retry_after)})
        status, headers, content = self._forward(request, body)
        if batch and active and mode.reorder and status == 200:
            answer = json.loads(content)
            answer["results"].reverse()
            content = json.dumps(answer).encode()
        return self._answer(request, status, content, headers, own=False)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes | None) -> tuple[int, dict, bytes]:
        upstream = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        try:
            headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {name: value for name, value in response.getheaders()
                                     if name.lower() not in HOP_BY_HOP}, response.read()
        finally:
            connection.close()

    def _answer(self, request: BaseHTTPRequestHandler, status: int, content: bytes, headers: dict,
                own: bool = True) -> None:
        if urlsplit(request.path).path == BATCH and request.command == "POST":
            self.batches.append((time.monotonic(), status))
        request.send_response(status)
        if own:  # as a gateway serving the shop's pages is set up: its answers readable there, with Retry-After
            headers = {**headers, "Access-Control-Allow-Origin": self.origin,
                       "Access-Control-Expose-Headers": "Retry-After"}
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)
