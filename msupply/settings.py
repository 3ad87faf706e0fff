"""Project settings, read from the environment in this one place."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# https://django-environ.readthedocs.io/en/latest/quickstart.html
environ.Env.read_env(BASE_DIR / ".env")

SECRET_KEY = env("SECRET_KEY", default="django-insecure-development-only-key-change-me")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Reverse proxies (addresses or networks) whose X-Forwarded-For names the real client; lockouts
# count per real client address (msupply.addresses).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "stores",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Sync responses are large JSON that compresses well; satellites sit on slow links.
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "msupply.middleware.ViewerTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "msupply.urls"
WSGI_APPLICATION = "msupply.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default so a fresh machine needs no services; DATABASE_URL switches to PostgreSQL.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Keep connections between requests: a new PostgreSQL connection costs more than a sync
    # request with nothing to do. https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions and WAL let the web server and a Celery worker write the same file
    # without "database is locked" errors.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    DATABASES["default"].setdefault("TEST", {})
    # Server-process tests give each server its own file; keep the test database on disk too.
    if env("TEST_SQLITE_NAME", default=""):
        DATABASES["default"]["TEST"]["NAME"] = env("TEST_SQLITE_NAME")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# The project's own assets (the reports' stylesheet): clinics are often offline, so no CDN.
# https://docs.djangoproject.com/en/5.2/ref/settings/#staticfiles-dirs
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sync.protocol.sync_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "msupply-sync",
    "DESCRIPTION": "Synchronisation protocol between a master server and its satellites.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The demo's embedded broker: a folder of message files shared by the processes of one site,
    # so a laptop needs no Redis. Production uses Redis.
    # https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.filesystem.html
    _broker_folder = Path(env("CELERY_BROKER_FOLDER", default=str(BASE_DIR / "var" / "broker")))
    _broker_folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_folder),
        "data_folder_out": str(_broker_folder),
        "control_folder": str(_broker_folder / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# How long a right authorisation code keeps the synchronisation preferences unlocked, and how
# many wrong codes in that window lock a user out for the same time.
SYNC_UNLOCK_SECONDS = env.int("SYNC_UNLOCK_SECONDS", default=15 * 60)
SYNC_UNLOCK_MAX_FAILURES = 5
SYNC_UNLOCK_LOCKOUT_SECONDS = env.int("SYNC_UNLOCK_LOCKOUT_SECONDS", default=15 * 60)

# Sync protocol limits. A request body larger than this (before or after gzip) gets 413.
SYNC_MAX_BODY_BYTES = env.int("SYNC_MAX_BODY_BYTES", default=32 * 1024 * 1024)
SYNC_AUTH_MAX_FAILURES = 5
SYNC_AUTH_LOCKOUT_SECONDS = env.int("SYNC_AUTH_LOCKOUT_SECONDS", default=15 * 60)
SYNC_TOKEN_MAX_AGE_SECONDS = env.int("SYNC_TOKEN_MAX_AGE_SECONDS", default=12 * 60 * 60)
# Records per push batch and per pull page, and the client's network timeouts in seconds.
SYNC_BATCH_SIZE = env.int("SYNC_BATCH_SIZE", default=5000)
SYNC_CONNECT_TIMEOUT = env.float("SYNC_CONNECT_TIMEOUT", default=10.0)
SYNC_READ_TIMEOUT = env.float("SYNC_READ_TIMEOUT", default=120.0)
# Connection failures are retried this many times within a run, waiting 1, 2, 4... seconds.
SYNC_RETRIES = env.int("SYNC_RETRIES", default=3)
# Length of one "minute" of the Sync time interval. Only tests shorten it, to watch beat work.
SYNC_INTERVAL_UNIT_SECONDS = env.int("SYNC_INTERVAL_UNIT_SECONDS", default=60)
# A run renews its lease after every batch; a worker that dies frees the lease after this long.
SYNC_LOCK_TTL_SECONDS = env.int("SYNC_LOCK_TTL_SECONDS", default=120)
# Retention (sync.prune, README "Retention and pruning"): days kept of sync logs, failed logins
# (never less than the lockout window) and applied push batch ids (the newest per satellite is
# always kept); a satellite silent longer than SYNC_PEER_RETENTION_DAYS no longer holds the
# master's change log and must initialise again. Pruning deletes at most this many rows a batch.
SYNC_LOG_RETENTION_DAYS = env.int("SYNC_LOG_RETENTION_DAYS", default=90)
SYNC_AUTH_FAILURE_RETENTION_DAYS = env.int("SYNC_AUTH_FAILURE_RETENTION_DAYS", default=30)
SYNC_APPLIED_BATCH_RETENTION_DAYS = env.int("SYNC_APPLIED_BATCH_RETENTION_DAYS", default=30)
SYNC_PEER_RETENTION_DAYS = env.int("SYNC_PEER_RETENTION_DAYS", default=30)
SYNC_PRUNE_BATCH_SIZE = env.int("SYNC_PRUNE_BATCH_SIZE", default=10000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
}
