#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    from backoffice.runenv import run_env_load

    run_env_load()  # beside `make run`: its ports, sandbox URLs and demo secrets
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.SECRET_KEY  # noqa: B018 - load the settings now: one clear line, no traceback
    except ImproperlyConfigured as exc:
        sys.stderr.write(
            f"configuration error: {exc}. Set it in the environment (see .env.example), or "
            "DEBUG=true on a development machine; beside `make run`, .data/run/env has it.\n"
        )
        sys.exit(2)
    execute_from_command_line(sys.argv)
