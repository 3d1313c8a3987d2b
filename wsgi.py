"""The WSGI entry point: `gunicorn wsgi:app` (settings in gunicorn.conf.py)."""

from fitkart_server import create_app

app = create_app()
