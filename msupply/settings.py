"""Project settings, read from the environment in this one place."""

import secrets
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# https://django-environ.readthedocs.io/en/latest/quickstart.html
environ.Env.read_env(BASE_DIR / ".env")

# Commands that only read or write the schema and files: they sign nothing, so they run on a
# fresh checkout or a build machine without a key (a throwaway one, never a known one).
SCHEMA_COMMANDS = {"makemigrations", "migrate", "showmigrations", "sqlmigrate", "collectstatic"}

# Production unless asked otherwise: development (bin/demo, bin/test, runserver) sets DEBUG=true
# or a SECRET_KEY of its own; a server must never run on a key that is in the source.
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG and sys.argv[1:2] and sys.argv[1] in SCHEMA_COMMANDS:
        SECRET_KEY = secrets.token_urlsafe(50)
    elif not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env to a long random "
            "string, made with: python -c 'import secrets; print(secrets.token_urlsafe(50))' "
            "(or set DEBUG=true on a development machine)."
        )
    else:
        SECRET_KEY = "django-insecure-development-only-key"  # noqa: S105 - DEBUG only
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Reverse proxies (addresses or networks) whose X-Forwarded-For names the real client; lockouts
# count per real client address (msupply.addresses).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. Secure by default in production; plain HTTP only where asked for (the test and demo
# sites on 127.0.0.1 say so). https://docs.djangoproject.com/en/5.2/ref/settings/#secure-ssl-redirect
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Browsers keep cookies per host, not per port: sites side by side on one host (the demo's
# three on 127.0.0.1) need names of their own, or logging into one logs out of the others and
# breaks their CSRF checks. https://docs.djangoproject.com/en/5.2/ref/settings/#session-cookie-name
SESSION_COOKIE_NAME = env.str("SESSION_COOKIE_NAME", default="sessionid")
CSRF_COOKIE_NAME = env.str("CSRF_COOKIE_NAME", default="csrftoken")
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 60 * 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Opt-in: anyone may submit a domain that sends "preload" to the browsers' preload list.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy, the header that says the request came in over HTTPS, as
# "HTTP_X_FORWARDED_PROTO,https". Only set it when the proxy always sets or strips that header.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
SECURE_PROXY_SSL_HEADER = (
    tuple(env.list("SECURE_PROXY_SSL_HEADER"))
    if env("SECURE_PROXY_SSL_HEADER", default="")
    else None
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "import_export",
    "stores",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files in production, compressed and cached forever under hashed names.
    # https://whitenoise.readthedocs.io/en/stable/django.html
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sync responses are large JSON that compresses well; satellites sit on slow links.
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The viewer's language: the chooser's cookie, else the browser's Accept-Language.
    # After the session (it may hold the language), before CommonMiddleware (it resolves URLs).
    "django.middleware.locale.LocaleMiddleware",
    "msupply.middleware.ApiInEnglishMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "msupply.middleware.ViewerTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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

# Admin login lockout (django-axes): per user name and address, so an attacker elsewhere cannot
# lock a real admin out. The sync API authenticates itself (sync.auth) and is not counted here.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("AXES_COOLOFF_SECONDS", default=15 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "msupply.addresses.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"

LANGUAGE_CODE = "en"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Only the languages shipped complete (tests/test_i18n.py checks locale/fr is).
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# One date and time format per language, the zone named (msupply/formats/<lang>/formats.py).
FORMAT_MODULE_PATH = ["msupply.formats"]

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "var" / "static")
# collectstatic writes hashed, compressed copies; without them a page fails in production.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# The project's own assets (the reports' stylesheet): clinics are often offline, so no CDN.
# https://docs.djangoproject.com/en/5.2/ref/settings/#staticfiles-dirs
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "sync.schema.SyncAutoSchema",
    "EXCEPTION_HANDLER": "sync.protocol.sync_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "msupply-sync",
    "DESCRIPTION": "Synchronisation protocol between a master server and its satellites.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sync.schema.error_responses_add",
    ],
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
# Dropped links, failed connections and a proxy's 502/503/504 are retried this many times per
# request, waiting SYNC_BACKOFF_SECONDS * 1, 2, 4... plus up to SYNC_BACKOFF_JITTER_SECONDS at
# random (so satellites that lost the same link do not all come back at once), never more than
# SYNC_BACKOFF_MAX_SECONDS; a 503's Retry-After is obeyed up to SYNC_RETRY_AFTER_MAX_SECONDS.
# https://urllib3.readthedocs.io/en/stable/reference/urllib3.util.html#urllib3.util.Retry
SYNC_RETRIES = env.int("SYNC_RETRIES", default=3)
SYNC_BACKOFF_SECONDS = env.float("SYNC_BACKOFF_SECONDS", default=1.0)
SYNC_BACKOFF_JITTER_SECONDS = env.float("SYNC_BACKOFF_JITTER_SECONDS", default=1.0)
SYNC_BACKOFF_MAX_SECONDS = env.float("SYNC_BACKOFF_MAX_SECONDS", default=60.0)
SYNC_RETRY_AFTER_MAX_SECONDS = env.int("SYNC_RETRY_AFTER_MAX_SECONDS", default=120)
# The certificate authority (a PEM file) that signed the master's HTTPS certificate, when it is
# a private one; empty trusts the system's store. Certificates are always verified. Proxies
# come from HTTPS_PROXY / HTTP_PROXY / NO_PROXY in the environment.
SYNC_CA_BUNDLE = env.str("SYNC_CA_BUNDLE", default="")
# Length of one "minute" of the Sync time interval. Only tests shorten it, to watch beat work.
SYNC_INTERVAL_UNIT_SECONDS = env.int("SYNC_INTERVAL_UNIT_SECONDS", default=60)
# A run renews its lease after every batch; a worker that dies frees the lease after this long.
SYNC_LOCK_TTL_SECONDS = env.int("SYNC_LOCK_TTL_SECONDS", default=120)
# Retention (sync.prune, README "Retention and pruning"): days kept of sync logs, failed logins
# (never less than the lockout window) and applied push batch ids (the newest per satellite is
# always kept); a satellite silent longer than SYNC_PEER_RETENTION_DAYS no longer holds the
# master's change log and must initialise again. Pruning deletes at most this many rows a batch.
SYNC_LOG_RETENTION_DAYS = env.int("SYNC_LOG_RETENTION_DAYS", default=90)
SYNC_EXCHANGE_RETENTION_DAYS = env.int("SYNC_EXCHANGE_RETENTION_DAYS", default=90)
SYNC_AUTH_FAILURE_RETENTION_DAYS = env.int("SYNC_AUTH_FAILURE_RETENTION_DAYS", default=30)
SYNC_APPLIED_BATCH_RETENTION_DAYS = env.int("SYNC_APPLIED_BATCH_RETENTION_DAYS", default=30)
SYNC_PEER_RETENTION_DAYS = env.int("SYNC_PEER_RETENTION_DAYS", default=30)
SYNC_PRUNE_BATCH_SIZE = env.int("SYNC_PRUNE_BATCH_SIZE", default=10000)

# Goods in transit report (README "Goods in transit"): a transfer not received after more than
# TRANSIT_WARNING_DAYS days shows as a warning, after more than TRANSIT_ERROR_DAYS as an alarm.
TRANSIT_WARNING_DAYS = env.int("TRANSIT_WARNING_DAYS", default=7)
TRANSIT_ERROR_DAYS = env.int("TRANSIT_ERROR_DAYS", default=30)

# Alerts (sync.alerts, README "Alerts"): on the master, one e-mail to SYNC_ALERT_EMAILS when a
# satellite has failed SYNC_ALERT_FAILURES requests in a row, or has had no successful sync for
# SYNC_ALERT_STALE_INTERVALS of its Sync time intervals (never less than the minimum), and one
# when it is OK again. No addresses: no alerts.
SYNC_ALERT_EMAILS = env.list("SYNC_ALERT_EMAILS", default=[])
SYNC_ALERT_FAILURES = env.int("SYNC_ALERT_FAILURES", default=3)
SYNC_ALERT_STALE_INTERVALS = env.int("SYNC_ALERT_STALE_INTERVALS", default=6)
SYNC_ALERT_STALE_MINIMUM_MINUTES = env.int("SYNC_ALERT_STALE_MINIMUM_MINUTES", default=60)
# This server's address as its users reach it, e.g. https://master.example.org: alerts link to
# its Sync with list. Empty: they give the page's path only.
SITE_URL = env("SITE_URL", default="")

# E-mail: development prints messages on the console; production sends them through SMTP.
# https://docs.djangoproject.com/en/5.2/topics/email/#smtp-backend
EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
# An alert is sent while its satellite's alert row is locked: a mail server that hangs must
# not hold it for long.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="msupply-sync@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
}

# Import and export of master data in the admin (stores.resources), CSV and XLSX only; export
# needs the view permission; a value's leading = is dropped in exported files, so a spreadsheet
# never runs it as a formula.
# https://django-import-export.readthedocs.io/en/latest/installation.html#settings
from import_export.formats.base_formats import CSV, XLSX  # noqa: E402

IMPORT_EXPORT_FORMATS = [CSV, XLSX]
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = True
IMPORT_EXPORT_USE_TRANSACTIONS = True
