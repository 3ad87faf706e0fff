"""Gunicorn settings for the web process: threaded workers, so slow clients hold threads only."""

import os

# https://docs.gunicorn.org/en/stable/settings.html
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
# A request whose upload trickles in holds one thread while it reads, not a whole worker: a
# satellite on a slow link (or a client that stalls on purpose) cannot starve the sync API.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Longer than the satellites' read timeout (SYNC_READ_TIMEOUT, 120 s), so a large push that the
# master integrates slowly is answered rather than killed half-way.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "180"))
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
