"""Settings read from the environment (twelve-factor): nothing here is specific to one machine."""

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from emgapi.log_format import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-dev-only-key-never-used-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "analyses",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "emgapi.middleware.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "emgapi.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Before the apps' (the admin's own): emgapi/templates/admin/base_site.html adds the service's styles.
        "DIRS": [BASE_DIR / "emgapi" / "templates"],
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

WSGI_APPLICATION = "emgapi.wsgi.application"
ASGI_APPLICATION = "emgapi.asgi.application"

# SQLite only for a look at the web side without PostgreSQL: `make run`, the tests and production use PostgreSQL
# (the reconciler's per-request lock and recovery's view of live passes are PostgreSQL advisory locks).
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        # A persistent connection cut by a PostgreSQL restart is found dead before use, not as a 500.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo's web server, flow processes and dispatcher all write: take the write lock up front and wait.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# The site's time zone: the admin's times, and the scheduled ENA re-sync's cron.
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "static"))

# API bodies above this are refused with 413 before any parsing (emgapi.middleware); the admin's forms keep
# Django's own limit, DATA_UPLOAD_MAX_MEMORY_SIZE.
API_MAX_BODY_BYTES = int(os.environ.get("API_MAX_BODY_BYTES", str(64 * 1024)))

# A page-number list counts its rows exactly up to this many; past it, `count` is PostgreSQL's estimate and
# `count_is_estimate` is true (analyses.pagination): an exact COUNT(*) of a broad search costs more than its page.
API_EXACT_COUNT_LIMIT = int(os.environ.get("API_EXACT_COUNT_LIMIT", "1000"))

# Page numbers reach the first this many results of a list; past them `next` goes on by a cursor (a seek from the
# last row shown): with OFFSET, PostgreSQL walks every row it skips, and page 3,000 of the studies cost 20 ms.
API_MAX_PAGE_DEPTH = int(os.environ.get("API_MAX_PAGE_DEPTH", "10000"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    # No SearchFilter by default: a list searches only where it says so (studies), or the schema would lie.
    # A query parameter a list does not take is a 400 naming it (analyses.filters.RejectUnknownQueryParameters).
    "DEFAULT_FILTER_BACKENDS": [
        "analyses.filters.RejectUnknownQueryParameters",
        "django_filters.rest_framework.DjangoFilterBackend",
        "analyses.filters.StrictOrderingFilter",
    ],
    # `page_size` from 1 to 100 (a 400 otherwise); the study's runs and analyses go by cursor instead.
    "DEFAULT_PAGINATION_CLASS": "analyses.pagination.PageNumbers",
    "PAGE_SIZE": int(os.environ.get("API_PAGE_SIZE", "25")),
    # Every status an endpoint can answer, in DRF's error shape (emgapi/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "emgapi.openapi.ErrorsAutoSchema",
    "EXCEPTION_HANDLER": "emgapi.exceptions.api_exception_handler",
    # Creating a request starts days of cluster work: a runaway script is stopped at this rate per user (429).
    # The count lives in the cache (per process with the default local-memory cache).
    "DEFAULT_THROTTLE_RATES": {"request-create": os.environ.get("API_REQUEST_CREATE_THROTTLE", "60/hour")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "emgapi",
    "DESCRIPTION": "Metagenomics archive: studies, analyses and assembly-analysis requests run on Slurm via Prefect.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from the sidecar package: the docs must work on a machine with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ProcessingStatusEnum": "analyses.models.ProcessingStatus",
        "RequestStatusEnum": "analyses.models.AssemblyAnalysisRequest.Status",
    },
}

if not DEBUG:
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = logging_config(
    os.environ.get("LOG_FORMAT", "text"),
    level=os.environ.get("LOG_LEVEL", "INFO"),
    httpx_level=os.environ.get("HTTPX_LOG_LEVEL", "WARNING"),
)
# The project's own loggers reach the Prefect UI's flow-run logs (adoption of an orphan job, controller
# unavailable, OOM/TIMEOUT escalation, ENA retries). Set before Prefect is first imported, which reads them then;
# flow-run processes inherit them from serve_flows. Outside a flow run those lines only go to the console.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "workflows,prefect_utils")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

# /readyz caches each deep check this long per process: a dashboard polling it must not load Slurm or Prefect.
HEALTH_CACHE_SECONDS = float(os.environ.get("HEALTH_CACHE_SECONDS", "10"))

# --- Workflow layer ---------------------------------------------------------------------------------------
PREFECT_API_URL = os.environ.get("PREFECT_API_URL", "")
# Where the admin links a request's flow run; by default the UI beside the API (.../api → ...).
PREFECT_UI_URL = os.environ.get("PREFECT_UI_URL", PREFECT_API_URL.removesuffix("/").removesuffix("/api"))

# Where people reach this service (the links in notifications).
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")
# Notifications are mailed through Django's mail framework (the service loop sends them, never a web request).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# A mail server that does not answer holds a notification's row lock no longer than this.
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "emgapi <noreply@localhost>")
# Webhooks (analyses.webhooks) may not point at private, loopback, link-local or metadata addresses unless listed
# here: host names, addresses or networks (CIDR). Development allows loopback.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS", "127.0.0.0/8,::1,localhost" if DEBUG else "")
# A receiver that does not answer holds a delivery's row lock, and the service loop's round, no longer than this.
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "5"))
# Scopes the deployments, flow runs and keys this service makes on a Prefect server that other environments may
# share; empty means "the database's name" (workflows.outbox.deployments.environment).
EMGAPI_ENVIRONMENT = os.environ.get("EMGAPI_ENVIRONMENT", "")
# A hanging Prefect must not hold up the service loop for long: Prefect down means "retry later".
PREFECT_DISPATCH_TIMEOUT_SECONDS = float(os.environ.get("PREFECT_DISPATCH_TIMEOUT_SECONDS", "3"))
ENA_PORTAL_API_URL = os.environ.get("ENA_PORTAL_API_URL", "https://www.ebi.ac.uk/ena/portal/api")
# The study-sync deployment's schedule (cron, in TIME_ZONE; empty: none): each run re-syncs a batch of the studies
# last synced over ENA_RESYNC_MIN_AGE_HOURS ago, oldest first, ENA_RESYNC_PAUSE_SECONDS apart (workflows/ena/resync.py).
ENA_RESYNC_CRON = os.environ.get("ENA_RESYNC_CRON", "0 2 * * *")
ENA_RESYNC_MIN_AGE_HOURS = float(os.environ.get("ENA_RESYNC_MIN_AGE_HOURS", "20"))
ENA_RESYNC_BATCH = int(os.environ.get("ENA_RESYNC_BATCH", "2000"))
ENA_RESYNC_PAUSE_SECONDS = float(os.environ.get("ENA_RESYNC_PAUSE_SECONDS", "0.5"))
JOBS_ROOT = Path(os.environ.get("JOBS_ROOT", BASE_DIR / "var" / "jobs"))
# The archive's store: each analysis's results are moved to RESULTS_ROOT/<MGYS>/<MGYA>/ by a job on the data
# movers' partition, with a manifest.
RESULTS_ROOT = Path(os.environ.get("RESULTS_ROOT", BASE_DIR / "var" / "results"))
SLURM_DATAMOVER_PARTITION = os.environ.get("SLURM_DATAMOVER_PARTITION", "datamover") or None
# Days a finished request's run directories are kept once their results are in RESULTS_ROOT (a failed run's are
# kept for good: a retry reuses them).
WORK_DIRECTORY_RETENTION_DAYS = float(os.environ.get("WORK_DIRECTORY_RETENTION_DAYS", "7"))
SLURM_PARTITION = os.environ.get("SLURM_PARTITION") or None
SLURM_MAX_ACTIVE_JOBS = int(os.environ.get("SLURM_MAX_ACTIVE_JOBS", "100"))
SLURM_SUBMIT_RATE_PER_MINUTE = float(os.environ.get("SLURM_SUBMIT_RATE_PER_MINUTE", "600"))
SLURM_POLL_MIN_SECONDS = float(os.environ.get("SLURM_POLL_MIN_SECONDS", "1"))
SLURM_POLL_MAX_SECONDS = float(os.environ.get("SLURM_POLL_MAX_SECONDS", "60"))
# A job neither squeue nor sacct has known for this long, while they answered, is recorded LOST and resubmitted
# like NODE_FAIL (a controller that lost its state, a purged record).
SLURM_LOST_AFTER_SECONDS = float(os.environ.get("SLURM_LOST_AFTER_SECONDS", "3600"))
SLURM_MAX_MEMORY_MB = int(os.environ.get("SLURM_MAX_MEMORY_MB", "64000"))  # escalation stops here
# How often a Slurm command is retried through an outage before the caller hears "unavailable" (states go stale,
# submission waits); the pauses double from 0.5 s.
SLURM_COMMAND_RETRIES = int(os.environ.get("SLURM_COMMAND_RETRIES", "3"))
SLURM_MAX_TIME_MINUTES = int(os.environ.get("SLURM_MAX_TIME_MINUTES", str(7 * 24 * 60)))
# A flow run stays alive while its jobs keep ending, until this long passes without one (short jobs, the demo, and a
# large study's steady stream of job ends then cost no resume each), and at most WORKFLOWS_LINGER_MAX_SECONDS.
WORKFLOWS_LINGER_SECONDS = float(os.environ.get("WORKFLOWS_LINGER_SECONDS", "15"))
WORKFLOWS_LINGER_MAX_SECONDS = float(os.environ.get("WORKFLOWS_LINGER_MAX_SECONDS", "600"))
# Recovery: how often the sweep runs, and how long a flow run may sit PENDING/RUNNING with no live pass.
WORKFLOWS_SWEEP_INTERVAL_SECONDS = float(os.environ.get("WORKFLOWS_SWEEP_INTERVAL_SECONDS", "30"))
WORKFLOWS_STALL_SECONDS = float(os.environ.get("WORKFLOWS_STALL_SECONDS", "60"))
# The capacity queue (workflows.orchestration.capacity): a slot granted to a waiting request and not claimed by its
# pass within this time goes back to the pool (its flow run could not start, say).
WORKFLOWS_CAPACITY_GRANT_SECONDS = float(os.environ.get("WORKFLOWS_CAPACITY_GRANT_SECONDS", "120"))
# Flow-run processes one `serve_flows` runs at once (Prefect's runner limit); runs beyond it wait in Prefect,
# SCHEDULED. Each costs ~3 s of CPU to start and ~150 MB: sized for a 2-core machine.
WORKFLOWS_MAX_FLOW_PROCESSES = int(os.environ.get("WORKFLOWS_MAX_FLOW_PROCESSES", "8"))
# Deployment name -> how many of its flow runs may run at once, e.g. {"Assemble and analyse a study/...": 4}.
WORKFLOWS_CONCURRENCY_LIMITS = json.loads(os.environ.get("WORKFLOWS_CONCURRENCY_LIMITS", "{}"))
WORKFLOWS_DISPATCH_INTERVAL_SECONDS = float(os.environ.get("WORKFLOWS_DISPATCH_INTERVAL_SECONDS", "5"))
# Per pipeline, its steps' resources and its parameters over spec.yaml's, as JSON, e.g. {"assembly": {"assembly":
# {"memory_mb": 64000}}, "assembly_analysis": {"hmm_library": "/data/pfam/Pfam-A.hmm"}} (see
# workflows.pipelines.engine.PipelineConfig.with_settings).
PIPELINE_CONFIG = json.loads(os.environ.get("PIPELINE_CONFIG", "{}"))
# A request whose frozen plan is estimated over this many CPU-hours (each step's CPUs times time limit), or that asks
# for resources over REQUEST_RESOURCE_CAPS, waits for a holder of analyses.approve_assemblyanalysisrequest
# (workflows/orchestration/approval.py). Empty: no threshold.
_approval_threshold = os.environ.get("APPROVAL_THRESHOLD_CPU_HOURS", "1000")
APPROVAL_THRESHOLD_CPU_HOURS = float(_approval_threshold) if _approval_threshold else None
REQUEST_RESOURCE_CAPS = json.loads(
    os.environ.get("REQUEST_RESOURCE_CAPS", '{"cpus": 16, "memory_mb": 32000, "time_limit_minutes": 2880}')
)
# Folders of a site's own pipelines (colon-separated), each holding <name>/spec.yaml beside this package's.
PIPELINE_DIRS = [Path(p) for p in os.environ.get("PIPELINE_DIRS", "").split(":") if p]
# The PATH of every pipeline job (colon-separated), where the tools are not on the Slurm nodes' default PATH.
PIPELINE_JOB_PATH = os.environ.get("PIPELINE_JOB_PATH", "")
