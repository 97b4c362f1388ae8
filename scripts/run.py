"""`make run`: the whole system on this machine, for a demo or a first day.

    python scripts/run.py            # what `make run` does
    python scripts/run.py pace       # only the demo pacer (see below), e.g. for the e2e tests

`run` starts the embedded PostgreSQL, bootstraps, creates the demo merchants and an admin
login, then runs the provider sandbox (ChangeNOW + signer), the web server and one Q cluster,
all pointed at the sandbox, until Ctrl-C, which stops everything cleanly. Logs go to
`.data/run/*.log`; the terminal shows a banner and a status line whenever money moves.

The demo pacer: Django-Q2 looks at its schedules only every 30 s and the shortest interval
is one minute, so the conversion sweep (5 min), order advance (1 min) and payout sweep
(5 min) would take minutes to walk a payment through. The pacer enqueues those same
scheduled jobs (by their names in `backoffice/schedules.py`) every few seconds, into the same
broker, so the Q cluster runs them: a newcomer sees payments become batches and payouts in
well under a minute; at most one of each job waits in the queue at a time (`Pacer`). Production
relies on the schedules (and the engine's own follow-ups).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DATA = ROOT / ".data"
LOGS = DATA / "run"
WEB_PORT = int(os.environ.get("RUN_WEB_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("RUN_SANDBOX_PORT", "8100"))
# Seconds between two enqueues of the scheduled jobs by the pacer.
PACE_SECONDS = float(os.environ.get("RUN_PACE_SECONDS", "3"))
# The sandbox moves an exchange one status per step: waiting -> ... -> finished in 4 steps.
SANDBOX_STEP_SECONDS = os.environ.get("RUN_SANDBOX_STEP_SECONDS", "1")
# The default $20 conversion threshold already lets a few demo payments make a batch; set
# this to change it for the demo (through the audited service, like an approver would).
DEMO_THRESHOLD_USD = os.environ.get("RUN_CONVERSION_THRESHOLD_USD", "")
PACED_JOBS = ("conversion_sweep", "advance", "payout_sweep")
# The sandbox's defaults (integrations/sandbox/config.py), repeated here so that this script
# does not import the project before the environment is set.
SANDBOX_HOST_WALLET = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
SANDBOX_USDT_CONTRACT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
DEMO_IPN_SECRET = "demo-ipn-secret"  # noqa: S105 - a local demo, printed on purpose
DEMO_NUDGE_SECRET = "demo-changenow-webhook-secret"  # noqa: S105


def admin_password() -> str:
    """A random password generated once and kept under .data/ (git-ignored)."""
    path = DATA / "admin-password"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after waiting")


def wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {path}")
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} not seen in {path} in time")


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True)


def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a child in its own session, so that Ctrl-C reaches only us and we stop the
    children in order (and their own children: the Q cluster's workers) by process group."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / f"{name}.log").open("wb")
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each leader only: the Q cluster then stops its own workers in order (a
    SIGTERM to its whole group makes the workers die under it and the stop hang). Whatever
    is left of a group after the grace period is killed."""
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def demo_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DEBUG", "true")
    env.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    env.setdefault("NOWPAYMENTS_IPN_SECRET", DEMO_IPN_SECRET)
    env.setdefault("CHANGENOW_WEBHOOK_SECRET", DEMO_NUDGE_SECRET)
    env.setdefault("CONVERSION_THRESHOLD_USD", DEMO_THRESHOLD_USD or "20")
    # The demo's printed login opens the admin at once: no authenticator to enrol first.
    # Production keeps two-factor sign-in on (the default).
    env.setdefault("OTP_REQUIRED", "false")
    env.setdefault("WALLET_CONFIRMATIONS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- Django-side helpers (run in this process once the environment is set) ---------------


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import logging

    import django

    django.setup()
    # One "Enqueued" line per pacer job would drown the status lines.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    logging.getLogger("integrations").setLevel(logging.WARNING)


def apply_demo_settings(threshold_usd: str) -> list[str]:
    """Demo-friendly run-time settings, changed through the audited service like an
    operator would; returns what changed."""
    from decimal import Decimal

    from payouts.services import runtime_settings_get, runtime_settings_update
    from payouts.transitions import Actor

    before = runtime_settings_get()
    changes: dict[str, Any] = {"conversion_threshold_usd": Decimal(threshold_usd)}
    changed = [name for name, value in changes.items() if getattr(before, name) != value]
    if changed:
        runtime_settings_update(
            changes=changes, actor=Actor.system("make run"), reason="make run: demo settings"
        )
    return changed


def open_orders() -> int:
    from batches.models import ConversionBatch
    from payouts.engine import OPEN_STATES
    from payouts.models import Payout

    return (
        ConversionBatch.objects.filter(state__in=OPEN_STATES).count()
        + Payout.objects.filter(state__in=OPEN_STATES).count()
    )


class Pacer:
    """Enqueues the scheduled jobs, at most one of each waiting in the queue at a time.

    A job is enqueued again once a run of it started after the last enqueue (its
    `JobRun` heartbeat; Django-Q2 prunes old task results, so those cannot tell), or when
    none started for `STALE_SECONDS` (a lost task). Never on queue depth: a sweep skipped
    because per-order steps fill the queue only makes payments wait longer, while one of
    each waiting never grows the queue by more than the jobs paced.
    """

    STALE_SECONDS = 300.0

    def __init__(self) -> None:
        self.last: dict[str, tuple[Any, float]] = {}

    def enqueue(self, names: Iterable[str]) -> int:
        from django.utils import timezone
        from django_q.tasks import async_task

        from backoffice.models import JobRun
        from backoffice.schedules import SCHEDULES

        jobs = {job.name: job for job in SCHEDULES}
        count = 0
        for name in names:
            previous = self.last.get(name)
            if previous is not None:
                enqueued_at, at = previous
                started = JobRun.objects.filter(name=name, started_at__gte=enqueued_at).exists()
                if not started and time.monotonic() - at < self.STALE_SECONDS:
                    continue  # still waiting in the queue
            job = jobs[name]
            self.last[name] = (timezone.now(), time.monotonic())
            async_task(job.func, group=f"pacer:{job.name}")
            count += 1
        return count


def status_line() -> str:
    from backoffice.services import system_status

    status = system_status()
    acc = status["accumulations"]
    parts = [f"{state} {acc[state]['count']}" for state in acc if acc[state]["count"]]
    batches = ", ".join(f"{s} {n}" for s, n in status["batches"].items() if n)
    payouts = ", ".join(f"{s} {n}" for s, n in status["payouts"].items() if n)
    return (
        f"payments: {', '.join(parts) or 'none yet'} | batches: {batches or 'none'} | "
        f"payouts: {payouts or 'none'} | platform {status['platform_usdt']} USDT"
    )


def chain_meets_books(sandbox_url: str) -> str:
    """The sandbox chain starts afresh on every run while the database keeps its books: on
    the first run the chain's balances are booked as the opening balance; on later runs the
    sandbox's host wallet is set to what the books say it holds, so reconcile stays clean."""
    import requests

    from ledger.models import LedgerTransaction
    from payouts.custody import host_balances_expected, opening_post
    from payouts.engine import wallet
    from payouts.transitions import Actor

    try:
        if not LedgerTransaction.objects.filter(kind="opening").exists():
            posted = opening_post(wallet=wallet(), actor=Actor.system("bootstrap"))
            return "Ledger: opening balance booked" if posted else "Ledger: nothing to open"
        held = host_balances_expected()
        requests.post(
            f"{sandbox_url}/_sandbox/fund",
            json={"eth": str(held["eth"]), "usdt": str(held["usdt"])},
            timeout=10,
        ).raise_for_status()
        return f"Ledger: sandbox host wallet set to the books ({held['eth']} ETH)"
    finally:
        close_db()


def close_db() -> None:
    from django.db import connections

    connections.close_all()


# --- commands ------------------------------------------------------------------------------


def pace(interval: float, jobs: list[str], duration: float | None) -> int:
    """Enqueue the scheduled jobs every `interval` seconds until SIGTERM/SIGINT."""
    django_setup(dict(os.environ, DJANGO_SETTINGS_MODULE="backoffice.settings"))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"pacer: enqueuing {', '.join(jobs)} every {interval} s", flush=True)
    ends = time.monotonic() + duration if duration else None
    pacer = Pacer()
    while not stopping and (ends is None or time.monotonic() < ends):
        try:
            pacer.enqueue(jobs)
        except Exception as exc:  # noqa: BLE001 - a database blip must not end the pacer
            print(f"pacer: enqueue failed: {exc!r}", file=sys.stderr, flush=True)
            close_db()
        slept = 0.0
        while not stopping and slept < interval:
            time.sleep(min(0.1, interval))
            slept += 0.1
    close_db()
    return 0


def run() -> int:
    env = demo_environment()
    if not port_is_free(WEB_PORT):
        print(f"port {WEB_PORT} is busy: set RUN_WEB_PORT to another port", file=sys.stderr)
        return 2
    sandbox_port = SANDBOX_PORT if port_is_free(SANDBOX_PORT) else free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env.update(
        {
            "CHANGENOW_API_URL": sandbox_url,
            "CHANGENOW_API_KEY": env.get("CHANGENOW_API_KEY") or "sandbox-demo-key",
            "WALLET_RPC_URL": f"{sandbox_url}/rpc",
            "HOST_WALLET_ADDRESS": SANDBOX_HOST_WALLET,
            "USDT_CONTRACT_ADDRESS": SANDBOX_USDT_CONTRACT,
            "SANDBOX_STEP_SECONDS": SANDBOX_STEP_SECONDS,
            # The sandbox chain starts afresh on every run while the database keeps the
            # transfers of earlier runs: a chain id of its own per run keeps their nonces
            # apart (the books refuse one nonce used twice on one chain).
            "SANDBOX_CHAIN_ID": str(100_000 + int(time.time()) % 1_000_000),
        }
    )
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from backoffice.runenv import RUN_ENV_FILE, run_env_write

    env["RUN_WEB_URL"] = f"http://127.0.0.1:{WEB_PORT}"
    run_env_write(env)  # second-terminal commands read it (removed when we stop)
    embedded = not env.get("DATABASE_URL")
    if embedded:
        subprocess.run([PY, "-m", "backoffice.embedded_db", "start"], cwd=ROOT, env=env, check=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The sandbox first: bootstrap loads ChangeNOW's currency list from it, and the demo
    # merchants are validated against that list like any import.
    try:
        procs["sandbox"] = start(
            "sandbox", [PY, "manage.py", "sandbox", "--port", str(sandbox_port)], env
        )
        wait_for_line(
            LOGS / "sandbox.log", "sandbox listening", procs["sandbox"], time.monotonic() + 60
        )
        manage("bootstrap", env=env)
        password = admin_password()
        manage("demo", "--admin-password", password, env=env)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"start-up failed: {exc}; logs in {LOGS}", file=sys.stderr)
        stop_all(procs)
        RUN_ENV_FILE.unlink(missing_ok=True)
        return 1
    django_setup(env)
    changed = apply_demo_settings(DEMO_THRESHOLD_USD) if DEMO_THRESHOLD_USD else []
    leftovers = open_orders()
    close_db()
    try:
        deadline = time.monotonic() + 60
        procs["web"] = start(
            "web", [PY, "manage.py", "runserver", f"127.0.0.1:{WEB_PORT}", "--noreload"], env
        )
        procs["qcluster"] = start("qcluster", [PY, "manage.py", "qcluster"], env)
        print(f"  {chain_meets_books(sandbox_url)}", flush=True)
        wait_for_port(WEB_PORT, procs["web"], deadline)
        wait_for_line(LOGS / "qcluster.log", "running.", procs["qcluster"], deadline)
    except (RuntimeError, OSError) as exc:
        print(f"start-up failed: {exc}; logs in {LOGS}", file=sys.stderr)
        stop_all(procs)
        RUN_ENV_FILE.unlink(missing_ok=True)
        return 1

    web = f"http://127.0.0.1:{WEB_PORT}"
    two_factor = (
        "off for this demo (OTP_REQUIRED=false): the login opens the admin at once"
        if env["OTP_REQUIRED"].strip().lower() in ("false", "0", "no", "off")
        else "on: the admin first asks the superuser to enrol an authenticator app"
    )
    print(
        f"\n  Back office:    {web}/admin/\n"
        f"  Login:          admin / {password}\n"
        f"  Two-factor:     {two_factor}\n"
        f"  Sandbox:        {sandbox_url}  (ChangeNOW v2 + signer; state at "
        f"{sandbox_url}/_sandbox/state)\n"
        f"  Second terminal: .venv/bin/python manage.py status --json (or reconcile, "
        f"balances, report ...): they read {RUN_ENV_FILE.relative_to(ROOT)}\n"
        f"  Demo payments:  make demo-payments N=20\n"
        f"                  (= DEBUG=true NOWPAYMENTS_IPN_SECRET={env['NOWPAYMENTS_IPN_SECRET']}"
        f" {Path(PY).relative_to(ROOT) if Path(PY).is_relative_to(ROOT) else PY}"
        f" manage.py demo_payments 20 --url {web})\n"
        f"  Logs:           {LOGS}/{{web,qcluster,sandbox}}.log\n"
        f"  Demo pacer:     enqueues {', '.join(PACED_JOBS)} every {PACE_SECONDS:g} s\n"
        f"  Stop:           Ctrl-C\n",
        flush=True,
    )
    if changed:
        print(f"  (run-time settings set for the demo: {', '.join(changed)}; audited)")
    if leftovers:
        print(
            f"  Note: {leftovers} order(s) from an earlier run are still open; the sandbox "
            "starts empty, so they will stop with an error and wait in needs_attention.",
            flush=True,
        )

    last_status = ""
    pacer = Pacer()
    next_pace = 0.0
    next_status = 0.0
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {LOGS / name}.log")
                    stopping = True
            now = time.monotonic()
            try:
                if now >= next_pace:
                    pacer.enqueue(PACED_JOBS)
                    next_pace = now + PACE_SECONDS
                if now >= next_status:
                    line = status_line()
                    if line != last_status:
                        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                        last_status = line
                    next_status = now + 2
            except Exception as exc:  # noqa: BLE001 - a database blip must not end the demo
                print(f"(status unavailable: {exc!r})", file=sys.stderr)
                close_db()
            time.sleep(0.2)
    finally:
        print("stopping: pacer, web, Q cluster, sandbox ...", flush=True)
        close_db()
        stop_all(procs)
        RUN_ENV_FILE.unlink(missing_ok=True)
        if embedded:
            subprocess.run([PY, "-m", "backoffice.embedded_db", "stop"], cwd=ROOT, env=env)
        print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="the whole demo (default)")
    pacer = sub.add_parser("pace", help="only enqueue the scheduled jobs every few seconds")
    pacer.add_argument("--interval", type=float, default=PACE_SECONDS)
    pacer.add_argument("--jobs", default=",".join(PACED_JOBS))
    pacer.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args(argv)
    if args.command == "pace":
        jobs = [name.strip() for name in args.jobs.split(",") if name.strip()]
        return pace(args.interval, jobs, args.duration)
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
