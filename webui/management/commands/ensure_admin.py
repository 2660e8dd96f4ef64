"""``manage.py ensure_admin``: on a first start, an administrator named admin with a one-time
password, printed once (./gantry run calls it each start; with an admin there it does nothing).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from webui import users

FIRST_ADMIN = "admin"


class Command(BaseCommand):
    help = "create the first administrator (admin, one-time password) unless there is one"

    def handle(self, *args: Any, **options: Any) -> None:
        if get_user_model().objects.filter(is_superuser=True).exists():
            return
        added = users.add(FIRST_ADMIN, users.ADMIN)
        self.stdout.write(
            "\n  First start: an administrator was created.\n"
            f"  user: {FIRST_ADMIN}\n"
            f"  one-time password: {added.password}\n"
            f"  (change it: ./gantry passwd {FIRST_ADMIN})\n"
        )
