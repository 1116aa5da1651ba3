"""A throwaway PostgreSQL cluster for the test session, from the installed server binaries.

The cluster lives in a private directory, listens only on a unix socket in that directory (no
TCP port, so nothing can clash with another cluster on the machine), and runs with fsync off:
its data is worth nothing once the session ends. One migrated template database is made per
session; each test gets a fresh copy (`CREATE DATABASE ... TEMPLATE ...`), dropped afterwards.

PostgreSQL refuses to run as root. When the tests run as root, the server binaries are started
as an unprivileged account (`postgres` when the distribution's package created it, else
`nobody`), and the cluster directory is created outside pytest's temp tree and owned by that
account, because pytest's own temp root is private to its owner (mode 0700).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
PORT = 5432  # only names the socket file; the socket directory is private to this cluster
# A unix socket path must fit in sockaddr_un (108 bytes, with ".s.PGSQL.5432" appended).
MAX_SOCKET_DIR = 90
SETTINGS = {
    "listen_addresses": "",
    "port": str(PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "timezone": "UTC",
    "deadlock_timeout": "100ms",  # deadlock tests resolve quickly
}


class ClusterError(RuntimeError):
    """The throwaway cluster could not be set up."""


def find_bin_dir() -> Path:
    """The directory holding `initdb` and `pg_ctl`: PATH first, then Debian's layout."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: _version_key(Path(p).parent.parent.name),
        reverse=True,
    )
    for candidate in candidates:
        bin_dir = Path(candidate).parent
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    raise ClusterError(
        "no PostgreSQL server binaries found (initdb/pg_ctl on PATH or under "
        "/usr/lib/postgresql/*/bin): run scripts/bootstrap.sh --postgres, or unset "
        "CADENZA_TEST_POSTGRES to test on SQLite only"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


@dataclass
class Account:
    """Who runs the server binaries: None means the current user."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_server(cls) -> Account:
        """The current user, or an unprivileged account when running as root."""
        if os.geteuid() != 0:
            return cls()
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(entry.pw_uid, entry.pw_gid)
        raise ClusterError("running as root and found no 'postgres' or 'nobody' account")

    def chown(self, path: Path) -> None:
        """Give `path` to this account (a no-op for the current user)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, args: list[str], cwd: Path) -> None:
        """Run a server binary as this account; raise with its output if it fails."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            user=self.uid,
            group=self.gid,
            extra_groups=None if self.uid is None else [],
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )


@dataclass
class PgCluster:
    """One running throwaway cluster; `start()` it, then hand out databases."""

    base: Path
    bin_dir: Path
    account: Account
    owns_base: bool = False
    _admin: psycopg.Connection[tuple[object, ...]] | None = field(default=None, repr=False)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def create(cls, pytest_tmp: Path) -> PgCluster:
        """A cluster in `pytest_tmp`, or, as root, in a private temp dir the server can reach."""
        account = Account.for_server()
        if account.uid is None:
            base, owns = pytest_tmp, False
        else:
            base, owns = Path(tempfile.mkdtemp(prefix="cadenza-pg-")), True
            account.chown(base)
        return cls(base=base, bin_dir=find_bin_dir(), account=account, owns_base=owns)

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server's unix socket lives."""
        return self.base / "run"

    def start(self) -> None:
        """initdb, configure, and start the server; wait until it accepts connections."""
        if len(str(self.socket_dir)) > MAX_SOCKET_DIR:
            raise ClusterError(
                f"socket directory path too long for a unix socket: {self.socket_dir}; "
                "set a shorter TMPDIR or pytest --basetemp"
            )
        self.socket_dir.mkdir()
        self.account.chown(self.socket_dir)
        self.account.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            cwd=self.base,
        )
        settings = {**SETTINGS, "unix_socket_directories": str(self.socket_dir)}
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n")
        log = self.base / "server.log"
        try:
            self.account.run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log),
                 "-w", "-t", "60", "start"],
                cwd=self.base,
            )
        except ClusterError as exc:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
            raise ClusterError(f"{exc}\nserver log:\n{tail}") from exc
        self._admin = psycopg.connect(
            host=str(self.socket_dir), port=PORT, user=SUPERUSER, dbname="postgres",
            autocommit=True,
        )

    def stop(self) -> None:
        """Stop the server and remove its data (and its directory, if the cluster made it)."""
        try:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
            if (self.data_dir / "postmaster.pid").exists():
                self.account.run(
                    [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                     "-w", "stop"],
                    cwd=self.base,
                )
        finally:
            # The data is worthless now; pytest keeps its temp dirs, so keep only the log there.
            target = self.base if self.owns_base else self.data_dir
            shutil.rmtree(target, ignore_errors=True)

    def url(self, dbname: str) -> str:
        """A URL `Store.create` accepts for database `dbname` of this cluster."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{dbname}?host={host}&port={PORT}"

    def create_database(self, template: str = "template0", name: str | None = None) -> str:
        """Create a database copied from `template`; return its name."""
        name = name or f"cadenza_t{next(self._names)}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if self._server_version() >= 150000:
            # With fsync off, copying the files beats WAL-logging every block of a small
            # database (about 0.10 s against 0.16 s per test, measured on PostgreSQL 15).
            statement += sql.SQL(" STRATEGY FILE_COPY")
        self._execute(statement)
        return name

    def mark_template(self, name: str) -> None:
        """Make `name` a template nobody can connect to, so copies of it never wait."""
        self._execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending any connection a test left open to it."""
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def _server_version(self) -> int:
        return self._connection().info.server_version

    def _execute(self, statement: sql.Composed) -> None:
        self._connection().execute(statement)

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._admin is None:
            raise ClusterError("the cluster is not started")
        return self._admin
