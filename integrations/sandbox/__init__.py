"""In-memory ChangeNOW v2 + JSON-RPC signer for the demo and the end-to-end tests."""

from integrations.sandbox.config import SandboxConfig
from integrations.sandbox.server import SandboxApp, SandboxServer

__all__ = ["SandboxApp", "SandboxConfig", "SandboxServer"]
