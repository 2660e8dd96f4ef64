"""The container's user database: /etc/passwd and /etc/group parsed from bytes, and ``-u USER``
resolved to uid, gid, supplementary gids and home the way runc's libcontainer/user does it
(which is what podman 4.3 calls).

Rules (checked against podman 4.3.1 with ``podman init``):
  ""            uid 0, gid 0, no supplementary groups; HOME from root's entry if any
  "name"        the passwd entry; supplementary gids = the groups listing name as a member
  "1000"        the passwd entry with that uid if any (then as "name"); else uid 1000, gid 0
  "u:g"         as above, but the group is g (a name or a number) and there are no
                supplementary groups from membership
  a name that is in no passwd/group file (or the file is missing) is an error; a number never is

The files come from an untrusted rootfs: the caller reads at most MAX_DB_BYTES of each
(through securepath), and this parser skips malformed lines instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InvalidInputError

MAX_DB_BYTES = 1024 * 1024
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    # Supplementary gids from group membership (only when the user was found by name/uid and
    # no group was given).
    sgids: tuple[int, ...] = ()
    home: str = ""
    # The user string was empty: podman then adds no additionalGids at all.
    implicit: bool = False


def _lines(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    text = data[:MAX_DB_BYTES].decode("utf-8", errors="replace")
    out = []
    for raw in text.split("\n"):  # as runc reads it: \x85, \u2028, \x1c... are not line ends
        line = raw.strip()
        if not line or line.startswith(("#", "+", "-")):
            continue
        out.append(line.split(":"))
    return out


def _int_id(text: str) -> int | None:
    if not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def parse_passwd(data: bytes | None) -> list[PasswdEntry]:
    out = []
    for parts in _lines(data):
        if len(parts) < 4:
            continue
        uid, gid = _int_id(parts[2]), _int_id(parts[3])
        if uid is None or gid is None or not parts[0]:
            continue
        out.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return out


def parse_group(data: bytes | None) -> list[GroupEntry]:
    out = []
    for parts in _lines(data):
        if len(parts) < 3:
            continue
        gid = _int_id(parts[2])
        if gid is None or not parts[0]:
            continue
        members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else []) if m)
        out.append(GroupEntry(parts[0], gid, members))
    return out


def resolve_user(unsafe_spec: str, passwd: bytes | None, group: bytes | None) -> ExecUser:
    """Resolve ``-u`` (or the image's User) against the container's databases.
    Raises InvalidInputError with podman's wording for an unknown name."""
    if "\x00" in unsafe_spec or len(unsafe_spec) > 256:
        raise InvalidInputError("user: not a valid user specification")
    user_arg, _, group_arg = unsafe_spec.partition(":")
    users = parse_passwd(passwd)
    uid_arg = _int_id(user_arg)

    uid, gid, home, matched = 0, 0, "", None
    if user_arg:
        if uid_arg is None:
            matched = next((u for u in users if u.name == user_arg), None)
        else:
            matched = next((u for u in users if u.uid == uid_arg), None)
        if matched is not None:
            uid, gid, home = matched.uid, matched.gid, matched.home
        elif uid_arg is None:
            raise InvalidInputError(
                f"unable to find user {user_arg[:64]}: no matching entries in passwd file"
            )
        else:
            uid = uid_arg
    else:
        # No user at all: root, and HOME from root's entry when there is one.
        root = next((u for u in users if u.uid == 0), None)
        if root is not None:
            home = root.home
        if not group_arg:
            return ExecUser(0, 0, (), home, implicit=True)

    sgids: tuple[int, ...] = ()
    if group_arg or matched is not None:
        groups = parse_group(group)
        if group_arg:
            gid_arg = _int_id(group_arg)
            found = next(
                (
                    g
                    for g in groups
                    if (g.name == group_arg if gid_arg is None else g.gid == gid_arg)
                ),
                None,
            )
            if found is not None:
                gid = found.gid
            elif gid_arg is None:
                raise InvalidInputError(
                    f"unable to find group {group_arg[:64]}: no matching entries in group file"
                )
            else:
                gid = gid_arg
        elif matched is not None:
            sgids = tuple(g.gid for g in groups if matched.name in g.members)
    return ExecUser(uid, gid, sgids, home)


def additional_gids(user: ExecUser) -> list[int]:
    """process.user.additionalGids as podman writes them: the primary gid first, then the
    membership gids, without duplicates; none at all when no user was asked for."""
    if user.implicit:
        return []
    out: list[int] = []
    for gid in (user.gid, *user.sgids):
        if gid not in out:
            out.append(gid)
    return out
