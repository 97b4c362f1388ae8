"""Inbound webhooks (DRF views): they verify, store the raw event, and call services.

Answers: 200 once the event is stored (applied, duplicate, ignored, unmatched, nudged);
401 for a missing or bad signature; 400 for a malformed body; 413 over the size limit.
Nothing here reads money amounts except through `accumulation_record`.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backoffice.services import ipn_apply, nudge_apply, webhook_reject
from integrations.changenow.nudge import verify_nudge
from integrations.errors import InvalidSignature, MalformedPayload
from integrations.nowpayments.ipn import verify_ipn

log = logging.getLogger("backoffice.webhooks")

MAX_BODY_BYTES = 64 * 1024


class _RawWebhookView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    provider = ""

    def _request_id(self, request: Request) -> str:
        return request.META.get("HTTP_X_REQUEST_ID", "")[:64] or uuid.uuid4().hex

    def _body(self, request: Request) -> bytes | None:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return None
        body = request.body
        return body if len(body) <= MAX_BODY_BYTES else None

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

    def post(self, request: Request) -> Response:
        request_id = self._request_id(request)
        body = self._body(request)
        if body is None:
            return self._answer(413, "too_large", request_id)
        signature = request.META.get("HTTP_X_NOWPAYMENTS_SIG")
        try:
            payload = verify_ipn(body, signature, settings.NOWPAYMENTS_IPN_SECRET)
        except InvalidSignature as exc:
            webhook_reject(
                provider=self.provider,
                body=body,
                reason=str(exc),
                request_id=request_id,
                signature_valid=False,
            )
            return self._answer(401, "bad_signature", request_id)
        except MalformedPayload as exc:
            webhook_reject(
                provider=self.provider,
                body=body,
                reason=str(exc),
                request_id=request_id,
                signature_valid=False,
            )
            return self._answer(400, "malformed", request_id, error=str(exc))
        outcome = ipn_apply(payload=payload, body=body, request_id=request_id)
        if outcome.malformed:
            return self._answer(400, "malformed", request_id, error=outcome.reason)
        return self._answer(200, outcome.outcome, request_id)


class ChangeNowWebhookView(_RawWebhookView):
    """POST /webhooks/changenow/: a signed nudge `{"id": "<exchange id>"}`; it only triggers
    an immediate poll of that exchange, it is never trusted for amounts or states."""

    provider = "changenow"

    def post(self, request: Request) -> Response:
        request_id = self._request_id(request)
        body = self._body(request)
        if body is None:
            return self._answer(413, "too_large", request_id)
        secrets = [s for s in settings.CHANGENOW_WEBHOOK_SECRET.split(",") if s]
        try:
            verify_nudge(body, request.META.get("HTTP_X_SIGNATURE"), secrets)
        except (InvalidSignature, ValueError) as exc:
            webhook_reject(
                provider=self.provider,
                body=body,
                reason=str(exc),
                request_id=request_id,
                signature_valid=False,
            )
            return self._answer(401, "bad_signature", request_id)
        outcome = nudge_apply(body=body, request_id=request_id)
        if outcome.malformed:
            return self._answer(400, "malformed", request_id, error=outcome.reason)
        return self._answer(200, outcome.outcome, request_id)
