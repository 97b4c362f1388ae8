"""Commands beside `make run`: the environment file it writes fills what a second
terminal's environment lacks, and never overrides a process's own configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backoffice.runenv import run_env_load, run_env_write

ROOT = Path(__file__).resolve().parents[2]


def test_it_fills_only_what_is_missing(tmp_path: Path) -> None:
    path = run_env_write(
        {"DEBUG": "true", "CHANGENOW_API_URL": "http://127.0.0.1:8123", "PATH": "/x"},
        tmp_path / "env",
    )
    assert "PATH" not in path.read_text()  # only the keys a second terminal needs
    environ = {"CHANGENOW_API_URL": "http://elsewhere"}
    assert run_env_load(environ, path) == ["DEBUG"]
    assert environ == {"CHANGENOW_API_URL": "http://elsewhere", "DEBUG": "true"}


def test_a_process_with_its_own_secret_key_or_the_switch_off_never_reads_it(
    tmp_path: Path,
) -> None:
    path = run_env_write({"DEBUG": "true"}, tmp_path / "env")
    assert run_env_load({"SECRET_KEY": "k"}, path) == []
    assert run_env_load({"BACKOFFICE_RUN_ENV": "off"}, path) == []
    assert run_env_load({}, tmp_path / "missing") == []


def test_manage_py_without_configuration_says_so_in_one_line() -> None:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    env["BACKOFFICE_RUN_ENV"] = "off"  # whatever a local `make run` left behind
    done = subprocess.run(
        [sys.executable, "manage.py", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("configuration error: SECRET_KEY must be set")
    assert "Traceback" not in done.stderr
