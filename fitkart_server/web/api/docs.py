"""Swagger UI's own files for `/api/docs` (served here, so the docs work without internet)."""

from flask import Blueprint, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs_assets", __name__)


@bp.get("/api/docs/assets/<path:filename>")
def swagger_ui_asset(filename: str):
    """One file of the bundled Swagger UI."""
    return send_from_directory(swagger_ui_path, filename, max_age=3600)


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for it on every page; the status page's icon."""
    return send_from_directory(current_app.static_folder, "favicon.svg", mimetype="image/svg+xml",
                               max_age=86400)
