"""Which MongoDB to use, and how its URI may be shown: never a user, password or option."""

import socket
from urllib.parse import urlsplit, urlunsplit

EMBEDDED = "embedded"
LOCAL_URI = "mongodb://localhost:27017/database"
DEFAULT_DATABASE = "database"


def database_name(uri: str) -> str:
    """The database a MongoDB URI names, `database` when it names none."""
    path = urlsplit(uri).path.lstrip("/")
    return path or DEFAULT_DATABASE


def redact_uri(uri: str) -> str:
    """Where a MongoDB URI points, as `scheme://hosts[/database]`: never its user, password or options."""
    # Options can hold secrets too (authMechanismProperties=AWS_SESSION_TOKEN:...), so only hosts, ports
    # and the database are kept. The URI is split as pymongo splits it (options, path, then the last `@`),
    # and nothing is shown unless each piece plainly is what it should be: in a malformed URI (say an
    # unescaped `/` or `?` in a password) a secret could otherwise pass for a host or a database.
    def plain(text: str, punctuation: str) -> bool:
        return all(char.isalnum() or char in punctuation for char in text)

    def is_port(text: str) -> bool:
        return text.isascii() and text.isdigit() and len(text) <= 5

    def is_host(host: str) -> bool:
        if host.startswith("["):  # IPv6, `[::1]` or `[::1]:27017`
            address, bracket, after = host[1:].partition("]")
            port_ok = after == "" or (after.startswith(":") and is_port(after[1:]))
            return bool(bracket and address) and plain(address, ":.%") and port_ok
        name, colon, port = host.partition(":")  # a name, an IPv4 address or a %-encoded socket path
        return bool(name) and plain(name, "-._~%") and (not colon or is_port(port))

    scheme, _, rest = uri.strip().partition("://")
    before_options, _, options = rest.partition("?")
    authority, _, path = before_options.partition("/")
    hosts = authority.rpartition("@")[2].split(",")
    # An `@` past the hosts means credentials written with an unescaped `?` or `/`: they would pass for a host.
    if scheme.lower() not in ("mongodb", "mongodb+srv") or not all(map(is_host, hosts)) or not plain(path, "-_.%") \
            or "@" in options or "@" in path:
        return "<unreadable MongoDB URI>"
    database = path.partition(".")[0]  # `db.collection` names a collection too: the database is enough
    return urlunsplit((scheme.lower(), ",".join(hosts), f"/{database}" if database else "", "", ""))


def local_mongodb_answers(timeout: float = 0.3) -> bool:
    """Whether anything accepts connections on localhost:27017."""
    try:
        with socket.create_connection(("localhost", 27017), timeout=timeout):
            return True
    except OSError:
        return False


def choose_uri(configured: str | None) -> str:
    """The URI to use: the configured one, else a local MongoDB, else the embedded store."""
    if configured:
        return configured
    if local_mongodb_answers():
        return LOCAL_URI
    return EMBEDDED
