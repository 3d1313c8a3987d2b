"""FitKart Sync: a MongoDB mirror of the FitKart shop's Supabase tables."""

from flask import Flask
from flask_cors import CORS
from flask_smorest import Api

from . import auth, db, errors, hardening, metrics, ratelimit, requestlog, spooling
from .config import DECIMAL_MODES, Config

__version__ = "0.1.0"


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then `instance/config.py`, then the test dict."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(Config)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    if app.config["FITKART_DECIMAL_MODE"] not in DECIMAL_MODES:
        raise ValueError(f"FITKART_DECIMAL_MODE must be one of {', '.join(DECIMAL_MODES)}, "
                         f"not {app.config['FITKART_DECIMAL_MODE']!r}")
    if not app.debug and not app.testing:
        requestlog.configure_logging(app.config["FITKART_LOG_FORMAT"])

    requestlog.init_app(app)  # first: its line times every other hook
    hardening.init_app(app)
    # Tokens travel in the Authorization header, never in cookies: no credentialed CORS.
    CORS(app, resources={r"/api/*": {"origins": app.config["FITKART_CORS_ORIGINS"]}},
         supports_credentials=False)
    api = Api(app)
    errors.init_app(app, api)
    db.init_app(app)
    spooling.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    limiter = ratelimit.init_app(app)  # after auth: a signed-in caller is limited by user id

    from . import cli, operator_cli, spool_cli, status  # noqa: F401 (cli modules register `flask fitkart` commands)
    from .api import batch, docs, health, sync, webhooks

    for blueprint in sync.entity_blueprints():
        api.register_blueprint(blueprint)
    api.register_blueprint(batch.blp)
    api.register_blueprint(webhooks.blp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs.bp)
    status.init_app(app)
    ratelimit.limit_operator_sign_ins(limiter, status.bp, metrics.bp)
    return app
