"""`make run`: the whole system on this machine, for a demo or a first day.

Starts the embedded PostgreSQL, bootstraps, creates the demo merchants and an admin login,
then runs the web server and one Q cluster until Ctrl-C, which stops everything cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
WEB_PORT = int(os.environ.get("RUN_WEB_PORT", "8000"))
DATA = ROOT / ".data"


def admin_password() -> str:
    """A random password generated once and kept under .data/ (git-ignored)."""
    path = DATA / "admin-password"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "true")
    env.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    env.setdefault("NOWPAYMENTS_IPN_SECRET", "demo-ipn-secret")
    env.setdefault("CHANGENOW_WEBHOOK_SECRET", "demo-changenow-webhook-secret")
    if not env.get("DATABASE_URL"):
        subprocess.run([PY, "-m", "backoffice.embedded_db", "start"], cwd=ROOT, env=env, check=True)
    manage("bootstrap", env=env)
    password = admin_password()
    manage("demo", "--admin-password", password, env=env)

    procs = {
        "web": subprocess.Popen(
            [PY, "manage.py", "runserver", f"127.0.0.1:{WEB_PORT}", "--noreload"],
            cwd=ROOT,
            env=env,
        ),
        "qcluster": subprocess.Popen([PY, "manage.py", "qcluster"], cwd=ROOT, env=env),
    }
    print(
        f"\n  Back office:  http://127.0.0.1:{WEB_PORT}/admin/\n"
        f"  Login:        admin / {password}\n"
        "  Stop:         Ctrl-C\n",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not env.get("DATABASE_URL"):
            subprocess.run([PY, "-m", "backoffice.embedded_db", "stop"], cwd=ROOT, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
