"""The one HTTP wrapper every provider client uses.

- A timeout on every call (connect, read): a hung provider never hangs a worker.
- Automatic retries only where a repeat is harmless: GET, on connection errors, timeouts,
  429 and 5xx, with exponential backoff, jitter and ``Retry-After`` honoured (urllib3's
  ``Retry`` on the adapter). POST is never retried here: creating an exchange twice or
  signing twice is the caller's decision, not the transport's.
- JSON in and out without floats: responses are parsed with ``parse_float=Decimal``, request
  bodies refuse floats and send Decimals as strings.
- Failures become ``ProviderError`` (or the subclass the client asks for) with ``code``,
  ``permanent`` and ``retry_after`` filled in; clients map provider error bodies on top.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from integrations.errors import ProviderError

# (connect, read) seconds. Connect is short: a provider that does not accept the connection
# within 5 s is down. Read is generous enough for ChangeNOW's slow create.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 20.0)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A Retry-After longer than this is not slept through inside a request: the error goes back
# to the caller with retry_after set, so a scheduled job can come back later instead.
MAX_INLINE_RETRY_AFTER = 30.0

log = logging.getLogger("integrations.http")


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping every non-integer number exact (Decimal, never float)."""
    return json.loads(text, parse_float=Decimal)


def _reject_floats(value: Any, path: str = "$") -> None:
    if isinstance(value, float):
        raise TypeError(f"{path}: float in a request body; use Decimal or str")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _reject_floats(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _reject_floats(item, f"{path}[{index}]")


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"non-finite Decimal {value} in a request body")
        # Plain notation: some providers reject "1E-7".
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Serialise a request body: Decimals as plain decimal strings, floats refused."""
    _reject_floats(value)
    return json.dumps(value, default=_encode_default, separators=(",", ":"))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class BoundedRetry(Retry):
    """urllib3 Retry that refuses to sleep through an over-long Retry-After.

    urllib3 would sleep up to six hours on a hostile header; a worker must not. Past
    ``max_retry_after`` the response goes straight back to the caller, whose error then
    carries ``retry_after`` so a scheduled job can come back later.
    """

    def __init__(self, *args: Any, max_retry_after: float = MAX_INLINE_RETRY_AFTER, **kw: Any):
        super().__init__(*args, **kw)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> Self:
        kw.setdefault("max_retry_after", self.max_retry_after)
        return super().new(**kw)

    def get_retry_after(self, response: Any) -> float | None:
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None  # a garbled header means "no hint", not a crash

    def increment(
        self, method: str | None = None, url: str | None = None, *args: Any, **kw: Any
    ) -> Self:
        response = kw.get("response", args[0] if args else None)
        if response is not None and self.respect_retry_after_header:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > self.max_retry_after:
                raise MaxRetryError(
                    kw.get("_pool"),
                    url or "",
                    ResponseError(f"Retry-After {retry_after}s too long"),
                )
        return super().increment(method, url, *args, **kw)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for idempotent calls. ``retries=0`` turns them off (tests, one-shot probes)."""

    retries: int = 3
    backoff_factor: float = 0.5  # 0.5, 1, 2, ... seconds
    backoff_jitter: float = 0.5  # plus up to this many random seconds
    backoff_max: float = 10.0
    max_retry_after: float = MAX_INLINE_RETRY_AFTER
    methods: frozenset[str] = field(default_factory=lambda: frozenset({"GET"}))

    def build(self) -> Retry:
        return BoundedRetry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            redirect=0,
            allowed_methods=self.methods,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff_factor,
            backoff_jitter=self.backoff_jitter,
            backoff_max=self.backoff_max,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last response comes back; we map it ourselves
            raise_on_redirect=False,
            max_retry_after=self.max_retry_after,
        )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    data: Any  # parsed JSON (Decimal for non-integers), or None when the body is not JSON
    text: str
    headers: Mapping[str, str]

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


ErrorFactory = Callable[..., ProviderError]


class HttpClient:
    """A base URL, default headers, a timeout and a retry policy on one requests.Session."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        error_class: type[ProviderError] = ProviderError,
    ) -> None:
        # Kept exactly (less a trailing slash): a JSON-RPC URL such as .../v3/<key> must be
        # posted to as is, not with a slash appended.
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.error_class = error_class
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json"})
        if headers:
            self.session.headers.update(headers)
        adapter = HTTPAdapter(max_retries=(retry or RetryPolicy()).build())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | tuple[float, float] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Send one request; transport failures raise, any HTTP status is returned."""
        data = None
        all_headers = dict(headers or {})
        if json_body is not None:
            data = dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        clean_params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                self.url(path),
                params=clean_params or None,
                data=data,
                headers=all_headers,
                timeout=timeout if timeout is not None else self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            _log_call(self.error_class.provider, method, path, None, started, "timeout")
            raise self.error_class(f"{method} {path} timed out: {exc}", "timeout", False) from exc
        except requests.ConnectionError as exc:
            _log_call(self.error_class.provider, method, path, None, started, "connection_error")
            raise self.error_class(
                f"{method} {path} could not connect: {exc}", "connection_error", False
            ) from exc
        except requests.RequestException as exc:
            raise self.error_class(
                f"{method} {path} failed: {exc}", "transport_error", False
            ) from exc
        _log_call(self.error_class.provider, method, path, response.status_code, started, "")
        text = response.text
        try:
            parsed = loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return HttpResponse(response.status_code, parsed, text, response.headers)

    def default_error(self, response: HttpResponse, what: str) -> ProviderError:
        """The generic mapping: 429/5xx transient, other 4xx permanent."""
        status = response.status
        snippet = response.text[:300]
        if status == 429:
            return self.error_class(
                f"{what}: rate limited",
                "rate_limited",
                False,
                response.retry_after,
                status=status,
                data=response.data,
            )
        if status >= 500:
            return self.error_class(
                f"{what}: server error {snippet}",
                "server_error",
                False,
                response.retry_after,
                status=status,
                data=response.data,
            )
        return self.error_class(
            f"{what}: HTTP {status} {snippet}",
            f"http_{status}",
            True,
            status=status,
            data=response.data,
        )


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        raise TypeError("float in query parameters; use Decimal or str")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _log_call(
    provider: str, method: str, path: str, status: int | None, started: float, error: str
) -> None:
    # Method, path, status and latency only: never headers (API keys) or bodies.
    log.info(
        "provider call",
        extra={
            "provider": provider,
            "method": method,
            "path": path.split("?", 1)[0],
            "status": status,
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
            "error": error,
        },
    )
