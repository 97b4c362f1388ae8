"""Heartbeats, the watchdog and its alerts, reconcile breaches, and /healthz."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone

from backoffice import reconcile, tasks
from backoffice.models import Alert, JobRun, WebhookEvent
from backoffice.operations import alert_acknowledge, job_heartbeat, watchdog_run
from backoffice.reconcile import reconcile_run
from backoffice.schedules import schedules_setup
from batches.models import ConversionBatch
from integrations.changenow.client import ChangeNowClient
from payouts.models import Payout
from tests.conftest import Control
from tests.factories import BatchFactory, PayoutFactory
from tests.payouts.test_engine import new_batch, run_to

pytestmark = pytest.mark.django_db


def no_wallet_needs() -> tuple[Decimal, Decimal]:
    return Decimal(1000), Decimal(1000000)


def fresh_jobs() -> None:
    """Every scheduled job just ran successfully."""
    from backoffice.schedules import SCHEDULES

    schedules_setup()
    now = timezone.now()
    for job in SCHEDULES:
        JobRun.objects.create(name=job.name, started_at=now, finished_at=now, outcome="ok")


class TestHeartbeats:
    def test_a_job_run_records_its_outcome_and_summary(self) -> None:
        with job_heartbeat("demo") as summary:
            summary["rows"] = 3
        run = JobRun.objects.get(name="demo")
        assert (run.outcome, run.summary, run.finished_at is not None) == ("ok", {"rows": 3}, True)

    def test_a_job_that_raised_is_a_failed_run_never_a_silent_zero(self) -> None:
        with pytest.raises(ZeroDivisionError), job_heartbeat("demo"):
            _ = 1 / 0
        run = JobRun.objects.get(name="demo")
        assert run.outcome == "failed" and "ZeroDivisionError" in run.error

    def test_the_scheduled_jobs_record_heartbeats(self, providers: Control) -> None:
        tasks.conversion_sweep()
        tasks.advance()
        tasks.payout_sweep()
        names = set(JobRun.objects.filter(outcome="ok").values_list("name", flat=True))
        assert names == {"conversion_sweep", "advance", "payout_sweep"}
        summary = JobRun.objects.get(name="conversion_sweep").summary
        assert summary["reason"] == "no_pending" and summary["created"] is False


class TestWatchdog:
    def test_a_stuck_order_is_alerted_once_per_incident_then_resolved(self) -> None:
        fresh_jobs()
        batch = BatchFactory(state="exchange_created")
        ConversionBatch.objects.filter(pk=batch.pk).update(
            state_changed_at=timezone.now() - timedelta(minutes=31)
        )
        watchdog_run(wallet_balances=no_wallet_needs)
        watchdog_run(wallet_balances=no_wallet_needs)
        alert = Alert.objects.get(kind="order_stuck")
        assert alert.status == "open" and str(batch.pk) in alert.message
        assert alert.link == f"/admin/batches/conversionbatch/{batch.pk}/change/"
        assert len(mail.outbox) == 1 and "order_stuck" in mail.outbox[0].subject
        ConversionBatch.objects.filter(pk=batch.pk).update(state="failed")
        result = watchdog_run(wallet_balances=no_wallet_needs)
        assert result["resolved"] == 1
        alert.refresh_from_db()
        assert alert.status == "resolved" and alert.resolved_by == "system:watchdog"

    def test_a_young_order_is_not_stuck(self) -> None:
        fresh_jobs()
        BatchFactory(state="exchange_created")
        watchdog_run(wallet_balances=no_wallet_needs)
        assert not Alert.objects.exists()

    def test_orders_needing_attention_are_alerted(self) -> None:
        fresh_jobs()
        payout = PayoutFactory(state="needs_attention")
        Payout.objects.filter(pk=payout.pk).update(
            last_error_code="exchange_refunded", last_error="refunded after deposit"
        )
        watchdog_run(wallet_balances=no_wallet_needs)
        alert = Alert.objects.get(kind="needs_attention")
        assert "exchange_refunded" in alert.message
        assert alert_acknowledge(alert_id=alert.pk, user=None)
        watchdog_run(wallet_balances=no_wallet_needs)
        alert.refresh_from_db()
        assert alert.status == "acknowledged" and len(mail.outbox) == 1

    def test_a_deposit_still_waiting_after_funds_were_sent_is_alerted(self) -> None:
        fresh_jobs()
        batch = BatchFactory(state="funds_sent", provider_status="waiting")
        ConversionBatch.objects.filter(pk=batch.pk).update(
            state_changed_at=timezone.now() - timedelta(minutes=45)
        )
        watchdog_run(wallet_balances=no_wallet_needs)
        assert Alert.objects.filter(kind="deposit_not_seen").count() == 1

    def test_a_job_that_missed_two_intervals_is_alerted(self) -> None:
        fresh_jobs()
        JobRun.objects.filter(name="conversion_sweep").update(
            started_at=timezone.now() - timedelta(minutes=11)
        )
        watchdog_run(wallet_balances=no_wallet_needs)
        alert = Alert.objects.get(kind="job_missed")
        assert "conversion_sweep" in alert.message

    def test_repeated_signature_failures_are_alerted(self) -> None:
        fresh_jobs()
        for i in range(5):
            WebhookEvent.objects.create(
                provider="nowpayments",
                event_id=f"rejected:{i}",
                signature_valid=False,
                outcome="rejected",
                body="{}",
            )
        watchdog_run(wallet_balances=no_wallet_needs)
        assert (
            "5 webhook deliveries" in Alert.objects.get(kind="webhook_signature_failures").message
        )

    def test_a_host_wallet_short_of_open_orders_is_alerted(self) -> None:
        fresh_jobs()
        BatchFactory(state="reserved", eth_total=Decimal("2"))
        PayoutFactory(state="reserved", usdt_amount=Decimal("500"))
        watchdog_run(wallet_balances=lambda: (Decimal("1.5"), Decimal("100")))
        messages = sorted(
            Alert.objects.filter(kind="wallet_balance_low").values_list("message", flat=True)
        )
        assert "1.5 ETH" in messages[0] and "100 USDT" in messages[1]

    def test_the_live_wallet_balance_is_read_from_the_signer(self, providers: Control) -> None:
        fresh_jobs()
        BatchFactory(state="reserved", eth_total=Decimal("500"))  # sandbox wallet holds 100 ETH
        watchdog_run()
        assert Alert.objects.filter(key="wallet:eth_low").exists()

    def test_alerts_are_posted_to_the_alert_webhook(self, settings: Any) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
            fresh_jobs()
            PayoutFactory(state="needs_attention")
            watchdog_run(wallet_balances=no_wallet_needs)
        finally:
            server.shutdown()
        assert len(received) == 1 and "needs_attention" in received[0]["text"]


class TestReconcile:
    def test_a_hand_made_breach_is_reported_precisely(self, providers: Control) -> None:
        batch = new_batch()
        run_to("batch", batch.pk, providers, {"completed"})
        assert reconcile_run()["ok"]
        with connection.cursor() as cur:
            cur.execute(
                "UPDATE payouts_accumulation SET usdt = usdt + 0.000001 WHERE id = "
                "(SELECT min(id) FROM payouts_accumulation WHERE batch_id = %s)",
                [batch.pk],
            )
        report = reconcile_run(alert=True)
        assert not report["ok"]
        breach = report["breaches"][0]
        assert breach["invariant"] == "2 completed batch split sums to the amount received"
        assert breach["object"] == f"batch:{batch.pk}"
        assert "platform" in breach["detail"]
        invariants = [b["invariant"] for b in report["breaches"]]
        assert invariants == [
            "2 completed batch split sums to the amount received",
            "ledger: client balance equals accumulations",
        ]
        assert Alert.objects.filter(kind="reconcile_breach").count() == 2
        out = io.StringIO()
        with pytest.raises(SystemExit) as exit_info:
            call_command("reconcile", "--json", stdout=out)
        assert exit_info.value.code == 1
        assert json.loads(out.getvalue())["ok"] is False

    def test_an_exchange_we_do_not_own_is_reported(self, providers: Control, sandbox) -> None:  # noqa: ANN001
        client = ChangeNowClient(sandbox.url, "key")
        stray = client.create_exchange(
            from_currency="eth",
            to_currency="usdt",
            from_network="eth",
            to_network="eth",
            from_amount=Decimal("0.1"),
            address="0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        )
        assert reconcile_run()["ok"]  # never funded: harmless, like a retried create
        from payouts.engine import wallet

        client = wallet()
        client.broadcast(
            client.sign(
                client.build_eth_transfer(
                    stray.payin_address, Decimal("0.1"), nonce=client.get_nonce()
                )
            )
        )
        report = reconcile_run()
        assert not report["ok"]
        found = [b for b in report["breaches"] if b["object"] == f"exchange:{stray.id}"]
        assert [b["invariant"] for b in found] == ["changenow: every exchange is ours"]

    def test_an_unreadable_provider_is_a_breach_not_a_pass(
        self, settings: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(reconcile, "RETRY_DELAYS", (0, 0, 0))
        settings.CHANGENOW_API_URL = "http://127.0.0.1:9"
        settings.WALLET_RPC_URL = "http://127.0.0.1:9"
        report = reconcile_run()
        assert not report["ok"]
        assert {(b["invariant"], b["object"]) for b in report["breaches"]} == {
            ("provider unreadable", "chain:host_wallet"),
            ("provider unreadable", "changenow:partner exchange list"),
        }

    def test_it_retries_a_provider_read_before_reporting_it(
        self, providers: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(reconcile, "RETRY_DELAYS", (0, 0, 0))
        # Three failures in a row on balance reads: the fourth try answers, no breach.
        providers.fail(path="/rpc", rpc_method="eth_getBalance", count=3, status=502)
        assert reconcile_run()["ok"], reconcile_run()
        providers.fail(path="/rpc", rpc_method="eth_getBalance", count=4, status=502)
        report = reconcile_run()
        assert [(b["invariant"], b["object"]) for b in report["breaches"]] == [
            ("provider unreadable", "chain:host_wallet")
        ]


class TestHealth:
    def test_it_is_healthy_when_every_job_ran_in_time(self) -> None:
        fresh_jobs()
        response = HttpClient().get("/healthz")
        body = response.json()
        assert response.status_code == 200 and body["status"] == "ok"
        assert body["database"] == "ok" and body["jobs"]["advance"]["late"] is False
        assert body["needs_attention"] == 0

    def test_it_turns_503_when_the_cluster_stopped_for_two_intervals(self) -> None:
        fresh_jobs()
        with time_machine.travel(timezone.now() + timedelta(minutes=3)):
            response = HttpClient().get("/healthz")
        assert response.status_code == 503
        assert response.json()["jobs"]["advance"]["late"] is True

    def test_it_counts_orders_needing_attention(self) -> None:
        fresh_jobs()
        PayoutFactory(state="needs_attention")
        assert HttpClient().get("/healthz").json()["needs_attention"] == 1
