"""``manage.py migrate_once [--ensure-admin]``: the database's migrations, run by one web
process at a time: under a PostgreSQL advisory lock when several webs share one database (the
first applies them, the others wait and find nothing left to do), as is with SQLite (one
host). With --ensure-admin, the first administrator is made under the same lock (one admin,
however many webs start at once)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

LOCK_KEY = 0x67616E747279  # "gantry": the advisory lock every Gantry web takes to migrate


class Command(BaseCommand):
    help = "apply the migrations once per deploy (an advisory lock with PostgreSQL)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ensure-admin", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        locked = connection.vendor == "postgresql"
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            call_command("migrate", interactive=False, verbosity=0)
            if options["ensure_admin"]:
                call_command("ensure_admin")
        finally:
            if locked:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
