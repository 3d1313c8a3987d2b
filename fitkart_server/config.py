"""Settings read from the environment (and `.env`), each with a default."""

import os

from dotenv import find_dotenv, load_dotenv

# `.env` in the working directory fills in what the environment leaves unset.
load_dotenv(find_dotenv(usecwd=True))

DEFAULT_CORS_ORIGINS = "http://localhost:8080,http://127.0.0.1:8080"
# The forms money can be stored in; "auto" is decimal128 where the database stores it, else double.
MONEY_FORMS = ("decimal128", "double", "string")
DECIMAL_MODES = ("auto", *MONEY_FORMS)
WRITE_PLANS = ("auto", "guarded", "point")


def _int(name: str, default: int) -> int:
    """Read an integer setting, naming the setting when it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None


def _list(name: str, default: str) -> list[str]:
    """Read a comma-separated setting as a list of non-empty items."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


class Config:
    """Default settings; `instance/config.py` and the test dict override them."""

    # None means "not configured": the server then looks for a local MongoDB and
    # falls back to the embedded store only if nothing answers.
    FITKART_MONGODB_URI = os.environ.get("FITKART_MONGODB_URI") or None
    FITKART_CORS_ORIGINS = _list("FITKART_CORS_ORIGINS", DEFAULT_CORS_ORIGINS)
    FITKART_MAX_BATCH = _int("FITKART_MAX_BATCH", 1000)
    FITKART_DECIMAL_MODE = os.environ.get("FITKART_DECIMAL_MODE", "auto").strip().lower()
    FITKART_TOMBSTONE_DAYS = _int("FITKART_TOMBSTONE_DAYS", 30)
    # Refused writes each caller may have stored, in Flask-Limiter's notation; past it a refusal is 429, not stored.
    FITKART_REJECTS_RATE = os.environ.get("FITKART_REJECTS_RATE", "60 per minute")
    # Where the limiter counts (a Flask-Limiter storage URI); unset: a SQLite file in instance/.
    FITKART_RATELIMIT_STORAGE = os.environ.get("FITKART_RATELIMIT_STORAGE") or None
    # sync_rejects is trimmed, oldest first, past this size, and purged after this many days.
    FITKART_REJECTS_MAX_MB = _int("FITKART_REJECTS_MAX_MB", 256)
    FITKART_REJECTS_DAYS = _int("FITKART_REJECTS_DAYS", 30)
    # Writes kept while the database is away (see spool.py): at most this much, then 503.
    FITKART_SPOOL_MAX_MB = _int("FITKART_SPOOL_MAX_MB", 256)
    FITKART_SPOOL_PATH = os.environ.get("FITKART_SPOOL_PATH") or None  # unset: instance/spool.sqlite3
    FITKART_DB_TIMEOUT_MS = _int("FITKART_DB_TIMEOUT_MS", 2000)
    FITKART_DB_SOCKET_TIMEOUT_MS = _int("FITKART_DB_SOCKET_TIMEOUT_MS", 10_000)
    # "auto": majority against a replica set (or sharded cluster), 1 against a standalone server.
    FITKART_WRITE_CONCERN = os.environ.get("FITKART_WRITE_CONCERN", "auto").strip().lower()
    # Which commands writes send (sync/plan.py): "auto" picks by what the server says it is.
    FITKART_WRITE_PLAN = os.environ.get("FITKART_WRITE_PLAN", "auto").strip().lower()
    MAX_CONTENT_LENGTH = _int("FITKART_MAX_CONTENT_LENGTH", 1024 * 1024)

    FITKART_AUTH = os.environ.get("FITKART_AUTH", "auto").strip().lower()
    SUPABASE_JWT_SECRET = os.environ.get("SUPABASE_JWT_SECRET") or None
    SUPABASE_URL = os.environ.get("SUPABASE_URL") or None
    FITKART_TRUSTED_PROXIES = _list("FITKART_TRUSTED_PROXIES", "")
    FITKART_JWT_LEEWAY_SECONDS = _int("FITKART_JWT_LEEWAY_SECONDS", 30)
    FITKART_JWKS_COOLDOWN_SECONDS = _int("FITKART_JWKS_COOLDOWN_SECONDS", 30)
    FITKART_WEBHOOK_SECRET = os.environ.get("FITKART_WEBHOOK_SECRET") or None
    FITKART_WEBHOOK_HEADER = os.environ.get("FITKART_WEBHOOK_HEADER", "X-Webhook-Secret")
    # Lets operators outside loopback see the status page, rejected payloads and /metrics.
    FITKART_ADMIN_TOKEN = os.environ.get("FITKART_ADMIN_TOKEN") or None
    # Signs the operator sign-in cookie (else a key derived from the admin token or JWT secret).
    SECRET_KEY = os.environ.get("FITKART_SECRET_KEY") or None
    FITKART_LOG_FORMAT = os.environ.get("FITKART_LOG_FORMAT", "text").strip().lower()
    # The WAL follower's database: set, the status page reads each follower's slot from it, also while stopped.
    SUPABASE_DB_URL = os.environ.get("SUPABASE_DB_URL") or None
    # A slot past either is warned of (the follower's log, the status page, `stats`).
    FITKART_LAG_WARNING_MB = _int("FITKART_LAG_WARNING_MB", 1024)
    FITKART_LAG_WARNING_SECONDS = _int("FITKART_LAG_WARNING_SECONDS", 300)

    API_TITLE = "FitKart Sync"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api"
    OPENAPI_JSON_PATH = "openapi.json"
    # Swagger UI at /api/docs, its files served by this server (no CDN: it works offline).
    OPENAPI_SWAGGER_UI_PATH = "docs"
    OPENAPI_SWAGGER_UI_URL = "/api/docs/assets/"
    OPENAPI_SWAGGER_UI_CONFIG = {"deepLinking": True, "displayRequestDuration": True}
