"""Users and their roles, in one place for the Users page and ``./gantry users``.

Roles, on Django's own auth:
- **admin**: a superuser; everything, including engine policy and users.
- **instructor**: in the "instructor" group; sees every learner, their containers and lab
  progress, may reset a learner's lab; no policy, no users.
- **learner**: everyone else; only their own containers.

Every change is written to the audit log (action ``user.*``, target the user's name). A user
disabled loses their sessions and websockets at once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction

from engine.errors import InvalidInputError, InvalidStateError, NotFoundError

ADMIN, INSTRUCTOR, LEARNER = "admin", "instructor", "learner"
ROLES = (ADMIN, INSTRUCTOR, LEARNER)
USERNAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
INSTRUCTORS = "instructor"  # the group


def role_of(user: Any) -> str:
    """admin, instructor or learner (an anonymous user is a learner with nothing)."""
    if getattr(user, "is_superuser", False):
        return ADMIN
    if getattr(user, "is_authenticated", False) and user.groups.filter(name=INSTRUCTORS).exists():
        return INSTRUCTOR
    return LEARNER


def learners() -> Any:
    """Every active learner (neither an admin nor in the instructors' group), by name: one
    query, where role_of() asks once per user."""
    model = get_user_model()
    people = model.objects.filter(is_active=True, is_superuser=False)
    return people.exclude(groups__name=INSTRUCTORS).order_by("username")


def sees_everyone(user: Any) -> bool:
    """Admins and instructors see every learner's containers and progress."""
    return role_of(user) in (ADMIN, INSTRUCTOR)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise InvalidInputError(
            f"user name {str(name)[:40]!r}: 1 to 32 of a-z, 0-9, '_' and '-'", field="name"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"role {str(role)[:20]!r}: one of {', '.join(ROLES)}", field="role")
    return role


def new_password() -> str:
    """A one-time password: 16 characters, easy to read out and type."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


def _check_password(password: str, user: Any) -> None:
    try:
        validate_password(password, user)
    except ValidationError as err:
        raise InvalidInputError("password: " + " ".join(err.messages), field="password") from err


def find(name: str) -> Any:
    try:
        return get_user_model().objects.get(username=name)
    except get_user_model().DoesNotExist as err:
        raise NotFoundError(f"no user {name[:40]!r}") from err


@dataclass(frozen=True)
class Added:
    user: Any
    password: str  # the one-time password when it was generated, else ""


def add(name: str, role: str = LEARNER, password: str | None = None) -> Added:
    """A new active user. Without ``password`` one is generated (and answered, once)."""
    check_name(name)
    check_role(role)
    model = get_user_model()
    if model.objects.filter(username=name).exists():
        raise InvalidStateError(f"user {name} exists already", current="in-use")
    generated = "" if password is not None else new_password()
    chosen = password if password is not None else generated
    _check_password(chosen, model(username=name))
    with transaction.atomic():
        user = model.objects.create_user(username=name, password=chosen)
        set_role(user, role)
    return Added(user, generated)


def set_role(user: Any, role: str) -> None:
    check_role(role)
    user.is_superuser = user.is_staff = role == ADMIN
    user.save(update_fields=["is_superuser", "is_staff"])
    group, _ = Group.objects.get_or_create(name=INSTRUCTORS)
    if role == INSTRUCTOR:
        user.groups.add(group)
    else:
        user.groups.remove(group)


def set_password(user: Any, password: str | None = None) -> str:
    """A new password (generated when none is given: answered once). Ends the user's
    sessions: whoever used the old one logs in again."""
    chosen = password if password is not None else new_password()
    _check_password(chosen, user)
    user.set_password(chosen)
    user.save(update_fields=["password"])
    end_sessions(user)
    return "" if password is not None else chosen


def set_active(user: Any, active: bool) -> None:
    """Enable or disable; a disabled user's sessions and websockets end at once."""
    user.is_active = active
    user.save(update_fields=["is_active"])
    if not active:
        end_sessions(user)


def end_sessions(user: Any) -> int:
    """Delete every session of ``user`` and close its websockets. Answers how many."""
    keys = [
        s.session_key
        for s in Session.objects.all()
        if str(s.get_decoded().get("_auth_user_id")) == str(user.pk)
    ]
    Session.objects.filter(session_key__in=keys).delete()
    for key in keys:
        close_session_sockets(key)
    return len(keys)


def close_session_sockets(session_key: str) -> None:
    """Tell every websocket of a session to close (terminals included)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from webui.consumers.base import session_group

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(session_key), {"type": "session.logout"})
    except Exception:  # the session is gone anyway; its sockets stop at their next check
        import logging

        logging.getLogger("gantry.web").warning("could not close the sockets of a session")


def rows() -> list[dict[str, Any]]:
    """Every user as ``users list`` prints them: Name, Role, Active."""
    model = get_user_model()
    users = model.objects.order_by("username").prefetch_related("groups")
    out = []
    for user in users:
        out.append({"Name": user.get_username(), "Role": role_of(user), "Active": user.is_active})
    return out
