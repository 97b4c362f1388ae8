"""Inbound webhooks (DRF views): they verify, store the raw event, and call services.

The signature is checked before anything parses the body. Answers:
- 200 once the event is stored (applied, duplicate, ignored, unmatched, nudged);
- 401 for a missing or wrong signature, whatever the body holds (kept as `rejected`);
- 400 with the reason for a correctly signed body that cannot be used (not JSON, over a
  limit, no valid payment_id): it is still stored, as `unmatched`, for finance;
- 413 for a body too large to be read at all (WEBHOOK_READ_MAX_BYTES);
- 429 with Retry-After when one address floods an endpoint;
- 422 when anything else goes wrong: logged with the request id, never a 500.
Nothing here reads money amounts except through `accumulation_record`.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from backoffice.services import ipn_apply, nudge_apply, webhook_reject, webhook_unusable
from integrations.changenow.nudge import parse_nudge_body, verify_nudge
from integrations.errors import InvalidSignature, MalformedPayload
from integrations.nowpayments.ipn import JsonLimits, verify_ipn

log = logging.getLogger("backoffice.webhooks")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def webhook_limits() -> JsonLimits:
    """The body limits in force (settings, read per request so a test can change them)."""
    defaults = JsonLimits()
    return JsonLimits(
        max_bytes=getattr(settings, "WEBHOOK_MAX_BODY_BYTES", defaults.max_bytes),
        max_depth=getattr(settings, "WEBHOOK_MAX_DEPTH", defaults.max_depth),
        max_number_chars=getattr(settings, "WEBHOOK_MAX_NUMBER_CHARS", defaults.max_number_chars),
        max_string_chars=getattr(settings, "WEBHOOK_MAX_STRING_CHARS", defaults.max_string_chars),
    )


class WebhookRateThrottle(SimpleRateThrottle):
    """DRF throttling per endpoint (the view's `throttle_scope`) and client address, with a
    fixed-window counter: one cache add or increment per request, where DRF's stock
    throttles rewrite the list of every recent request's time. The rate comes from
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] at each request (empty: no limit), so a test or
    a benchmark sets its own. The default cache is per process: each web worker counts
    for itself."""

    def __init__(self) -> None:
        # The stock constructor reads the rate once; this class reads it per request.
        self.wait_seconds = 0.0

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = getattr(view, "throttle_scope", "")
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
        if not rate:
            return True
        limit, duration = self.parse_rate(rate)
        now = self.timer()
        window = int(now // duration)
        key = self.cache_format % {"scope": scope, "ident": f"{self.get_ident(request)}:{window}"}
        if self.cache.add(key, 1, duration):
            count = 1
        else:
            try:
                count = self.cache.incr(key)
            except ValueError:  # expired between add and incr: a new window
                self.cache.set(key, 1, duration)
                count = 1
        self.wait_seconds = (window + 1) * duration - now
        return count <= limit

    def wait(self) -> float:
        return self.wait_seconds


class _RawWebhookView(APIView):
    # No permission_classes here: the project default denies, and each webhook view opens
    # itself explicitly (its signature check is the authentication).
    authentication_classes: list = []
    throttle_classes: list = [WebhookRateThrottle]
    provider = ""
    throttle_scope = ""
    request_id = ""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        header = request.META.get("HTTP_X_REQUEST_ID", "")
        self.request_id = header if _REQUEST_ID.fullmatch(header) else uuid.uuid4().hex
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, APIException | Http404 | PermissionDenied):
            # DRF's own answers: 429 with Retry-After, 405 for a GET, ...
            response = super().handle_exception(exc)
            response["X-Request-Id"] = self.request_id or uuid.uuid4().hex
            return response
        request_id = self.request_id or uuid.uuid4().hex
        if isinstance(exc, RequestDataTooBig):
            return self._answer(413, "too_large", request_id, error=str(exc))
        log.exception(
            "webhook failed",
            extra={"provider": self.provider, "request_id": request_id, "error": repr(exc)[:300]},
        )
        return self._answer(
            422,
            "error",
            request_id,
            error="the delivery could not be processed; it is logged under this request id",
        )

    def _body(self, request: Request) -> bytes | None:
        """The raw body, or None when it is too large to read at all."""
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not (length.isascii() and length.isdigit()):
            return None
        if int(length) > settings.WEBHOOK_READ_MAX_BYTES:
            return None
        return request.body

    def _too_large(self) -> Response:
        return self._answer(
            413,
            "too_large",
            self.request_id,
            error=f"bodies over {settings.WEBHOOK_READ_MAX_BYTES} bytes are not read",
        )

    def _answer(self, status: int, outcome: str, request_id: str, **extra: object) -> Response:
        log.info(
            "webhook",
            extra={
                "provider": self.provider,
                "outcome": outcome,
                "status": status,
                "request_id": request_id,
            },
        )
        response = Response({"status": outcome, **extra}, status=status)
        response["X-Request-Id"] = request_id
        return response


class NowPaymentsWebhookView(_RawWebhookView):
    """POST /webhooks/nowpayments/: a signed IPN for one payment."""

    provider = "nowpayments"
    permission_classes = [AllowAny]  # open: the signature check is the authentication
    throttle_scope = "webhooks.nowpayments"

    def post(self, request: Request) -> Response:
        body = self._body(request)
        if body is None:
            return self._too_large()
        signature = request.META.get("HTTP_X_NOWPAYMENTS_SIG")
        try:
            payload = verify_ipn(
                body, signature, settings.NOWPAYMENTS_IPN_SECRET, limits=webhook_limits()
            )
        except InvalidSignature as exc:
            webhook_reject(
                provider=self.provider, body=body, reason=str(exc), request_id=self.request_id
            )
            return self._answer(401, "bad_signature", self.request_id, error=str(exc))
        except MalformedPayload as exc:
            # Raised only after the signature matched: NOWPayments sent it, so keep it.
            webhook_unusable(
                provider=self.provider, body=body, reason=str(exc), request_id=self.request_id
            )
            return self._answer(400, "malformed", self.request_id, error=str(exc))
        outcome = ipn_apply(payload=payload, body=body, request_id=self.request_id)
        if outcome.malformed:
            return self._answer(400, "malformed", self.request_id, error=outcome.reason)
        return self._answer(200, outcome.outcome, self.request_id)


class ChangeNowWebhookView(_RawWebhookView):
    """POST /webhooks/changenow/: a signed nudge `{"id": "<exchange id>"}`; it only triggers
    an immediate poll of that exchange, it is never trusted for amounts or states."""

    provider = "changenow"
    permission_classes = [AllowAny]  # open: the signature check is the authentication
    throttle_scope = "webhooks.changenow"

    def post(self, request: Request) -> Response:
        body = self._body(request)
        if body is None:
            return self._too_large()
        secrets = [s for s in settings.CHANGENOW_WEBHOOK_SECRET.split(",") if s]
        try:
            timestamp = verify_nudge(body, request.META.get("HTTP_X_SIGNATURE"), secrets)
        except InvalidSignature as exc:
            webhook_reject(
                provider=self.provider, body=body, reason=str(exc), request_id=self.request_id
            )
            return self._answer(401, "bad_signature", self.request_id, error=str(exc))
        try:
            exchange_id = parse_nudge_body(body)
        except MalformedPayload as exc:
            webhook_unusable(
                provider=self.provider, body=body, reason=str(exc), request_id=self.request_id
            )
            return self._answer(400, "malformed", self.request_id, error=str(exc))
        outcome = nudge_apply(
            exchange_id=exchange_id, timestamp=timestamp, body=body, request_id=self.request_id
        )
        return self._answer(200, outcome.outcome, self.request_id)
