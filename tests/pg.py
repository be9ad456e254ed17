"""A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` and
`pg_ctl` in a temporary folder on a free port, as an unprivileged user when we are root,
stopped after."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support import free_port

__all__ = ["fresh_database", "pg_bin", "postgres_server"]


def pg_bin() -> Path:
    """The newest installed server's bin folder (Debian keeps them out of PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found[-1]).parent


def _as_user() -> dict[str, object]:
    """Run the server as `postgres` when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


@contextlib.contextmanager
def postgres_server(durable: bool = False) -> Iterator[str]:
    """A running server with a `relayhook` superuser; yields a DSN for its `postgres` db.

    Its folder is made in /tmp, not under pytest's (root's, closed to other users). Tests
    run it without fsync; durable=True keeps the server's defaults (the benchmarks)."""
    bin_dir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="relayhook-pg-"))
    data, sockets = root / "pgdata", root / "pgsock"
    data.mkdir()
    sockets.mkdir()
    who = _as_user()
    if who:
        for path in (root, data, sockets):
            shutil.chown(path, "postgres", "postgres")
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "relayhook", "--auth=trust",
         "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True, **who,  # type: ignore[arg-type]
    )  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log")]
    subprocess.run([*ctl, "-o", options, "-w", "start"], check=True, capture_output=True, **who)  # type: ignore[arg-type]
    try:
        yield f"postgresql://relayhook@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, **who)  # type: ignore[arg-type]
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(dsn: str, prefix: str = "test") -> Iterator[str]:
    """A new, empty database on the server of dsn, dropped after (with any connection
    still open to it); yields its DSN."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        yield dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]
