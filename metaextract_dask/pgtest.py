"""A private, throw-away PostgreSQL server for tests and benchmarks (never for catalogs people keep).

:class:`PostgresServer` runs ``initdb`` into a temporary directory and starts ``postgres`` listening on
127.0.0.1 (a free port) with its unix socket in that directory, password authentication only (a random
password: other local users cannot connect), ``fsync`` as asked. As root it runs the server as the
``postgres`` system user (initdb and postgres refuse to run as root).

    with PostgresServer() as pg:
        url = pg.create_database("catalog")     # postgresql+psycopg://metaextract:...@127.0.0.1:PORT/catalog
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from typing import Any

__all__ = ["PostgresServer", "find_pg_bin", "PostgresUnavailable"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server would not start."""


def find_pg_bin() -> str | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (PATH first, then Debian's layout)."""
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """Start a private PostgreSQL server (see the module docstring); :meth:`stop` removes it again.

    Parameters
    ----------
    fsync : bool
        Keep PostgreSQL's durability settings (True: the defaults, as a real server; False: faster tests).
    """

    user = "metaextract"

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = find_pg_bin()
        if self.bin is None:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb) not found; install the 'postgresql' "
                                      "package (.ci/run does so on a fresh CI machine)")
        self.fsync = fsync
        self.password = secrets.token_hex(16)
        self.port = _free_port()
        self.root = tempfile.mkdtemp(prefix="mx-pg-")
        self.data = os.path.join(self.root, "data")
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres system user
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' system user") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = [shutil.which("runuser") or "/sbin/runuser", "-u", "postgres", "--"]
        os.chmod(self.root, 0o700)
        self._started = False
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _run(self, *args: str, input_: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as, *args]
        done = subprocess.run(cmd, input=input_, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode:
            raise PostgresUnavailable(f"{os.path.basename(args[0])} failed ({done.returncode}): "
                                      f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def _start(self) -> None:
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._as:
            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", self.user, f"--pwfile={pwfile}",
                  "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        os.remove(pwfile)
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"]
        if not self.fsync:
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.root, "log"),
                  "-o", " ".join(options), "-w", "-t", "60", "start")
        self._started = True

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server (password included: this server is throw-away)."""
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        """The server log (for failure messages)."""
        try:
            with open(os.path.join(self.root, "log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self._started:
            self._started = False
            try:
                self._run(os.path.join(self.bin or "", "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
