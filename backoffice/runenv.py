"""The environment `make run` uses, for commands typed in a second terminal.

`make run` writes its environment (ports, sandbox URLs, demo secrets) to `.data/run/env` and
removes it when it stops. `manage.py` reads it when present, without overriding anything
already set, so `.venv/bin/python manage.py status --json` works beside it as typed. A
process that brings its own configuration (a `SECRET_KEY` in its environment, as every
deployment and the test harness do) never reads it. Standard library only: it runs before
Django is configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

RUN_ENV_FILE = Path(__file__).resolve().parents[1] / ".data" / "run" / "env"
# What a second terminal needs to reach the same database, providers and secrets.
RUN_ENV_KEYS = (
    "DEBUG",
    "DATABASE_URL",
    "REDIS_URL",
    "CHANGENOW_API_URL",
    "CHANGENOW_API_KEY",
    "CHANGENOW_WEBHOOK_SECRET",
    "NOWPAYMENTS_IPN_SECRET",
    "WALLET_RPC_URL",
    "HOST_WALLET_ADDRESS",
    "USDT_CONTRACT_ADDRESS",
    "WALLET_CONFIRMATIONS",
    "OTP_REQUIRED",
    "RUN_WEB_URL",
)


def run_env_write(env: Mapping[str, str], path: Path = RUN_ENV_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by make run for commands in a second terminal; removed when it stops.",
        *(f"{key}={env[key]}" for key in RUN_ENV_KEYS if env.get(key)),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_env_load(
    environ: MutableMapping[str, str] | None = None, path: Path = RUN_ENV_FILE
) -> list[str]:
    """Fill what the environment lacks from the file; returns the keys taken from it."""
    environ = os.environ if environ is None else environ
    if "SECRET_KEY" in environ or environ.get("BACKOFFICE_RUN_ENV", "").lower() == "off":
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    taken = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key.startswith("#") or key not in RUN_ENV_KEYS or key in environ:
            continue
        environ[key] = value.strip()
        taken.append(key)
    return taken
