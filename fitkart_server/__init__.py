"""FitKart Sync: a MongoDB mirror of the FitKart shop's Supabase tables."""

import logging

from flask import Flask
from flask_cors import CORS
from flask_smorest import Api

from . import auth, db, errors, hardening
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
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    hardening.init_app(app)
    # Tokens travel in the Authorization header, never in cookies: no credentialed CORS.
    CORS(app, resources={r"/api/*": {"origins": app.config["FITKART_CORS_ORIGINS"]}},
         supports_credentials=False)
    api = Api(app)
    errors.init_app(app, api)
    db.init_app(app)
    auth.init_app(app)

    from . import cli  # noqa: F401 (registers verify, repair, backfill, migrate-legacy)
    from .api import batch, health, sync, webhooks

    for blueprint in sync.entity_blueprints():
        api.register_blueprint(blueprint)
    api.register_blueprint(batch.blp)
    api.register_blueprint(webhooks.blp)
    app.register_blueprint(health.bp)
    return app
