"""FitKart Sync: a MongoDB mirror of the FitKart shop's Supabase tables."""

from flask import Flask
from flask.cli import AppGroup
from flask_cors import CORS
from flask_smorest import Api

from .config import DECIMAL_MODES, WRITE_PLANS, Config
from .ops import commands as ops_commands
from .ops import metrics, requestlog, status
from .reconcile import commands as reconcile_commands
from .reconcile import follow_commands
from .storage import commands as storage_commands
from .storage import replay, store
from .version import __version__
from .web import auth, errors, hardening, ratelimit
from .web.api import batch, docs, health, sync, webhooks

__all__ = ["__version__", "create_app"]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then `instance/config.py`, then the test dict."""
    app = Flask(__name__, instance_relative_config=True)
    # `//api//sync//…` is a path of its own (a JSON 404), not an HTML redirect to the merged one.
    app.url_map.merge_slashes = False
    app.config.from_object(Config)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    for name, choices in (("FITKART_DECIMAL_MODE", DECIMAL_MODES), ("FITKART_WRITE_PLAN", WRITE_PLANS)):
        if app.config[name] not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {app.config[name]!r}")
    if not app.debug and not app.testing:
        requestlog.configure_logging(app.config["FITKART_LOG_FORMAT"])

    requestlog.init_app(app)  # first: its line times every other hook
    hardening.init_app(app)
    # Tokens travel in the Authorization header, never in cookies: no credentialed CORS. The health checks share
    # the API's origins, so that a page of the shop can read whether the server is up before it syncs.
    allowed = {"origins": app.config["FITKART_CORS_ORIGINS"]}
    # A page may read the server's mark (its own refusals), Retry-After (429, 503) and the request id.
    CORS(app, resources={r"/api/*": allowed, "/healthz": allowed, "/readyz": allowed}, supports_credentials=False,
         expose_headers=[errors.SERVER_HEADER, "Retry-After", requestlog.REQUEST_ID_HEADER])
    api = Api(app)
    errors.init_app(app, api)
    store.init_app(app)
    replay.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    limiter = ratelimit.init_app(app)  # after auth: a signed-in caller is limited by user id

    for blueprint in sync.entity_blueprints():
        api.register_blueprint(blueprint)
    api.register_blueprint(batch.blp)
    api.register_blueprint(webhooks.blp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs.bp)
    status.init_app(app)
    ratelimit.limit_operator_sign_ins(limiter, status.bp, metrics.bp)
    register_commands(app)
    return app


def register_commands(app: Flask) -> None:
    """`flask fitkart ...`: every command of every layer, registered here and nowhere else."""
    group = AppGroup("fitkart", help="FitKart Sync commands.")
    for command in (*storage_commands.COMMANDS, *reconcile_commands.COMMANDS, *follow_commands.COMMANDS,
                    *ops_commands.COMMANDS):
        group.add_command(command)
    app.cli.add_command(group)
