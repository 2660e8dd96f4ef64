"""A private PostgreSQL for tests: Debian's server binaries, a cluster in a temporary directory
run as the postgres user, a unix socket only (no TCP port), password (scram) authentication."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "postgres"


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def as_postgres(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", *map(str, argv)],
        check=True, capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin"} | (env or {}),
    )  # fmt: skip


class Postgres:
    """``url``: postgres://gantry:PASSWORD@/gantry?host=SOCKET_DIR (stop() removes it all)."""

    def __init__(self) -> None:
        binaries = server_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL's server is not installed (Debian's postgresql)")
        self.bin = binaries
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-pg-"))
        os.chmod(self.tmp, 0o755)  # the postgres user and the web user reach the socket
        shutil.chown(self.tmp, USER, USER)
        self.data, self.sock = self.tmp / "data", self.tmp / "sock"
        self.password = secrets.token_hex(12)
        self.url = f"postgres://gantry:{self.password}@/gantry?host={self.sock}"

    def start(self) -> Postgres:
        pwfile = self.tmp / "pw"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, USER, USER)
        os.chmod(pwfile, 0o600)
        as_postgres(
            self.bin / "initdb", "-D", self.data, "-U", "gantry", f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        self.sock.mkdir(mode=0o755)
        shutil.chown(self.sock, USER, USER)
        options = f"-k {self.sock} -c listen_addresses='' -c fsync=off -c max_connections=200"
        as_postgres(
            self.bin / "pg_ctl", "-D", self.data, "-o", options, "-l", self.tmp / "log", "-w",
            "start",
        )  # fmt: skip
        env = {"PGPASSWORD": self.password}
        as_postgres(self.bin / "createdb", "-h", self.sock, "-U", "gantry", "gantry", env=env)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)
