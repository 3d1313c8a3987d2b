"""gunicorn settings for deployment: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import multiprocessing
import os

# Loopback by default: the server has no authentication of its own yet.
bind = os.environ.get("FITKART_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count(), 8)))
# Threads overlap the database round trips of one worker.
worker_class = "gthread"
threads = int(os.environ.get("FITKART_THREADS", 4))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# No preload: each worker builds the app, and so its own MongoDB client, after the fork.
preload_app = False
