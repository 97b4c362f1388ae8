"""``manage.py sandbox --port N [--host H]``: serve the provider sandbox in the foreground.

ChangeNOW v2 under ``http://H:N/v2/...`` (point CHANGENOW_API_URL at ``http://H:N``) and the
JSON-RPC signer at ``http://H:N/rpc`` (WALLET_RPC_URL). Knobs: ``SANDBOX_*`` environment
variables and ``POST /_sandbox/config``; see integrations/README.md. Never for production.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from integrations.sandbox import SandboxConfig, SandboxServer


class Command(BaseCommand):
    help = "Serve the ChangeNOW v2 + JSON-RPC signer sandbox (in-memory, for demo and tests)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8090)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--verbose-requests", action="store_true", help="log every request")

    def handle(self, *args: Any, **options: Any) -> None:
        # The app's own settings seed the sandbox so that both sides agree on the host
        # wallet and the USDT contract; SANDBOX_* variables still override.
        config = SandboxConfig.from_env(
            host_wallet=getattr(settings, "HOST_WALLET_ADDRESS", "") or None,
            usdt_contract=getattr(settings, "USDT_CONTRACT_ADDRESS", "") or None,
        )
        server = SandboxServer(
            config,
            host=options["host"],
            port=options["port"],
            verbose=options["verbose_requests"],
        )
        # One line, flushed: a parent process waits for it before sending requests.
        self.stdout.write(
            f"sandbox listening on {server.url} (ChangeNOW API {server.url}/v2, "
            f"JSON-RPC signer {server.rpc_url}, host wallet {config.host_wallet}, "
            f"chain id {config.chain_id})"
        )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.httpd.server_close()
