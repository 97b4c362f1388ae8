"""Management commands act at once, as break-glass: the audit trail records the command and
the operating-system user who ran it (admin actions go through dual control instead)."""

from __future__ import annotations

import getpass
import os

from payouts.transitions import Actor


def os_user() -> str:
    """Who runs this process; the uid where there is no passwd entry (containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def command_actor(command: str) -> Actor:
    return Actor.system(f"manage.py {command} (OS user {os_user()})")
