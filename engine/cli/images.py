"""CLI verbs of the images domain, with podman's words, flags and output:

pull [--tls-verify=false] [--platform OS/ARCH] [-q] REF   progress on stderr, the id on stdout
images [--format json] [-q] [--no-trunc]
rmi [-f] IMAGE...
load -i PATH [--platform OS/ARCH]                         OCI layout, oci- or docker-archive
login [-u USER] [-p PASS | --password-stdin] [--tls-verify=false] REGISTRY
logout REGISTRY
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engine.cli.call import call
from engine.cli.output import (
    add_format,
    go_time,
    is_json,
    is_template,
    print_json,
    print_table,
    print_template,
)
from engine.core import Engine
from engine.errors import EngineError, InvalidInputError
from engine.protocol import verbs

if TYPE_CHECKING:
    from engine.images.pull import PullJob
    from engine.images.service import Images

BAR = 30


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=None, metavar="BOOL")
    p.add_argument("--platform", default="", help="OS/ARCH[/VARIANT] (default: this host)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("images", help="list images")
    add_format(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only image ids")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("rmi", help="remove images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="remove an image with several names")
    p.set_defaults(func=cmd_rmi)

    p = sub.add_parser("load", help="load images from an OCI layout or an archive")
    p.add_argument("-i", "--input", required=True, metavar="PATH")
    p.add_argument("--platform", default="")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("login", help="keep credentials for a registry")
    p.add_argument("registry", metavar="REGISTRY")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=True, metavar="BOOL")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="forget the credentials of a registry")
    p.add_argument("registry", metavar="REGISTRY")
    p.set_defaults(func=cmd_logout)


def _images(engine: Engine) -> Images:
    """The images service, imported when a verb runs (it brings the registry client)."""
    from engine.images.service import Images

    return engine.get(Images)


def _prepare(engine: Engine) -> None:
    """The CLI has no worker start-up: sweep abandoned work (locked work is left alone)."""
    from engine.images.store import Store

    engine.ensure_root()
    engine.get(Store).sweep_tmp()


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}GiB"


def human_si(size: float) -> str:
    """podman's SIZE column (go-units HumanSize): decimal units, three significant digits."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"


class TerminalProgress:
    """podman's pull output: one line per blob, redrawn in place on a terminal; on a pipe,
    one line per blob when it is done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = 0
        self.printed: set[int] = set()
        self.header = False
        self.last = 0.0

    def line(self, layer: dict[str, Any]) -> str:
        short, state = layer["short"], layer["state"]
        if state == "exists":
            return f"Copying blob {short} skipped: already exists"
        if state == "done":
            return f"Copying blob {short} done"
        if state == "error":
            return f"Copying blob {short} failed"
        size = max(1, layer["size"])
        filled = min(BAR, int(BAR * layer["done"] / size))
        bar = "=" * filled + (">" if filled < BAR else "") + "-" * max(0, BAR - filled - 1)
        tail = f"{human(layer['done'])} / {human(layer['size'])}"
        if state == "extracting":
            tail += " (extracting)"
        elif layer["speed"]:
            tail += f" {human(layer['speed'])}/s"
        return f"Copying blob {short} [{bar}] {tail}"

    def __call__(self, job: PullJob, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        snap = job.snapshot()
        if not snap["layers"]:
            return
        if not self.header:
            self.stream.write("Getting image source signatures\n")
            self.header = True
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")
            for layer in snap["layers"]:
                self.stream.write("\x1b[2K" + self.line(layer) + "\n")
            self.drawn = len(snap["layers"])
        else:
            for i, layer in enumerate(snap["layers"]):
                if i not in self.printed and layer["state"] in ("done", "exists"):
                    self.printed.add(i)
                    self.stream.write(self.line(layer) + "\n")
        self.stream.flush()


def cmd_pull(engine: Engine, args: argparse.Namespace) -> int:
    from engine.registry import refs

    _prepare(engine)
    images = _images(engine)
    ref = refs.parse(args.ref)  # a bad reference fails before anything is printed
    progress = None if args.quiet else TerminalProgress(sys.stderr)
    if progress:
        sys.stderr.write(f"Trying to pull {ref}...\n")
    record = images.pull(
        args.ref, platform=args.platform or None, tls_verify=args.tls_verify, progress=progress
    )
    if progress:
        sys.stderr.write(f"Copying config {record.id.removeprefix('sha256:')[:10]} done\n")
        sys.stderr.write("Writing manifest to image destination\nStoring signatures\n")
    print(record.id.removeprefix("sha256:"))
    return 0


IMAGE_TITLES = {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED"}


def image_rows(engine: Engine, no_trunc: bool) -> list[dict[str, Any]]:
    """A row per name of each image (one "<none>" row for an image without names), with the
    fields ``podman images --format '{{...}}'`` sees: .Repository .Tag .ID .Digest .Size
    (human) .Created/.CreatedSince ("2 weeks ago") .CreatedAt, and the JSON fields."""
    from engine.images.service import created_unix, list_entry

    now, rows = time.time(), []
    for record in _images(engine).images():
        entry = list_entry(record)
        created = created_unix(record.config)
        ago = _ago(now - created) if created else ""
        for name in record.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            rows.append(
                entry
                | {
                    "Repository": repo,
                    "Tag": tag,
                    "ID": entry["Id"] if no_trunc else entry["Id"][:12],
                    "Size": human_si(record.size),
                    "Created": ago,
                    "CreatedSince": ago,
                    "CreatedAt": go_time(created),
                }
            )
    return rows


def cmd_images(engine: Engine, args: argparse.Namespace) -> int:
    if is_json(args.format):
        print_json(_images(engine).list_json())
        return 0
    rows = image_rows(engine, args.no_trunc)
    if args.quiet:
        for image_id in dict.fromkeys(row["ID"] for row in rows):
            print(image_id)
        return 0
    if is_template(args.format):
        print_template(args.format, rows, IMAGE_TITLES)
        return 0
    columns = ("Repository", "Tag", "ID", "Created", "Size")
    print_table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        [[row[c] for c in columns] for row in rows],
    )
    return 0


def _ago(seconds: float) -> str:
    for unit, span in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400)):
        if seconds >= span:
            n = int(seconds // span)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} hours ago"
    if seconds >= 60:
        return f"{int(seconds // 60)} minutes ago"
    return "Less than a minute ago"


def cmd_rmi(engine: Engine, args: argparse.Namespace) -> int:
    """podman's statuses: 1 when an image is not known, 2 when one is in use."""
    status = 0
    for image in args.images:
        try:
            remove = verbs.RemoveImage(image=image, force=args.force)
            result = call(engine, verbs.IMAGE_REMOVE, remove)
        except EngineError as err:
            print(f"Error: {err.message}", file=sys.stderr)
            status = max(status, 1 if err.code == "not_found" else 2)
            continue
        for name in result["untagged"]:
            print(f"Untagged: {name}")
        for image_id in result["deleted"]:
            print(f"Deleted: {image_id.removeprefix('sha256:')}")
    return status


def cmd_load(engine: Engine, args: argparse.Namespace) -> int:
    _prepare(engine)
    records = _images(engine).load(Path(args.input), platform=args.platform or None)
    for record in records:
        print("Loaded image: " + (", ".join(record.names) or record.id.removeprefix("sha256:")))
    return 0


def cmd_login(engine: Engine, args: argparse.Namespace) -> int:
    engine.ensure_root()
    username = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    else:
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise InvalidInputError("login: a username and a password are required")
    login = verbs.Login(
        registry=args.registry, username=username, password=password, tls_verify=args.tls_verify
    )
    call(engine, verbs.REGISTRY_LOGIN, login)
    print("Login Succeeded!")
    return 0


def cmd_logout(engine: Engine, args: argparse.Namespace) -> int:
    if not call(engine, verbs.REGISTRY_LOGOUT, verbs.Registry(registry=args.registry))["removed"]:
        raise InvalidInputError(f"not logged into {args.registry}")
    print(f"Removed login credentials for {args.registry}")
    return 0
