"""A static site on localhost: the shop's pages and the built client, as Vite's dev server would serve them."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fitkart_server.config import DEFAULT_CORS_ORIGINS

from .mongo import free_port

DEFAULT_ORIGINS = DEFAULT_CORS_ORIGINS.split(",")


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging each request (the tests' output stays readable)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

    def log_message(self, *args) -> None:
        pass


class StaticSite:
    """`directory` over HTTP on localhost: port 8080 (the server's default allowed origin) when free."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(QuietHandler, directory=str(directory))
        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", 8080), handler)
        except OSError:  # 8080 is taken here: any port (the sync server is then told the origin)
            self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}"

    def allowed(self) -> dict[str, str]:
        """The sync server's settings for this site's origin: none on port 8080 (allowed by default)."""
        return {} if self.origin in DEFAULT_ORIGINS else {"FITKART_CORS_ORIGINS": self.origin}

    def start(self) -> "StaticSite":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
