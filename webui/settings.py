"""Django settings for Gantry's web side. Everything comes from environment variables with safe
defaults: DEBUG off, explicit ALLOWED_HOSTS, a SECRET_KEY generated once and kept in the web's
home directory (GANTRY_WEB_HOME), a private Redis on a unix socket as the channel layer."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


WEB_HOME = Path(env("GANTRY_WEB_HOME", "/var/lib/gantry-web"))


def _secret_key() -> str:
    """GANTRY_SECRET_KEY, else the key kept in WEB_HOME (made on first start, mode 0600)."""
    if env("GANTRY_SECRET_KEY"):
        return env("GANTRY_SECRET_KEY")
    path = WEB_HOME / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ImproperlyConfigured(f"cannot read the secret key {path}: {err}") from err
    key = secrets.token_urlsafe(50)
    if os.geteuid() == 0:
        # Root processes (the engine worker, collectstatic at set-up) sign nothing; they must
        # not create a key file the unprivileged web could not read.
        return key
    try:
        WEB_HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
    except FileExistsError:
        return path.read_text().strip()
    except OSError as err:
        raise ImproperlyConfigured(f"cannot keep the secret key in {path}: {err}") from err


SECRET_KEY = _secret_key()
DEBUG = env_bool("GANTRY_DEBUG")
ALLOWED_HOSTS = [
    h.strip() for h in env("GANTRY_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]
if "*" in ALLOWED_HOSTS:
    # Channels derives the websocket Origin allowlist from ALLOWED_HOSTS: '*' would let any
    # site drive a root engine with the user's cookie.
    raise ImproperlyConfigured("GANTRY_ALLOWED_HOSTS must list host names, never '*'")
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in env("GANTRY_CSRF_TRUSTED_ORIGINS").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "webui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "webui.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "webui.middleware.RoleMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "webui.urls"
ASGI_APPLICATION = "webui.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "webui.context_processors.gantry",
            ],
        },
    }
]

# SQLite by default; PostgreSQL with GANTRY_DATABASE_URL, so several web processes (hosts) can
# serve the same users (webui/dburl.py).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(env("GANTRY_DB", str(WEB_HOME / "db.sqlite3"))),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
if env("GANTRY_DATABASE_URL"):
    from webui.dburl import database_from_url

    DATABASES["default"] = database_from_url(env("GANTRY_DATABASE_URL"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "ui-containers"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("GANTRY_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("GANTRY_STATIC_ROOT", str(BASE_DIR / ".static")))
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/xterm/lib", BASE_DIR / "node_modules" / "@xterm" / "xterm" / "lib"),
    ("vendor/xterm/css", BASE_DIR / "node_modules" / "@xterm" / "xterm" / "css"),
    ("vendor/xterm-addon-fit", BASE_DIR / "node_modules" / "@xterm" / "addon-fit" / "lib"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = False

# The channel layer: a private Redis on a unix socket by default; "memory" for unit tests.
REDIS_URL = env("GANTRY_REDIS_URL", "unix:///run/gantry/redis/redis.sock")
# The shared cache (login throttling counts across every web process): the stack's Redis.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "gantry-web",
    }
}
CHANNEL_LAYERS: dict[str, dict[str, object]]
if env("GANTRY_CHANNEL_LAYER") == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "webui.channel_layer.GantryRedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s that
            # channels_redis blocks in BZPOPMIN: an idle receive would then fail. Read longer.
            "CONFIG": {
                "hosts": [
                    {"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}
                ],
                "capacity": 200,
                "expiry": 60,
            },
        }
    }

GANTRY_NODE = env("GANTRY_NODE")  # empty: ask engine.protocol.default_node()
# Placement pins (webui/placement.py): "learner=lab-1,lab-2 instructor=lab-3 user:ann=lab-4".
GANTRY_NODE_PINS = env("GANTRY_NODE_PINS")
GANTRY_RPC_TIMEOUT = float(env("GANTRY_RPC_TIMEOUT", "10"))
# The largest request body (an upload form) the web accepts: the engine's default upload
# limit (2 GiB) plus room for the multipart framing.
GANTRY_MAX_REQUEST_BYTES = int(env("GANTRY_MAX_REQUEST_BYTES", str(2 * 1024**3 + 16 * 1024**2)))

# Security headers; HTTPS-only cookies and redirects when served over TLS (GANTRY_HTTPS=1).
HTTPS = env_bool("GANTRY_HTTPS")
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = int(env("GANTRY_SESSION_AGE", str(12 * 3600)))
CSRF_COOKIE_SAMESITE = "Strict"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [  # bigger files spool to a file with no name (webui/uploads.py)
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "webui.uploads.NamelessFileUploadHandler",
]
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("GANTRY_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
