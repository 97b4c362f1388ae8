"""``manage.py demo_payments N [--url URL] [--client REF]``: signed demo payments over HTTP.

Posts N "finished" NOWPayments IPNs, signed with NOWPAYMENTS_IPN_SECRET exactly as
NOWPayments signs them, to a running web server's ``/webhooks/nowpayments/``. It is a client
of the HTTP API only: it never writes to the database, so what it shows is what a real
provider would get back. Amounts are decimal strings, as NOWPayments sends them.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.services import DEMO_CLIENTS
from integrations.nowpayments.ipn import SIGNATURE_HEADER, sign_ipn

WEBHOOK_PATH = "/webhooks/nowpayments/"
# The sandbox quotes ETH at this price (integrations/sandbox/config.py); demo payments use it
# so that the ETH credited and the USD value agree the way they would in production.
DEFAULT_ETH_PRICE_USD = Decimal("3000")
# NOWPayments keeps a small cut: the ETH that reaches the host wallet (outcome_amount) is a
# little less than the ETH the customer paid (pay_amount).
NOWPAYMENTS_FEE = Decimal("0.005")


def webhook_url(url: str) -> str:
    """Accept the server's root (http://127.0.0.1:8000) or the full webhook URL."""
    url = url.rstrip("/")
    if url.endswith(WEBHOOK_PATH.rstrip("/")):
        return url + "/"
    return url + WEBHOOK_PATH


def demo_payment(
    *,
    reference: str,
    usd: Decimal,
    eth_price: Decimal,
    payment_id: int,
    rng: random.Random,
    now: datetime,
) -> dict[str, Any]:
    """One finished IPN body for `usd` worth of ETH paid to merchant `reference`."""
    pay_amount = (usd / eth_price).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
    outcome = (pay_amount * (1 - NOWPAYMENTS_FEE)).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
    invoice = rng.randrange(10**9, 10**10)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "payment_id": payment_id,
        "parent_payment_id": None,
        "invoice_id": invoice,
        "payment_status": "finished",
        "pay_address": "0x" + uuid.uuid4().hex + uuid.uuid4().hex[:8],
        "payin_extra_id": None,
        "price_amount": format(usd, "f"),
        "price_currency": "usd",
        "pay_amount": format(pay_amount, "f"),
        "actually_paid": format(pay_amount, "f"),
        "actually_paid_at_fiat": 0,
        "pay_currency": "eth",
        "order_id": f"{reference}:demo-{invoice}",
        "order_description": "Demo order",
        "purchase_id": str(rng.randrange(10**9, 10**10)),
        "outcome_amount": format(outcome, "f"),
        "outcome_currency": "eth",
        "payout_hash": None,
        "payin_hash": "0x" + uuid.uuid4().hex + uuid.uuid4().hex,
        "created_at": stamp,
        "updated_at": stamp,
        "burning_percent": None,
        "type": "crypto2crypto",
        "payment_extra_ids": None,
    }


class Command(BaseCommand):
    help = "Post N signed 'finished' NOWPayments IPNs to the running web server (HTTP only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int, help="number of payments to send")
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000",
            help="the web server (root or full webhook URL); default http://127.0.0.1:8000",
        )
        parser.add_argument(
            "--client",
            action="append",
            dest="clients",
            metavar="REF",
            help="merchant reference to pay (repeatable); default: the demo merchants in turn",
        )
        parser.add_argument("--min-usd", type=Decimal, default=Decimal("8"))
        parser.add_argument("--max-usd", type=Decimal, default=Decimal("20"))
        parser.add_argument("--eth-price", type=Decimal, default=DEFAULT_ETH_PRICE_USD)
        parser.add_argument("--seed", type=int, default=None, help="reproducible amounts")
        parser.add_argument("--timeout", type=float, default=10.0)
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
        parser.add_argument(
            "--sandbox",
            default=os.environ.get("SANDBOX_URL", "http://127.0.0.1:8100"),
            help="the provider sandbox: NOWPayments' payout of each payment is paid into the "
            "host wallet on its chain before the IPN, as in production; '' to skip",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["count"]
        if count < 1:
            raise CommandError("count must be at least 1")
        low, high = options["min_usd"], options["max_usd"]
        if not Decimal(0) < low <= high:
            raise CommandError("need 0 < --min-usd <= --max-usd")
        secret = settings.NOWPAYMENTS_IPN_SECRET
        if not secret:
            raise CommandError("NOWPAYMENTS_IPN_SECRET is not set: the server would refuse all")
        references = options["clients"] or [c["reference"] for c in DEMO_CLIENTS]
        url = webhook_url(options["url"])
        rng = random.Random(options["seed"])
        session = requests.Session()
        failures = 0
        total_usd = Decimal(0)
        # Payment ids must be new on every run (a repeat is, correctly, a duplicate): the
        # start time in microseconds, times a million, plus the payment's index.
        first_id = time.time_ns() // 1000 * 10**6
        for index in range(count):
            reference = references[index % len(references)]
            cents = rng.randint(int(low * 100), int(high * 100))
            usd = Decimal(cents).scaleb(-2)
            payload = demo_payment(
                reference=reference,
                usd=usd,
                eth_price=options["eth_price"],
                payment_id=first_id + index,
                rng=rng,
                now=datetime.now(UTC),
            )
            body, signature = sign_ipn(payload, secret)
            if options["sandbox"]:
                self._pay_host_wallet(session, options["sandbox"], payload, options["timeout"])
            try:
                response = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
                    timeout=options["timeout"],
                )
                status, answer = response.status_code, response.text.strip()
            except requests.RequestException as exc:
                status, answer = 0, f"no answer: {exc}"
            if status != 200:
                failures += 1
            else:
                total_usd += usd
            self._report(options["json"], payload, status, answer)
        summary = (
            f"sent {count} payments (${total_usd} accepted) to {url}: "
            f"{count - failures} answered 200, {failures} did not"
        )
        self.stdout.write(summary if not options["json"] else json.dumps({"summary": summary}))
        if failures:
            raise SystemExit(1)

    def _pay_host_wallet(
        self, session: requests.Session, sandbox: str, payload: dict[str, Any], timeout: float
    ) -> None:
        try:
            response = session.post(
                f"{sandbox.rstrip('/')}/_sandbox/pay",
                json={"asset": "eth", "amount": payload["outcome_amount"]},
                timeout=timeout,
            )
            ok = response.status_code == 200
        except requests.RequestException:
            ok = False
        if not ok:
            self.stderr.write(
                f"warning: the sandbox at {sandbox} did not take NOWPayments' payout of "
                f"{payload['payment_id']}: reconcile will report the host wallet short"
            )

    def _report(self, as_json: bool, payload: dict[str, Any], status: int, answer: str) -> None:
        if as_json:
            line = {
                "payment_id": payload["payment_id"],
                "order_id": payload["order_id"],
                "usd": payload["price_amount"],
                "eth": payload["outcome_amount"],
                "http_status": status,
                "answer": answer,
            }
            self.stdout.write(json.dumps(line))
            return
        self.stdout.write(
            f"payment {payload['payment_id']} {payload['order_id']:<36} "
            f"${payload['price_amount']:>6} = {payload['outcome_amount']} ETH -> "
            f"HTTP {status} {answer}"
        )
