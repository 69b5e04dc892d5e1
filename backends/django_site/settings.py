"""Settings for the Django site.

The gateway in front decides hosts, authenticates callers and passes the
caller as ``REMOTE_USER``; this site only serves the todos contract
(``docs/contract.md``) and the admin.
"""

import os

import dj_database_url

from backends.database import database_url


def _env_seconds(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f'{name}="{value}" must be a whole number of seconds, such as "{default}" (0: a new connection per request)'
        )
    return int(value)


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# From the environment. The fallback is Django's "insecure" kind, kept only so that
# the demo runs as is on loopback: the gateway's bootstrap checks warn about it there,
# and refuse to serve with it on any other address (docs/security.md).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-stackgate-dev-only-key"
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes", "on"}  # off unless asked for
# Any host: the gateway has refused those it does not serve ([gateway] allowed_hosts) and passes one
# normalised Host; an invalid one is still a 400 bad_host (todos/errors.py). Set it to serve without the gateway.
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "*")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "backends.django_site.todos",
]

MIDDLEWARE = [
    "backends.django_site.mounts.AdminOnlyAtItsMount",
    "backends.django_site.todos.middleware.HeadBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backends.django_site.urls"  # the API, under every mount
# Django's admin is served only to requests whose SCRIPT_NAME is this: the gateway's
# admin route (prefix "/admin", strip_prefix = true). Elsewhere (/v2/admin/) it is a 404.
ADMIN_MOUNT = "/admin"
WSGI_APPLICATION = "backends.django_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# Persistent connections, checked before reuse: opening one per request (Django's
# default) was 40 % of a todo request's CPU on SQLite (connect, the WAL pragma,
# Django's SQL functions: 1411-1441 against 850-884 us), and is a TCP connection
# and a login for PostgreSQL.
# Each backend thread keeps its own, so a worker holds up to `threads` of them.
DATABASES = {
    "default": dj_database_url.parse(
        database_url(), conn_max_age=_env_seconds("DJANGO_CONN_MAX_AGE", 600), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Write-ahead log: two stacks, their threads and the shadow process share one file, and
    # in WAL readers never block a writer (nor a writer its readers). The mode is kept in
    # the file, so the Flask stack, which only opens what Django's migrations made, has it too.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The API's caller comes from REMOTE_USER through DRF (todos/authentication.py);
# ModelBackend serves admin logins. No RemoteUserMiddleware: it would log
# admin sessions out on API-less requests.
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]

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

# Absolute on purpose: the gateway serves /static/ itself, whatever the prefix.
# A relative STATIC_URL would be cached with the first request's SCRIPT_NAME.
STATIC_URL = "/static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["backends.django_site.todos.authentication.GatewayRemoteUserAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "backends.django_site.todos.negotiation.JSONFallbackNegotiation",
    "EXCEPTION_HANDLER": "backends.django_site.todos.errors.exception_handler",
    "URL_FORMAT_OVERRIDE": None,
    # The views' @extend_schema annotations need drf-spectacular's AutoSchema
    # (the gateway's /_stackgate/openapi.json is generated from them).
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The gateway authenticates callers and documents how (the views only read
# REMOTE_USER), so the schema names no authenticator of this stack.
SPECTACULAR_SETTINGS = {"AUTHENTICATION_WHITELIST": []}

# The gateway enforces the body limit ([gateway].max_body_size, 10 MiB by
# default) before Django reads anything; match it so both stacks accept the same bodies.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("STACKGATE_MAX_BODY_SIZE", 10 * 1024 * 1024))
