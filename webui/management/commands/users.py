"""``./gantry users``: add, list, re-password, disable, enable users and set their roles, run as
the web user against the web's database (as ``./gantry passwd``).

    users add NAME [--role admin|instructor|learner] [--password-stdin]
    users list [--format json]            Name, Role, Active
    users passwd NAME [--password-stdin]  without it: a one-time password is printed
    users disable NAME | users enable NAME
    users role NAME ROLE
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engine.errors import EngineError
from webui import users
from webui.models import AuditEvent


class Command(BaseCommand):
    help = "add, list, re-password, disable or enable users, and set their roles"

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
        p = sub.add_parser("add", help="add a user (default role: learner)")
        p.add_argument("name", metavar="NAME")
        p.add_argument("--role", default=users.LEARNER, choices=users.ROLES)
        p.add_argument("--password-stdin", action="store_true", help="read the password")
        p = sub.add_parser("list", help="every user: Name, Role, Active")
        p.add_argument("--format", choices=["table", "json"], default="table")
        p = sub.add_parser("passwd", help="set a new password (printed once if generated)")
        p.add_argument("name", metavar="NAME")
        p.add_argument("--password-stdin", action="store_true", help="read the password")
        for verb, text in (("disable", "disable: sessions end at once"), ("enable", "enable")):
            p = sub.add_parser(verb, help=text)
            p.add_argument("name", metavar="NAME")
        p = sub.add_parser("role", help="set a user's role")
        p.add_argument("name", metavar="NAME")
        p.add_argument("role", choices=users.ROLES)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "do_" + options["verb"])(options)
        except EngineError as err:
            raise CommandError(err.message) from err

    def do_add(self, options: dict[str, Any]) -> None:
        password = _stdin_password() if options["password_stdin"] else None
        added = users.add(options["name"], options["role"], password)
        _audit("user.add", added.user, role=options["role"])
        self.stdout.write(f"added {added.user.get_username()} ({options['role']})")
        if added.password:
            self.stdout.write(f"one-time password: {added.password}")

    def do_list(self, options: dict[str, Any]) -> None:
        rows = users.rows()
        if options["format"] == "json":
            self.stdout.write(json.dumps(rows, indent=2))
            return
        width = max([4, *(len(r["Name"]) for r in rows)])
        self.stdout.write(f"{'NAME':<{width}}  {'ROLE':<10}  ACTIVE")
        for r in rows:
            self.stdout.write(f"{r['Name']:<{width}}  {r['Role']:<10}  {str(r['Active']).lower()}")

    def do_passwd(self, options: dict[str, Any]) -> None:
        user = users.find(options["name"])
        password = _stdin_password() if options["password_stdin"] else None
        generated = users.set_password(user, password)
        _audit("user.passwd", user)
        self.stdout.write(f"password of {user.get_username()} changed")
        if generated:
            self.stdout.write(f"one-time password: {generated}")

    def do_disable(self, options: dict[str, Any]) -> None:
        user = users.find(options["name"])
        users.set_active(user, False)
        _audit("user.disable", user)
        self.stdout.write(f"disabled {user.get_username()}")

    def do_enable(self, options: dict[str, Any]) -> None:
        user = users.find(options["name"])
        users.set_active(user, True)
        _audit("user.enable", user)
        self.stdout.write(f"enabled {user.get_username()}")

    def do_role(self, options: dict[str, Any]) -> None:
        user = users.find(options["name"])
        users.set_role(user, options["role"])
        _audit("user.role", user, role=options["role"])
        self.stdout.write(f"{user.get_username()} is now {options['role']}")


def _stdin_password() -> str:
    return sys.stdin.readline().rstrip("\n")


def _audit(action: str, user: Any, **detail: Any) -> None:
    """User changes from the command line go to the audit log too (no web user did them)."""
    AuditEvent.objects.create(
        user=None, action=action, target=user.get_username(), detail={"by": "cli", **detail}
    )
