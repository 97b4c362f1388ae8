"""Real processes for the end-to-end tests: a database, the sandbox, gunicorn, Q clusters.

A `Stack` is one isolated copy of the system: its own database (cloned from a bootstrapped
template, so every test starts from the same state in ~0.2 s), its own sandbox, web server
and clusters on free ports, each in its own process group so that a test can kill -9 a
cluster with all its workers. The test talks to it the way the outside world does: signed
HTTP to the webhooks, the sandbox's control API, `manage.py` subcommands, and SQL reads.

The pacer (`scripts/run.py pace`) stands in for Django-Q2's scheduler, which only looks at
its schedules every 30 s: it enqueues the same scheduled jobs every second into the same
broker, so the clusters under test run them, just sooner.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import environ
import psycopg
import requests
from psycopg import sql

from integrations.changenow.nudge import sign_nudge
from integrations.nowpayments.ipn import SIGNATURE_HEADER, sign_ipn
from integrations.sandbox import SandboxConfig, SandboxServer
from integrations.sandbox.config import DEFAULT_HOST_WALLET, DEFAULT_USDT_CONTRACT

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
GUNICORN = str(Path(PY).with_name("gunicorn"))
RUN_SCRIPT = str(REPO / "scripts" / "run.py")

IPN_SECRET = "e2e-ipn-secret"
NUDGE_SECRET = "e2e-nudge-secret"
SECRET_KEY = "e2e-secret-key-" + "k" * 50
ETH_PRICE_USD = Decimal("3000")  # the sandbox's default quote
HOST_WALLET = DEFAULT_HOST_WALLET
USDT_CONTRACT = DEFAULT_USDT_CONTRACT
START_TIMEOUT = 30.0
LOG_TAIL_LINES = 60
PR_SET_PDEATHSIG = 1

T = TypeVar("T")
_names = itertools.count(1)
# One line of the sandbox's request log: ... "POST /rpc HTTP/1.1" 502 -
_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- database server -------------------------------------------------------------------------


class DbServer:
    """The PostgreSQL server the e2e databases live on: DATABASE_URL's server when set,
    else the embedded one (the same rule as the application's settings)."""

    def __init__(self) -> None:
        url = os.environ.get("DATABASE_URL", "")
        if not url:
            from backoffice.embedded_db import ensure_running

            url = ensure_running().url()
        self.base_url = url
        config = environ.Env.db_url_config(url)
        self.params = {
            "host": unquote(str(config.get("HOST") or "")) or None,
            "port": config.get("PORT") or None,
            "user": config.get("USER") or None,
            "password": config.get("PASSWORD") or None,
        }

    def connect(self, name: str = "postgres") -> psycopg.Connection[Any]:
        params = {k: v for k, v in self.params.items() if v}
        return psycopg.connect(dbname=name, autocommit=True, **params)

    def url(self, name: str) -> str:
        return urlsplit(self.base_url)._replace(path=f"/{name}").geturl()

    def create(self, name: str, *, template: str | None = None) -> None:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with self.connect() as conn:
            conn.execute(query)

    def drop(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def drop_stale(self, prefix: str = "e2e_") -> None:
        """Drop databases left behind by e2e runs whose process is gone (a killed run)."""
        with self.connect() as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]
                )
            ]
        for name in names:
            pid = next((int(p) for p in name.split("_") if p.isdigit()), None)
            if pid is not None and pid != os.getpid() and not _alive(pid):
                with contextlib.suppress(psycopg.Error):
                    self.drop(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test run itself is killed (no teardown), the
    kernel sends this process SIGTERM, on which gunicorn and the Q cluster stop their own
    workers, instead of leaving them listening (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def base_env(database_url: str, redis_url: str | None = None) -> dict[str, str]:
    """The environment of every process of a stack: production settings (DEBUG off), test
    secrets, providers pointed at the stack's sandbox later by `Stack`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SANDBOX_", "PYTEST_"))
        and k not in {"DATABASE_URL", "REDIS_URL", "E2E_REDIS_URL"}
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "backoffice.settings",
            "DATABASE_URL": database_url,
            "DEBUG": "false",
            "SECRET_KEY": SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "NOWPAYMENTS_IPN_SECRET": IPN_SECRET,
            "CHANGENOW_WEBHOOK_SECRET": NUDGE_SECRET,
            "CHANGENOW_API_KEY": "e2e-changenow-key",
            "HOST_WALLET_ADDRESS": HOST_WALLET,
            "USDT_CONTRACT_ADDRESS": USDT_CONTRACT,
            "CONVERSION_THRESHOLD_USD": "20",
            "PLATFORM_FEE_PERCENT": "3",
            "WALLET_CONFIRMATIONS": "1",
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
            "Q_WORKERS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def manage(
    *args: str, env: dict[str, str], timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PY, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def bootstrap_template(server: DbServer, name: str) -> None:
    """A database with the schema, schedules, settings row and the demo merchants."""
    server.drop(name)
    server.create(name)
    env = base_env(server.url(name))
    # A sandbox of its own serves ChangeNOW's currency list, which bootstrap loads and the
    # demo merchants are validated against; its chain is not used (no opening balance here).
    catalogue = SandboxServer(SandboxConfig()).start()
    try:
        env["CHANGENOW_API_URL"] = catalogue.url
        manage("bootstrap", env=env)
        manage("demo", "--admin-password", "e2e-admin-password-1", env=env)
    finally:
        catalogue.stop()


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        log.write(f"\n===== start {' '.join(self.argv)}\n".encode())
        log.flush()
        # Its own session: kill -9 of the group takes the cluster's workers with it.
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> str:
        def seen() -> str | None:
            log = self.log()
            if text in log:
                return log
            if not self.alive():
                raise AssertionError(f"{self.name} exited before {text!r}:\n{self.tail()}")
            return None

        try:
            return wait_until(seen, timeout=timeout, what=f"{self.name}: {text!r}", interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log:\n{self.tail()}") from None

    def kill9(self) -> None:
        """kill -9 of the whole process group: no handler runs, nothing is flushed."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM to the leader (a Q cluster stops its workers itself), then kill -9 of
        whatever is left of the group."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


class Sandbox:
    """The sandbox's control API (``/_sandbox/...``), over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.post(f"{self.url}{path}", json=body or {}, timeout=10)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json(parse_float=Decimal)

    def state(self) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/_sandbox/state", timeout=10)
        assert response.status_code == 200, response.text
        return response.json(parse_float=Decimal)

    def config(self, **values: Any) -> Any:
        return self._post("/_sandbox/config", values)

    def fail(self, **rule: Any) -> Any:
        return self._post("/_sandbox/fail", rule)

    def script(self, exchange_id: str, **script: Any) -> Any:
        return self._post(f"/_sandbox/exchanges/{exchange_id}/script", script)

    def exchanges(self) -> list[dict[str, Any]]:
        return list(self.state()["exchanges"])

    def exchange(self, exchange_id: str) -> dict[str, Any]:
        return next(e for e in self.exchanges() if e["id"] == exchange_id)

    def fail_rules(self) -> list[dict[str, Any]]:
        return list(self.state()["fail_rules"])

    def advance_clock(self, seconds: float) -> Any:
        return self._post("/_sandbox/clock", {"advance": seconds})


@dataclass
class Payment:
    payment_id: str
    reference: str
    usd: Decimal
    eth: Decimal


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    server: DbServer
    template: str
    workdir: Path
    redis_url: str | None = None
    sandbox_knobs: dict[str, str] = field(default_factory=dict)
    # Log every request the sandbox answers (with its status): lets a test count the
    # faults the sandbox injected at random (`sandbox_statuses`).
    sandbox_requests_logged: bool = False
    procs: dict[str, Proc] = field(default_factory=dict)
    db_name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    web_url: str = ""
    sandbox: Sandbox | None = None
    _conn: psycopg.Connection[Any] | None = None
    _payments: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- life cycle ------------------------------------------------------------------------

    def start(self, *, web: bool = True) -> Stack:
        self.db_name = f"e2e_{os.getpid()}_{next(_names)}"
        self.server.create(self.db_name, template=self.template)
        self.env = base_env(self.server.url(self.db_name), self.redis_url)
        sandbox_env = dict(self.env)
        sandbox_env.update({f"SANDBOX_{k.upper()}": str(v) for k, v in self.sandbox_knobs.items()})
        argv = [PY, "manage.py", "sandbox", "--port", "0"]
        if self.sandbox_requests_logged:
            argv.append("--verbose-requests")
        box = self._spawn("sandbox", argv, env=sandbox_env).wait_for_log("sandbox listening on ")
        url = box.split("sandbox listening on ", 1)[1].split()[0]
        self.sandbox = Sandbox(url)
        self.env.update({"CHANGENOW_API_URL": url, "WALLET_RPC_URL": f"{url}/rpc"})
        # The template was bootstrapped with no chain to read: book the opening balance now.
        self.manage("ledger_opening")
        if web:
            self.start_web()
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        if name in self.procs and self.procs[name].alive():
            raise AssertionError(f"{name} is already running")
        proc = Proc(name, argv, env or self.env, self.workdir / f"{name}.log").start()
        self.procs[name] = proc
        return proc

    def start_web(self, workers: int = 2) -> Proc:
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        proc = self._spawn(
            "web",
            [
                GUNICORN,
                "backoffice.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(workers),
                # Its default control socket is one fixed path: two servers would share it.
                "--no-control-socket",
            ],
        )

        def answering() -> bool:
            if not proc.alive():
                raise AssertionError(f"gunicorn exited:\n{proc.tail()}")
            try:
                requests.get(f"{self.web_url}/healthz", timeout=15)
            except requests.ConnectionError:
                return False
            return True

        wait_until(answering, timeout=START_TIMEOUT, what="gunicorn to answer", interval=0.05)
        return proc

    def start_cluster(self, name: str = "qcluster", nice: int = 0) -> Proc:
        """A Q cluster; `nice` lowers its CPU priority (its workers inherit it), as a host
        that also serves the web would run it."""
        argv = [PY, "manage.py", "qcluster"]
        proc = self._spawn(name, ["nice", "-n", str(nice), *argv] if nice else argv)
        proc.wait_for_log("running.")
        return proc

    def start_pacer(
        self, interval: float = 1.0, jobs: str | None = None, name: str = "pacer"
    ) -> Proc:
        argv = [PY, RUN_SCRIPT, "pace", "--interval", str(interval)]
        if jobs:
            argv += ["--jobs", jobs]
        proc = self._spawn(name, argv)
        proc.wait_for_log("pacer: enqueuing")
        return proc

    def stop(self, name: str) -> None:
        self.procs[name].stop()

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        if self.db_name:
            self.server.drop(self.db_name)

    def logs(self) -> str:
        parts = [f"database {self.db_name}; logs under {self.workdir}"]
        for proc in self.procs.values():
            state = "running" if proc.alive() else f"exited {proc.popen and proc.popen.returncode}"
            parts.append(f"--- {proc.name} ({state}), last {LOG_TAIL_LINES} lines:\n{proc.tail()}")
        with contextlib.suppress(Exception):
            parts.append(f"--- orders:\n{self.describe()}")
        return "\n".join(parts)

    # -- manage.py ---------------------------------------------------------------------------

    def manage(self, *args: str, check: bool = True, timeout: float = 60) -> Any:
        return manage(*args, env=self.env, check=check, timeout=timeout)

    def manage_json(self, *args: str, check: bool = True) -> Any:
        result = self.manage(*args, "--json", check=check)
        return json.loads(result.stdout.strip().splitlines()[-1], parse_float=Decimal)

    # -- HTTP in -----------------------------------------------------------------------------

    def payment(
        self, reference: str, usd: str | Decimal, *, payment_id: str | None = None
    ) -> Payment:
        usd = Decimal(usd)
        eth = (usd / ETH_PRICE_USD * Decimal("0.995")).quantize(Decimal("1e-8"), ROUND_DOWN)
        # NOWPayments' payment ids are digits (intake refuses anything else): this stack's
        # database number, then a counter.
        number = "".join(ch for ch in self.db_name if ch.isdigit())
        payment_id = payment_id or f"{number}{next(self._payments):06d}"
        return Payment(payment_id, reference, usd, eth)

    def ipn_body(self, payment: Payment, *, status: str = "finished") -> dict[str, Any]:
        return {
            "payment_id": payment.payment_id,
            "payment_status": status,
            "pay_address": "0x" + "ab" * 20,
            "price_amount": str(payment.usd),
            "price_currency": "usd",
            "pay_amount": str(payment.eth),
            "actually_paid": str(payment.eth) if status == "finished" else "0",
            "pay_currency": "eth",
            "order_id": f"{payment.reference}:inv-{payment.payment_id}",
            "order_description": "e2e order",
            "outcome_amount": str(payment.eth),
            "outcome_currency": "eth",
        }

    def post_ipn(
        self,
        payload: dict[str, Any] | bytes,
        *,
        signature: str | None = None,
        body: bytes | None = None,
    ) -> requests.Response:
        """Sign `payload` like NOWPayments; `body`/`signature` override for tampering."""
        signed_body, signed = sign_ipn(payload, IPN_SECRET)
        return requests.post(
            f"{self.web_url}/webhooks/nowpayments/",
            data=body if body is not None else signed_body,
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature if signature is not None else signed,
            },
            timeout=10,
        )

    def nowpayments_pays(self, payment: Payment) -> str:
        """NOWPayments' payout of a finished payment reaches the host wallet on chain before
        its IPN is sent (DESIGN.md 12.2)."""
        assert self.sandbox is not None
        return self.sandbox._post("/_sandbox/pay", {"asset": "eth", "amount": str(payment.eth)})[
            "tx_hash"
        ]

    def pay(self, *payments: Payment) -> None:
        for payment in payments:
            self.nowpayments_pays(payment)
            response = self.post_ipn(self.ipn_body(payment))
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "applied", response.text

    def post_nudge(
        self, exchange_id: str, *, secret: str = NUDGE_SECRET, timestamp: int | None = None
    ) -> requests.Response:
        body = json.dumps({"id": exchange_id}).encode()
        return requests.post(
            f"{self.web_url}/webhooks/changenow/",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Signature": sign_nudge(body, secret, timestamp=timestamp),
            },
            timeout=10,
        )

    # -- SQL out -----------------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.server.connect(self.db_name)
        return self._conn

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(query, params).fetchall())

    def one(self, query: str, params: Any = None) -> Any:
        rows = self.rows(query, params)
        assert len(rows) == 1, f"expected one row, got {rows}"
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def states(self, table: str) -> dict[str, int]:
        query = sql.SQL("SELECT state, count(*) FROM {} GROUP BY state").format(
            sql.Identifier(table)
        )
        return {state: n for state, n in self.conn.execute(query).fetchall()}

    def describe(self) -> str:
        lines = [f"accumulations: {self.states('payouts_accumulation')}"]
        for table in ("batches_conversionbatch", "payouts_payout"):
            for row in self.rows(
                sql.SQL(
                    "SELECT id, state, exchange_id, provider_status, retry_count, "
                    "last_error_code, left(last_error, 160) FROM {} ORDER BY created_at"
                ).format(sql.Identifier(table))
            ):
                lines.append(f"{table} {row}")
        lines.extend(
            f"transfer {row}"
            for row in self.rows(
                "SELECT coalesce(batch_id::text, payout_id::text), attempt, asset, amount, "
                "state, broadcast_count FROM payouts_transfer ORDER BY id"
            )
        )
        if self.sandbox is not None:
            lines.extend(self._sandbox_view())
        return "\n".join(lines)

    def _sandbox_view(self) -> list[str]:
        """What the sandbox says about the open orders' exchanges and our hashes there: the
        first thing to read when an order never settles."""
        assert self.sandbox is not None
        try:
            state = self.sandbox.state()
        except Exception as exc:  # noqa: BLE001 - diagnostics only, never hide the failure
            return [f"sandbox state unreadable: {exc}"]
        open_ids = {
            row[0]
            for row in self.rows(
                "SELECT exchange_id FROM batches_conversionbatch WHERE state IN "
                "('reserved', 'exchange_created', 'funds_sent', 'converting') "
                "UNION ALL SELECT exchange_id FROM payouts_payout WHERE state IN "
                "('reserved', 'exchange_created', 'funds_sent', 'converting')"
            )
        }
        deposits = {d["tx_hash"]: d for d in state.get("deposits", [])}
        lines = []
        for exchange in state.get("exchanges", []):
            if exchange["id"] in open_ids:
                lines.append(
                    f"sandbox exchange {exchange['id']}: {exchange['status']}, deposit "
                    f"{exchange.get('payinHash')} at {exchange.get('depositReceivedAt')}"
                )
        for tx_hash, order_id in self.rows(
            "SELECT t.tx_hash, coalesce(f.batch_id::text, f.payout_id::text) "
            "FROM payouts_transfertx t JOIN payouts_transfer f ON f.id = t.transfer_id "
            "LEFT JOIN batches_conversionbatch b ON b.id = f.batch_id "
            "LEFT JOIN payouts_payout p ON p.id = f.payout_id "
            "WHERE coalesce(b.state, p.state) IN "
            "('reserved', 'exchange_created', 'funds_sent', 'converting') ORDER BY t.id"
        ):
            seen = deposits.get(tx_hash)
            lines.append(
                f"tx {tx_hash} of {order_id}: "
                + (
                    f"sandbox deposit for {seen['exchange_id']} ({seen['note']})"
                    if seen
                    else "not a sandbox deposit"
                )
            )
        lines.append(f"sandbox mempool: {state.get('mempool')}")
        return lines

    def wait_for(
        self, check: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.2
    ) -> T:
        try:
            return wait_until(check, timeout=timeout, what=what, interval=interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def wait_all_paid(self, count: int, timeout: float = 60) -> None:
        self.wait_for(
            lambda: (
                self.states("payouts_accumulation") == {"paid": count} and not self.open_orders()
            ),
            f"all {count} payments paid out",
            timeout,
        )

    def open_orders(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT 'batch', id, state FROM batches_conversionbatch "
            "WHERE state IN ('reserved', 'exchange_created', 'funds_sent', 'converting') "
            "UNION ALL SELECT 'payout', id, state FROM payouts_payout "
            "WHERE state IN ('reserved', 'exchange_created', 'funds_sent', 'converting')"
        )

    def batch_ids(self) -> list[Any]:
        return [r[0] for r in self.rows("SELECT id FROM batches_conversionbatch ORDER BY 1")]

    def sandbox_statuses(self, path_prefix: str = "") -> dict[int, int]:
        """How many requests the sandbox answered with each HTTP status (its request log;
        needs `sandbox_requests_logged`), for paths starting with `path_prefix`."""
        assert self.sandbox_requests_logged, "start the stack with sandbox_requests_logged"
        counts: dict[int, int] = {}
        for match in _REQUEST_LINE.finditer(self.procs["sandbox"].log()):
            if match["path"].startswith(path_prefix):
                status = int(match["status"])
                counts[status] = counts.get(status, 0) + 1
        return counts


# --- the books -------------------------------------------------------------------------------


def assert_books_balance(stack: Stack) -> None:
    """The money checks of DESIGN.md section 6, from our own SQL and the sandbox's ledger,
    independent of `manage.py reconcile` (which the tests run as well)."""
    # A completed batch: its rows hold exactly its ETH, and their USDT plus the platform's
    # share is exactly what the exchange paid.
    for batch_id, rows, eth, usdt, row_count, eth_total, received, platform in stack.rows(
        "SELECT b.id, count(a.id), sum(a.eth), sum(a.usdt), b.row_count, b.eth_total, "
        "b.usdt_received, b.platform_usdt FROM batches_conversionbatch b "
        "JOIN payouts_accumulation a ON a.batch_id = b.id WHERE b.state = 'completed' "
        "GROUP BY b.id"
    ):
        assert (rows, eth) == (row_count, eth_total), f"batch {batch_id} rows {rows}/{eth}"
        assert usdt + platform == received, f"batch {batch_id}: {usdt} + {platform} != {received}"
        assert platform >= 0
    # A payout: exactly the USDT of its rows.
    for payout_id, rows, usdt, row_count, amount in stack.rows(
        "SELECT p.id, count(a.id), sum(a.usdt), p.row_count, p.usdt_amount "
        "FROM payouts_payout p JOIN payouts_accumulation a ON a.payout_id = p.id "
        "WHERE p.state NOT IN ('failed', 'force_closed') GROUP BY p.id"
    ):
        assert (rows, usdt) == (row_count, amount), f"payout {payout_id}: {rows}/{usdt}"
    # At most one transaction ever broadcast per order; a completed order sent exactly its
    # amount, once.
    for order, broadcast in stack.rows(
        "SELECT coalesce(batch_id::text, payout_id::text), count(*) FROM payouts_transfer "
        "WHERE broadcast_count > 0 OR state IN ('broadcast', 'mined') GROUP BY 1"
    ):
        assert broadcast <= 1, f"order {order} has {broadcast} broadcast transactions"
    sent = stack.rows(
        "SELECT 'batch', b.id::text, b.eth_total, t.amount, t.asset, t.state, t.tx_hash "
        "FROM batches_conversionbatch b JOIN payouts_transfer t ON t.batch_id = b.id "
        "WHERE b.state = 'completed' UNION ALL "
        "SELECT 'payout', p.id::text, p.usdt_amount, t.amount, t.asset, t.state, t.tx_hash "
        "FROM payouts_payout p JOIN payouts_transfer t ON t.payout_id = p.id "
        "WHERE p.state = 'completed'"
    )
    for kind, order, amount, transfer_amount, asset, state, _hash in sent:
        assert state == "mined", f"{kind} {order}: transfer {state}"
        assert transfer_amount == amount, f"{kind} {order}: sent {transfer_amount} of {amount}"
        assert asset == ("eth" if kind == "batch" else "usdt")
    completed = stack.one(
        "SELECT (SELECT count(*) FROM batches_conversionbatch WHERE state = 'completed') + "
        "(SELECT count(*) FROM payouts_payout WHERE state = 'completed')"
    )
    assert len(sent) == completed, f"{len(sent)} transfers for {completed} completed orders"

    # The sandbox's ledger agrees: one deposit per funded exchange and nothing else, every
    # host-wallet transaction is one we stored, and the USDT left is what payouts sent.
    assert stack.sandbox is not None
    state = stack.sandbox.state()
    notes = [d for d in state["deposits"] if d["note"]]
    assert not notes, f"deposits the sandbox did not credit: {notes}"
    per_exchange: dict[str, int] = {}
    for deposit in state["deposits"]:
        if deposit["exchange_id"]:
            per_exchange[deposit["exchange_id"]] = per_exchange.get(deposit["exchange_id"], 0) + 1
    assert all(n == 1 for n in per_exchange.values()), per_exchange
    stored = {
        row[0].lower()
        for row in stack.rows("SELECT tx_hash FROM payouts_transfer WHERE tx_hash <> ''")
    }
    host_txs = [t for t in state["transactions"] if t["from"].lower() == HOST_WALLET.lower()]
    assert {t["hash"].lower() for t in host_txs} <= stored, "a host transaction we never stored"
    exchanges = {e["id"]: e for e in state["exchanges"]}
    for batch_id, exchange_id, eth_total, raw in stack.rows(
        "SELECT id, exchange_id, eth_total, usdt_received_raw FROM batches_conversionbatch "
        "WHERE state = 'completed'"
    ):
        exchange = exchanges[exchange_id]
        assert exchange["status"] == "finished", (batch_id, exchange["status"])
        assert Decimal(exchange["amountFrom"]) == eth_total, (batch_id, exchange["amountFrom"])
        assert Decimal(exchange["amountTo"]) == raw, (batch_id, exchange["amountTo"], raw)
    usdt_sent = stack.one(
        "SELECT coalesce(sum(t.amount), 0) FROM payouts_transfer t "
        "WHERE t.payout_id IS NOT NULL AND t.state = 'mined'"
    )
    # ChangeNOW pays each conversion's USDT into the host wallet on chain.
    usdt_in = sum(
        (
            Decimal(e["amountTo"])
            for e in state["exchanges"]
            if e["status"] in ("sending", "finished")
            and e["toCurrency"] == "usdt"
            and (e["payoutAddress"] or "").lower() == HOST_WALLET.lower()
        ),
        Decimal(0),
    )
    host_usdt = Decimal(state["balances"][HOST_WALLET]["usdt"])
    assert host_usdt == Decimal("100000") + usdt_in - usdt_sent, (host_usdt, usdt_in, usdt_sent)


def host_transactions(stack: Stack) -> list[dict[str, Any]]:
    """The sandbox chain's transactions sent by the host wallet (not NOWPayments' or
    ChangeNOW's payments to it)."""
    assert stack.sandbox is not None
    txs = stack.sandbox.state()["transactions"]
    return [t for t in txs if t["from"].lower() == HOST_WALLET.lower()]


UNBOOKED_FOR_CLOSED = (
    "changenow: a closed order's payout is unbooked",
    "changenow: a closed order's refund is unbooked",
)


def book_what_closed_orders_received(stack: Stack) -> list[str]:
    """An approver's part after a write-off whose exchange paid out anyway: reconcile names
    each payment into the host wallet for a closed order; each is booked with
    `owner_transfer` (verified on chain). Returns the hashes booked."""
    report = stack.manage_json("reconcile", check=False)
    booked = []
    for breach in report["breaches"]:
        if breach["invariant"] not in UNBOOKED_FOR_CLOSED:
            continue
        found = re.search(r"0x[0-9a-fA-F]{64}", breach["detail"])
        assert found, breach
        result = stack.manage_json(
            "owner_transfer", found.group(0), "--reason", f"kept: {breach['object']}"
        )
        assert result["booked"] is True, result
        booked.append(found.group(0))
    return booked


def books_against_chain(stack: Stack) -> dict[str, Any]:
    """The ledger's host wallet and network fees next to the sandbox chain's own figures:
    its balances, and gasUsed x effectiveGasPrice of every mined host transaction."""
    assert stack.sandbox is not None
    accounts = stack.manage_json("balances")["accounts"]
    state = stack.sandbox.state()
    gas_wei = 0
    for tx in state["transactions"]:
        if tx["from"].lower() != HOST_WALLET.lower() or tx["block"] is None:
            continue
        receipt = stack.sandbox.session.post(
            f"{stack.sandbox.url}/rpc",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_getTransactionReceipt",
                "params": [tx["hash"]],
            },
            timeout=10,
        ).json()["result"]
        gas_wei += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    chain = state["balances"][HOST_WALLET]
    return {
        "books": (
            Decimal(accounts["host_wallet"]["eth"]),
            Decimal(accounts["host_wallet"]["usdt"]),
            Decimal(accounts.get("network_fees", {}).get("eth", "0")),
        ),
        "chain": (Decimal(chain["eth"]), Decimal(chain["usdt"]), Decimal(gas_wei).scaleb(-18)),
    }


def assert_books_equal_chain(stack: Stack, timeout: float = 30) -> None:
    """host_wallet equals the chain's balances to the wei and network_fees the gas the chain
    charged, once every transfer is final and booked."""
    last: dict[str, Any] = {}

    def equal() -> bool:
        last.update(books_against_chain(stack))
        return last["books"] == last["chain"]

    try:
        wait_until(equal, timeout=timeout, what="the books to equal the chain", interval=1)
    except AssertionError as exc:
        raise AssertionError(f"books (host ETH, host USDT, gas) vs chain: {last}") from exc


def assert_reconcile_ok(stack: Stack) -> dict[str, Any]:
    report = stack.manage_json("reconcile", check=False)
    assert report["ok"] is True, json.dumps(report, indent=1, default=str)
    return report


# --- checks after chaos (operator actions, kills, faults) -------------------------------------
#
# `assert_books_balance` allows one broadcast transaction per order; after operators replaced
# or cancelled transactions an order may have several, of which at most one may pay. These
# checks state the money rules for that world from our tables and the sandbox's ledger.


@dataclass(frozen=True)
class SignedTx:
    kind: str  # "batch" | "payout"
    order_id: str
    transfer_id: int
    tx_kind: str  # "original" | "speed_up" | "cancel"


def signed_transactions(stack: Stack) -> dict[str, SignedTx]:
    """Every transaction we ever signed (originals, speed-ups, cancels), by lower-case hash."""
    return {
        tx_hash: SignedTx(kind, order_id, transfer_id, tx_kind)
        for tx_hash, kind, order_id, transfer_id, tx_kind in stack.rows(
            "SELECT lower(x.tx_hash), CASE WHEN t.batch_id IS NULL THEN 'payout' ELSE 'batch' END, "
            "coalesce(t.batch_id::text, t.payout_id::text), t.id, x.kind "
            "FROM payouts_transfertx x JOIN payouts_transfer t ON t.id = x.transfer_id"
        )
    }


def host_deposits(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Payments the sandbox chain moved out of the host wallet (exchange deposits and
    direct USDT payouts), mined and not undone."""
    return [d for d in state["deposits"] if d["from"].lower() == HOST_WALLET.lower()]


def assert_one_deposit_per_order(stack: Stack, state: dict[str, Any]) -> dict[str, str]:
    """Every payment that left the host wallet is one we signed, no order (and no exchange)
    received two, and the sandbox credited each; returns {order id: deposit hash}."""
    signed = signed_transactions(stack)
    notes = [d for d in state["deposits"] if d["note"]]
    assert not notes, f"deposits the sandbox did not credit: {notes}"
    by_order: dict[str, list[str]] = {}
    by_exchange: dict[str, int] = {}
    for deposit in host_deposits(state):
        tx = signed.get(deposit["tx_hash"].lower())
        assert tx is not None, f"a payment left the host wallet that we never signed: {deposit}"
        assert tx.tx_kind != "cancel", f"a cancel moved funds: {deposit}"
        by_order.setdefault(tx.order_id, []).append(deposit["tx_hash"].lower())
        if deposit["exchange_id"]:
            by_exchange[deposit["exchange_id"]] = by_exchange.get(deposit["exchange_id"], 0) + 1
    twice = {order: hashes for order, hashes in by_order.items() if len(hashes) > 1}
    assert not twice, f"orders paid more than once: {twice}"
    assert all(n == 1 for n in by_exchange.values()), f"exchanges funded twice: {by_exchange}"
    return {order: hashes[0] for order, hashes in by_order.items()}


def assert_deposits_agree_with_transfers(stack: Stack, state: dict[str, Any]) -> None:
    """The sandbox's ledger and our transfers say the same: each payment on chain is exactly
    one transfer we hold as mined (same hash, asset, amount, recipient), and each transfer we
    hold as mined is on chain; every host-wallet transaction on chain is one we stored."""
    on_chain = {
        d["tx_hash"].lower(): (d["asset"], Decimal(d["amount"]), d["to"].lower())
        for d in host_deposits(state)
    }
    ours = {
        tx_hash: (asset, amount.normalize(), to.lower())
        for tx_hash, asset, amount, to in stack.rows(
            "SELECT lower(mined_hash), asset, amount, to_address FROM payouts_transfer "
            "WHERE state = 'mined'"
        )
    }
    on_chain = {h: (a, amount.normalize(), to) for h, (a, amount, to) in on_chain.items()}
    missing = {h: v for h, v in on_chain.items() if ours.get(h) != v}
    extra = {h: v for h, v in ours.items() if on_chain.get(h) != v}
    assert not missing and not extra, (
        f"chain payments unlike our mined transfers: {missing}; "
        f"our mined transfers unlike the chain: {extra}"
    )
    stored = set(signed_transactions(stack))
    host_txs = {
        t["hash"].lower() for t in state["transactions"] if t["from"].lower() == HOST_WALLET.lower()
    }
    assert host_txs <= stored, f"host transactions we never stored: {host_txs - stored}"


# Each accumulation's state against its links: exactly one place for every row.
_MISPLACED_ROWS = """
SELECT a.id, a.state, b.state, p.state
FROM payouts_accumulation a
LEFT JOIN batches_conversionbatch b ON b.id = a.batch_id
LEFT JOIN payouts_payout p ON p.id = a.payout_id
WHERE NOT CASE a.state
    WHEN 'pending' THEN a.batch_id IS NULL AND a.payout_id IS NULL
    WHEN 'converting' THEN a.payout_id IS NULL AND b.state IN
        ('reserved', 'exchange_created', 'funds_sent', 'converting', 'needs_attention')
    WHEN 'converted' THEN a.payout_id IS NULL AND b.state = 'completed' AND a.usdt IS NOT NULL
    WHEN 'paying' THEN b.state = 'completed' AND a.usdt IS NOT NULL AND p.state IN
        ('reserved', 'exchange_created', 'funds_sent', 'converting', 'needs_attention')
    WHEN 'paid' THEN b.state = 'completed' AND p.state = 'completed'
    WHEN 'written_off' THEN (a.payout_id IS NULL AND b.state = 'force_closed')
        OR (b.state = 'completed' AND p.state = 'force_closed')
    ELSE false END
"""


def assert_rows_in_one_place(stack: Stack) -> None:
    misplaced = stack.rows(_MISPLACED_ROWS)
    assert not misplaced, f"accumulations whose state disagrees with their links: {misplaced}"


def released_orders(stack: Stack) -> list[tuple[str, str, str]]:
    """(kind, order id, refund hash) of every order that released its rows back (a failure
    or a force-close without write-off)."""
    return [
        ("batch" if object_type == "conversionbatch" else "payout", object_id, refund or "")
        for object_type, object_id, refund in stack.rows(
            "SELECT e.object_type, e.object_id, coalesce(b.refund_tx_hash, p.refund_tx_hash) "
            "FROM payouts_auditevent e "
            "LEFT JOIN batches_conversionbatch b ON e.object_type = 'conversionbatch' "
            "AND b.id::text = e.object_id "
            "LEFT JOIN payouts_payout p ON e.object_type = 'payout' AND p.id::text = e.object_id "
            "WHERE e.kind = 'transition' AND e.to_state IN ('failed', 'force_closed') "
            "AND e.data->>'accumulations' NOT LIKE '%%written_off'"
        )
    ]


def assert_no_release_after_a_deposit(stack: Stack, deposits: dict[str, str]) -> int:
    """No order released its rows while its payment reached the chain, unless a refund was
    proved; returns how many orders released rows."""
    released = released_orders(stack)
    paid_and_released = [
        (kind, order, deposits[order])
        for kind, order, refund in released
        if order in deposits and not refund
    ]
    assert not paid_and_released, (
        f"rows released although the order's payment mined (no refund proved): {paid_and_released}"
    )
    return len(released)


def assert_nonces_contiguous(state: dict[str, Any]) -> int:
    """Every nonce 0..n-1 of the host wallet used by exactly one mined transaction, and
    nothing of the host wallet left waiting in the mempool; returns n."""
    host = HOST_WALLET.lower()
    mined = sorted(
        t["nonce"]
        for t in state["transactions"]
        if t["from"].lower() == host and t["block"] is not None
    )
    assert mined == list(range(len(mined))), f"host wallet nonces on chain: {mined}"
    confirmed = state["balances"][HOST_WALLET]["nonce"]
    assert confirmed == len(mined), f"the chain counts {confirmed} nonces, {len(mined)} mined"
    waiting = [
        t["hash"] for t in state["transactions"] if t["from"].lower() == host and t["pending"]
    ]
    assert not waiting, f"host transactions still pending: {waiting}"
    return len(mined)


def report_figures(request: Any, title: str, figures: dict[str, Any]) -> str:
    """Show a test's figures: on the terminal (capture or not), in the captured output, and
    as junit properties. Returns the line, for assertion messages."""
    line = f"{title}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    for name, value in figures.items():
        request.node.user_properties.append((name, value))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    terminal = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is not None and terminal is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"\n{line}")
    return line
