"""GANTRY_DATABASE_URL: PostgreSQL settings from a URL, and what is refused."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from webui.dburl import database_from_url


def test_a_tcp_url_with_tls_options() -> None:
    db = database_from_url(
        "postgresql://gantry:p%40ss@db.lab.example:6432/gantry_web"
        "?sslmode=verify-full&sslrootcert=/etc/ssl/pg-ca.pem"
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"]) == ("gantry_web", "gantry", "p@ss")
    assert (db["HOST"], db["PORT"]) == ("db.lab.example", "6432")
    assert db["OPTIONS"] == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/pg-ca.pem"}


def test_a_unix_socket_directory_as_host() -> None:
    db = database_from_url("postgres://gantry:pw@/gantry?host=/run/postgresql")
    assert (db["HOST"], db["PORT"], db["OPTIONS"]) == ("/run/postgresql", "", {})


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://u:p@h/db", "postgres:// or postgresql:// only"),
        ("sqlite:///var/lib/x.db", "postgres:// or postgresql:// only"),
        ("postgres://u:p@h:5432/", "names no database"),
        ("postgres://u:p@h:99999/db", "GANTRY_DATABASE_URL"),
    ],
)
def test_what_is_not_a_postgresql_url_is_refused(url: str, said: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=said):
        database_from_url(url)
