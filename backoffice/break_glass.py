"""Management commands act at once, as break-glass: the audit trail records the command and
the operating-system user who ran it (admin actions go through dual control instead)."""

from __future__ import annotations

import getpass
import os

from payouts.transitions import Actor


def command_actor(command: str) -> Actor:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers): fall back to the uid
        user = f"uid{os.getuid()}"
    return Actor.system(f"manage.py {command} (os user {user})")
