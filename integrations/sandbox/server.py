"""The sandbox process: ChangeNOW v2 under ``/v2/...``, a JSON-RPC signer at ``/rpc``
(``/`` answers JSON-RPC too), and a control API under ``/_sandbox/...``.

``SandboxApp.handle`` is a plain function of a request (easy to test, no sockets);
``SandboxServer`` serves it with the standard library's ThreadingHTTPServer, in a thread
(tests) or in the foreground (``manage.py sandbox``). All state is in memory, behind one
lock; latency and the "create times out" delay are slept outside it.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from integrations.assets import to_base_units
from integrations.sandbox.chain import Chain, RpcError
from integrations.sandbox.config import SandboxConfig
from integrations.sandbox.exchanges import ApiError, ChangeNowSim

RPC_PATHS = ("/rpc", "/rpc/", "/")
_SCRIPT_PATH = re.compile(r"^/_sandbox/exchanges/([^/]+)/script$")


def dumps(value: Any) -> bytes:
    """JSON with Decimals written as exact numbers (as ChangeNOW sends amounts).

    Amounts are always Decimal here; floats only ever carry clock values.
    """

    def encode(item: Any) -> str:
        if isinstance(item, Decimal):
            return format(item, "f")
        if isinstance(item, bool) or item is None:
            return json.dumps(item)
        if isinstance(item, int | str):
            return json.dumps(item)
        if isinstance(item, float):  # clock values in control answers, never amounts
            return json.dumps(item)
        if isinstance(item, Mapping):
            return (
                "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in item.items()) + "}"
            )
        if isinstance(item, list | tuple):
            return "[" + ",".join(encode(v) for v in item) + "]"
        raise TypeError(f"cannot serialise {type(item).__name__}")

    return encode(value).encode()


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable; bytes are sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_after: float = 0.0  # seconds to wait after the work, before answering

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return dumps(self.body)


class SandboxApp:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.lock = threading.RLock()
        self.clock_offset = 0.0
        self.fail_rules: list[dict[str, Any]] = []
        self.reset()

    def now(self) -> float:
        return time.time() + self.clock_offset

    def reset(self) -> None:
        with self.lock:
            seed = self.config.seed
            self.rng = random.Random(seed)
            self.fault_rng = random.Random(None if seed is None else seed + 1)
            self.fail_rules = []
            self.chain = Chain(self.config, self.now, self.rng, self._on_transfer, self._on_revert)
            self.changenow = ChangeNowSim(
                self.config, self.now, self.rng, self.chain.pay, self.chain.pay_settled
            )

    def _on_transfer(self, transfer: Any) -> None:
        self.changenow.on_transfer(transfer)

    def _on_revert(self, transfer: Any) -> None:
        self.changenow.on_revert(transfer)

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(target)
        path = parts.path or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        lowered = {k.lower(): v for k, v in headers.items()}
        if path.startswith("/_sandbox/"):
            return self._control(method, path, body)
        is_api = path.startswith("/v2/")
        is_rpc = path in RPC_PATHS and method == "POST"
        if not (is_api or is_rpc):
            return Response(404, {"error": "not_found", "message": f"no route {method} {path}"})
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)
        rule = self._take_rule(method, path, body if is_rpc else None)
        if rule is not None and not rule.get("process"):
            return self._injected(rule, is_rpc, body)
        if rule is None:
            fault = self._random_fault(is_rpc)
            if fault is not None:
                return fault
        response = self._rpc(body) if is_rpc else self._api(method, path, query, lowered, body)
        if rule is not None:  # "process": do the work, then lose the answer
            injected = self._injected(rule, is_rpc, body)
            injected.delay_after = max(injected.delay_after, response.delay_after)
            return injected
        return response

    # -- faults ------------------------------------------------------------------------

    def _take_rule(self, method: str, path: str, rpc_body: bytes | None) -> dict[str, Any] | None:
        rpc_method = None
        if rpc_body is not None:
            try:
                rpc_method = json.loads(rpc_body).get("method")
            except (ValueError, AttributeError):
                rpc_method = None
        with self.lock:
            for rule in self.fail_rules:
                if rule["path"] != path and not (rule["path"] == "/rpc" and path in RPC_PATHS):
                    continue
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("rpc_method") and rule["rpc_method"] != rpc_method:
                    continue
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self.fail_rules.remove(rule)
                return dict(rule)
        return None

    def _injected(self, rule: Mapping[str, Any], is_rpc: bool, body: bytes) -> Response:
        headers = {}
        if rule.get("retry_after") is not None:
            headers["Retry-After"] = str(rule["retry_after"])
        delay = float(rule.get("delay", 0))
        if is_rpc and rule.get("rpc_error"):
            error = rule["rpc_error"]
            try:
                request_id = json.loads(body).get("id")
            except (ValueError, AttributeError):
                request_id = None
            return Response(
                200,
                {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {
                        "code": int(error.get("code", -32000)),
                        "message": str(error.get("message", "")),
                    },
                },
                headers,
                delay,
            )
        status = int(rule.get("status", 503))
        payload: Any = {
            "error": rule.get("error") or _default_code(status),
            "message": rule.get("message") or f"sandbox injected HTTP {status}",
        }
        return Response(status, payload, headers, delay)

    def _random_fault(self, is_rpc: bool) -> Response | None:
        with self.lock:
            roll = self.fault_rng.random()
        retry = {"Retry-After": str(self.config.retry_after)}
        if is_rpc:
            if roll < self.config.rpc_error_rate:
                return Response(502, b"Bad Gateway (sandbox rpc_error_rate)")
            return None
        if roll < self.config.rate_limit_rate:
            return Response(
                429, {"error": "too_many_requests", "message": "Rate limit exceeded"}, retry
            )
        if roll < self.config.rate_limit_rate + self.config.error_rate:
            return Response(
                503, {"error": "internal_error", "message": "Service unavailable"}, retry
            )
        return None

    # -- ChangeNOW ---------------------------------------------------------------------

    def _api(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        if self.config.api_key and headers.get("x-changenow-api-key") != self.config.api_key:
            return Response(401, {"error": "unauthorized", "message": "Invalid api key"})
        sim = self.changenow
        routes = {
            ("GET", "/v2/exchange/currencies"): lambda: sim.currencies(query),
            ("GET", "/v2/exchange/min-amount"): lambda: sim.min_amount_endpoint(query),
            ("GET", "/v2/exchange/range"): lambda: sim.range_endpoint(query),
            ("GET", "/v2/exchange/estimated-amount"): lambda: sim.estimate(query),
            ("GET", "/v2/exchange/by-id"): lambda: sim.by_id(query.get("id")),
            ("GET", "/v2/validate/address"): lambda: sim.validate(query),
            ("GET", "/v2/exchanges"): lambda: sim.partner_list(query),
            ("POST", "/v2/exchange"): lambda: sim.create(_json_body(body)),
            ("GET", "/v2/exchange/actions"): lambda: sim.actions(query.get("id")),
            ("POST", "/v2/exchange/refund"): lambda: sim.request_refund(_json_body(body)),
            ("POST", "/v2/exchange/continue"): lambda: sim.request_continue(_json_body(body)),
        }
        route = routes.get((method, path.rstrip("/") or "/"))
        if route is None:
            return Response(404, {"error": "not_found", "message": f"no route {method} {path}"})
        try:
            with self.lock:
                self.chain.tick()
                sim.tick()
                result = route()
        except ApiError as exc:
            return Response(exc.status, {"error": exc.code, "message": exc.message})
        delay = self.config.create_delay if (method, path) == ("POST", "/v2/exchange") else 0.0
        return Response(200, result, delay_after=delay)

    # -- JSON-RPC ----------------------------------------------------------------------

    def _rpc(self, body: bytes) -> Response:
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            return Response(200, _rpc_error(None, -32700, "parse error"))
        if isinstance(request, list):
            if not request:
                return Response(200, _rpc_error(None, -32600, "empty batch"))
            return Response(200, [self._rpc_one(item) for item in request])
        return Response(200, self._rpc_one(request))

    def _rpc_one(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, Mapping) or not isinstance(request.get("method"), str):
            return _rpc_error(None, -32600, "invalid request")
        request_id = request.get("id")
        params = request.get("params", [])
        if not isinstance(params, list):
            return _rpc_error(request_id, -32602, "params must be a list")
        try:
            with self.lock:
                result = self.chain.handle(request["method"], params)
                self.changenow.tick()
        except RpcError as exc:
            return _rpc_error(request_id, exc.code, exc.message)
        except TypeError as exc:
            return _rpc_error(request_id, -32602, f"invalid params: {exc}")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # -- control -----------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> Response:
        try:
            data = _json_body(body) if method == "POST" and body.strip() else {}
            with self.lock:
                return self._control_locked(method, path, data)
        except (ApiError, ValueError) as exc:
            code = exc.code if isinstance(exc, ApiError) else "not_valid_params"
            status = exc.status if isinstance(exc, ApiError) else 400
            return Response(status, {"error": code, "message": str(exc)})

    def _control_locked(self, method: str, path: str, data: Mapping[str, Any]) -> Response:
        if (method, path) == ("GET", "/_sandbox/health"):
            return Response(200, {"ok": True})
        if (method, path) == ("GET", "/_sandbox/state"):
            self.chain.tick()
            self.changenow.tick()
            return Response(200, self.state())
        if path == "/_sandbox/config" and method in ("GET", "POST"):
            if method == "POST":
                self.config.update(data)
            return Response(200, _config_json(self.config))
        if (method, path) == ("POST", "/_sandbox/reset"):
            self.clock_offset = 0.0
            self.reset()
            return Response(200, {"ok": True})
        if (method, path) == ("POST", "/_sandbox/clock"):
            if "offset" in data:
                self.clock_offset = float(data["offset"])
            self.clock_offset += float(data.get("advance", 0))
            self.chain.tick()
            self.changenow.tick()
            return Response(200, {"offset": self.clock_offset, "now": self.now()})
        if (method, path) == ("POST", "/_sandbox/mine"):
            self.chain.tick()
            hashes = data.get("hashes")
            if hashes is not None and not isinstance(hashes, list):
                raise ValueError("hashes must be a list of transaction hashes")
            empty = _count(data, "empty_blocks", 0)
            # {"empty_blocks": n} alone only adds empty blocks: the mempool stays as it is.
            count = _count(data, "count", 0 if "empty_blocks" in data else 1)
            blocks = self.chain.mine(count=count, hashes=hashes, empty_blocks=empty)
            self.changenow.tick()
            mined = [h for block in blocks for h in block.transactions]
            return Response(
                200,
                {
                    "mined": len(mined),
                    "hashes": mined,
                    "blocks": [block.number for block in blocks],
                    "block_number": self.chain.head,
                    "pending": list(self.chain.pending),
                },
            )
        if (method, path) == ("POST", "/_sandbox/reorg"):
            self.chain.tick()
            result = self.chain.reorg(
                _count(data, "depth", 1),
                drop=bool(data.get("drop", False)),
                new_blocks=_count(data, "new_blocks", 0),
            )
            self.changenow.tick()
            return Response(200, {**result, "pending": list(self.chain.pending)})
        if (method, path) == ("POST", "/_sandbox/evict"):
            self.chain.tick()
            hashes = data.get("hashes")
            if data.get("hash"):
                hashes = [data["hash"]]
            if hashes is not None and not isinstance(hashes, list):
                raise ValueError("hashes must be a list of transaction hashes")
            address = data.get("address")
            evicted = self.chain.evict(hashes, str(address) if address else None)
            return Response(200, {"evicted": evicted, "pending": list(self.chain.pending)})
        if (method, path) == ("POST", "/_sandbox/fund"):
            address = data.get("address") or self.config.host_wallet
            self.chain.fund(
                str(address),
                eth=Decimal(str(data["eth"])) if data.get("eth") is not None else None,
                usdt=Decimal(str(data["usdt"])) if data.get("usdt") is not None else None,
            )
            return Response(200, self.chain.snapshot()["balances"])
        if (method, path) == ("POST", "/_sandbox/pay"):
            # A payment from outside to (by default) the host wallet: NOWPayments' payout of a
            # finished payment, or an owner's top-up. A real transaction, mined like any.
            asset = str(data.get("asset") or "eth").lower()
            sender = str(data.get("from") or self.config.nowpayments_wallet)
            recipient = str(data.get("to") or self.config.host_wallet)
            try:
                units = to_base_units(Decimal(str(data.get("amount"))), asset)
            except (ArithmeticError, ValueError) as exc:
                raise ValueError("amount must be a decimal number of the asset") from exc
            try:
                tx_hash = self.chain.pay_settled(sender, recipient, asset, units)
            except RpcError as exc:
                raise ValueError(f"the node refused the payment: {exc}") from exc
            self.chain.tick()
            return Response(200, {"tx_hash": tx_hash, "asset": asset, "to": recipient})
        if (method, path) == ("POST", "/_sandbox/fail"):
            rule = _fail_rule(data)
            self.fail_rules.append(rule)
            return Response(200, {"rules": self.fail_rules})
        match = _SCRIPT_PATH.match(path)
        if match and method == "POST":
            self.changenow.tick()
            return Response(200, self.changenow.set_script(match.group(1), data))
        return Response(404, {"error": "not_found", "message": f"no route {method} {path}"})

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "now": self.now(),
                "clock_offset": self.clock_offset,
                **self.changenow.snapshot(),
                **self.chain.snapshot(),
                "fail_rules": list(self.fail_rules),
            }


def _config_json(config: SandboxConfig) -> dict[str, Any]:
    return config.as_json()


def _fail_rule(data: Mapping[str, Any]) -> dict[str, Any]:
    path = data.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("path is required, e.g. /v2/exchange or /rpc")
    rule = {
        "path": path,
        "method": data.get("method"),
        "rpc_method": data.get("rpc_method"),
        "status": int(data.get("status", 503)),
        "count": int(data.get("count", 1)),
        "retry_after": data.get("retry_after"),
        "error": data.get("error"),
        "message": data.get("message"),
        "delay": float(data.get("delay", 0)),
        "process": bool(data.get("process", False)),
        "rpc_error": data.get("rpc_error"),
    }
    if rule["count"] < 1:
        raise ValueError("count must be at least 1")
    return rule


def _count(data: Mapping[str, Any], key: str, default: int) -> int:
    """A non-negative whole number from a control body (JSON number or string)."""
    value = data.get(key, default)
    try:
        exact = Decimal(str(value)) if not isinstance(value, bool) else None
    except ArithmeticError:
        exact = None
    if exact is None or not exact.is_finite() or exact != exact.to_integral_value() or exact < 0:
        raise ValueError(f"{key} must be a non-negative whole number, not {value!r}")
    return int(exact)


def _default_code(status: int) -> str:
    if status == 429:
        return "too_many_requests"
    if status >= 500:
        return "internal_error"
    return {400: "not_valid_params", 401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
        status, "error"
    )


def _rpc_error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}", parse_float=Decimal)
    except ValueError:
        raise ApiError(400, "not_valid_params", "body is not JSON") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle plus the client's
        # delayed ACK adds ~40 ms to every keep-alive answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.app.handle(self.command, self.path, dict(self.headers), body)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug must answer, not hang the client
            response = Response(500, {"error": "sandbox_bug", "message": repr(exc)})
        if response.delay_after:
            time.sleep(response.delay_after)
        payload = response.payload()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    do_GET = _serve  # noqa: N815 - BaseHTTPRequestHandler's naming
    do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.verbose = verbose


class SandboxServer:
    """Run the sandbox on ``host:port`` (port 0: any free port) in a background thread."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self.app = SandboxApp(config)
        self.httpd = _Server((host, port), self.app, verbose)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/rpc"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
