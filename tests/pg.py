"""A throwaway PostgreSQL cluster for tests: ``initdb`` and ``pg_ctl`` in a temporary folder.

The cluster listens on 127.0.0.1 at a free port, with its socket in the same folder, and has
one superuser (``ailedger``) whose password the test makes up, so nothing else on the machine
can use it. ``fsync`` stays on: a test of durability must see what a real server does.
PostgreSQL refuses to run as root, so under root the folder is handed to the ``postgres``
system user and the binaries run as that user (``runuser -u postgres --``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "ailedger"


def pg_binary(name: str) -> Path | None:
    """Where a PostgreSQL binary is: Debian's folder, else the PATH; None if absent."""
    if (PG_BIN / name).is_file():
        return PG_BIN / name
    found = shutil.which(name)
    return Path(found) if found else None


def available() -> bool:
    """Whether ``initdb`` and ``pg_ctl`` are installed."""
    return pg_binary("initdb") is not None and pg_binary("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """A PostgreSQL server this test session started, in its own folder (only it stops it)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ailedger-pg-")))
    port: int = field(default_factory=_free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        """The DSN of the cluster's default database ``postgres``."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={database} user={SUPERUSER} "
            f"password={self.password} connect_timeout=10"
        )

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> None:
        """``initdb`` then ``pg_ctl start``; waits until the server accepts connections. On
        failure nothing is left behind (the server stopped, the folder removed)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("the PostgreSQL binaries (initdb, pg_ctl) are not installed")
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(
            str(initdb),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-instructions",
        )
        pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=on -c max_connections=60"
        )
        self._run(
            str(pg_ctl),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
        )
        self.running = True
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self) -> str:
        """A new empty schema of the cluster; returns a DSN that uses it."""
        return new_database(self.dsn)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then remove the folder."""
        pg_ctl = pg_binary("pg_ctl")
        # a postmaster.pid: the server runs (or started and never answered): stop it
        if pg_ctl is not None and (self.running or (self.data / "postmaster.pid").exists()):
            self._run(str(pg_ctl), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


def new_database(dsn: str) -> str:
    """A new empty schema on the server of ``dsn`` (a superuser's); return a DSN that uses
    it (``search_path``). Cheaper than a database of its own, and as separate for a log."""
    name = f"t{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return make_conninfo(dsn, options=f"-csearch_path={name}")
