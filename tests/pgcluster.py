"""A PostgreSQL cluster of a test's own, on its own port, that the test may restart or stop.

Tests that take the database away must never touch the shared server (other tests use it), so
they start a throw-away cluster with the server's own tools (initdb, pg_ctl). As root, the tools
run as the ``postgres`` system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["PgCluster", "pg_bindir"]


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl live (Debian keeps them out of PATH), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PgCluster:
    """initdb, start, restart (fast or immediate), stop, on 127.0.0.1:`port` with trust auth."""

    def __init__(self, port: int) -> None:
        bindir = pg_bindir()
        if bindir is None:
            if os.environ.get("HUB_REQUIRE_PG") == "1":
                pytest.fail("initdb/pg_ctl not found: a PostgreSQL server package is required here")
            pytest.skip("initdb/pg_ctl not found (install PostgreSQL's server package)")
        self.bindir = bindir
        self.port = port
        # Outside the test's tmp_path: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="hub-pgcluster-"))
        self.data = self.root / "data"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", *args)

    async def start(self) -> None:
        await asyncio.to_thread(self._ctl, "start")

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self._ctl, "-m", mode, "stop")

    async def restart(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self._ctl, "-m", mode, "restart")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
