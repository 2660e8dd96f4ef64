"""GANTRY_DATABASE_URL -> Django's DATABASES entry for PostgreSQL (psycopg, Django's own backend).

    postgres://USER:PASSWORD@HOST:5432/NAME?sslmode=verify-full&sslrootcert=/etc/ssl/pg-ca.pem
    postgres://USER:PASSWORD@/NAME?host=/run/postgresql          (a unix socket's directory)

Query parameters other than ``host`` go to libpq as they are (sslmode, sslrootcert,
connect_timeout, ...). Anything but postgres:// or postgresql:// is refused: SQLite is the
default and needs no URL (GANTRY_DB names its file)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

SCHEMES = ("postgres", "postgresql")


def database_from_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(
            f"GANTRY_DATABASE_URL: postgres:// or postgresql:// only, not {parts.scheme!r}"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("GANTRY_DATABASE_URL names no database (postgres://.../NAME)")
    options = dict(parse_qsl(parts.query, keep_blank_values=False))
    host = options.pop("host", "") or unquote(parts.hostname or "")
    try:
        port = parts.port
    except ValueError as err:
        raise ImproperlyConfigured(f"GANTRY_DATABASE_URL: {err}") from err
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }
