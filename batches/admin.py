"""Admin page of conversion batches: the funded-order page of `payouts.admin` plus the
distribution (each client's share and the platform's, summing to the USDT received)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from django.contrib import admin
from django.db import connection
from django.http import HttpRequest
from django.utils.html import format_html

from batches.models import ConversionBatch
from payouts.admin.orders import FundedOrderAdmin
from payouts.admin.shared import DATE_FILTER
from payouts.admin.support import (
    StuckFilter,
    admin_url,
    datetime_column,
    eth,
    fmt_decimal,
    usd,
    usdt,
)
from payouts.models import Accumulation, Client

# Clients shown on a batch page; the totals always cover every client of the batch.
DISTRIBUTION_CLIENTS = 50

# Per client of one batch: rows, ETH contributed, the ETH that is the client's after the
# fee, and the USDT credited; window totals over all clients in the same pass.
_DISTRIBUTION_SQL = """
SELECT c.id, c.reference, c.name, s.n, s.eth, s.client_eth, s.usdt,
       count(*) OVER (), sum(s.n) OVER (), sum(s.eth) OVER (), sum(s.client_eth) OVER (),
       sum(s.usdt) OVER ()
FROM (
    SELECT client_id, count(*) AS n, sum(eth) AS eth,
           sum(eth * (100 - fee_percent) / 100) AS client_eth, sum(usdt) AS usdt
    FROM payouts_accumulation WHERE batch_id = %s GROUP BY client_id
) s JOIN payouts_client c ON c.id = s.client_id
ORDER BY s.usdt DESC NULLS LAST, s.eth DESC, c.reference
LIMIT %s
"""


@admin.register(ConversionBatch)
class ConversionBatchAdmin(FundedOrderAdmin):
    kind = "batch"
    object_type = "conversionbatch"
    link_field = "batch"
    change_form_template = "admin/backoffice/batch_change_form.html"
    list_display = (
        "short",
        "state_display",
        "state_age",
        "row_count",
        "eth_amount",
        "usd_amount",
        "received",
        "platform",
        "exchange_id",
        "created",
    )
    list_display_links = ("short",)
    created = datetime_column("created_at", "created")
    list_filter = ("state", StuckFilter, "trigger", ("created_at", DATE_FILTER))
    export_columns: ClassVar = (
        ("batch_id", "id"),
        ("state", "state"),
        ("rows", "row_count"),
        ("eth_total", "eth_total"),
        ("usd_total", "usd_total"),
        ("threshold_usd", "threshold_usd"),
        ("trigger", "trigger"),
        ("usdt_received_raw", "usdt_received_raw"),
        ("usdt_received", "usdt_received"),
        ("exchange_dust", "exchange_dust"),
        ("platform_usdt", "platform_usdt"),
        ("exchange_id", "exchange_id"),
        ("created_at", "created_at"),
        ("completed_at", "completed_at"),
    )

    @admin.display(description="ETH", ordering="eth_total")
    def eth_amount(self, obj: ConversionBatch) -> str:
        return fmt_decimal(obj.eth_total)

    @admin.display(description="USD", ordering="usd_total")
    def usd_amount(self, obj: ConversionBatch) -> str:
        return fmt_decimal(obj.usd_total, 2)

    @admin.display(description="USDT received", ordering="usdt_received")
    def received(self, obj: ConversionBatch) -> str:
        return fmt_decimal(obj.usdt_received, 6) if obj.usdt_received is not None else "—"

    @admin.display(description="platform USDT", ordering="platform_usdt")
    def platform(self, obj: ConversionBatch) -> str:
        return fmt_decimal(obj.platform_usdt, 6) if obj.platform_usdt is not None else "—"

    def describe_money(self, obj: ConversionBatch) -> list[tuple[str, Any]]:
        return [
            ("ETH", eth(obj.eth_total)),
            ("USD value", usd(obj.usd_total)),
            ("pays into", obj.payin_address or "no payin address yet"),
        ]

    def distribution(self, obj: ConversionBatch) -> dict[str, Any] | None:
        """Each client's share and the platform's; shown once the batch has received USDT."""
        if obj.usdt_received is None:
            return None
        with connection.cursor() as cur:
            cur.execute(_DISTRIBUTION_SQL, [obj.pk, DISTRIBUTION_CLIENTS])
            rows = cur.fetchall()
        clients = []
        totals = {"clients": 0, "rows": 0, "eth": Decimal(0), "usdt": Decimal(0)}
        for (
            cid,
            ref,
            name,
            n,
            eth_,
            client_eth,
            usdt_,
            n_clients,
            t_rows,
            t_eth,
            _tc,
            t_usdt,
        ) in rows:
            clients.append(
                {
                    "url": admin_url(Client, "change", cid),
                    "reference": ref,
                    "name": name,
                    "rows": n,
                    "rows_url": f"{admin_url(Accumulation)}?batch__id__exact={obj.pk}&client={ref}",
                    "eth": fmt_decimal(eth_),
                    "client_eth": fmt_decimal(Decimal(client_eth).quantize(Decimal("1e-18"))),
                    "usdt": fmt_decimal(usdt_, 6) if usdt_ is not None else "—",
                }
            )
            totals = {
                "clients": n_clients,
                "rows": t_rows,
                "eth": t_eth,
                "usdt": t_usdt or Decimal(0),
            }
        platform = obj.platform_usdt or Decimal(0)
        received = obj.usdt_received
        # Rows released after completion are impossible (terminal), so the clients' USDT
        # here is exactly what the distribution credited.
        balanced = totals["usdt"] + platform == received
        return {
            "clients": clients,
            "more": max(0, totals["clients"] - len(clients)),
            "client_count": totals["clients"],
            "rows": totals["rows"],
            "eth": fmt_decimal(totals["eth"]),
            "clients_usdt": fmt_decimal(totals["usdt"], 6),
            "platform_usdt": fmt_decimal(platform, 6),
            "received": fmt_decimal(received, 6),
            "raw": fmt_decimal(obj.usdt_received_raw),
            "dust": fmt_decimal(obj.exchange_dust),
            "balanced": balanced,
            "check": format_html(
                "{} (clients) + {} (platform) = {} USDT received{}",
                fmt_decimal(totals["usdt"], 6),
                fmt_decimal(platform, 6),
                fmt_decimal(totals["usdt"] + platform, 6),
                "" if balanced else format_html(" ≠ {} — reconcile!", fmt_decimal(received, 6)),
            ),
        }

    def summary(self, obj: ConversionBatch) -> list[tuple[str, Any]]:
        return [
            ("rows", obj.row_count),
            ("ETH to convert", eth(obj.eth_total)),
            ("USD value at intake", usd(obj.usd_total)),
            (
                "swept because",
                "pending USD reached the threshold"
                if obj.trigger == ConversionBatch.Trigger.THRESHOLD
                else "the oldest payment reached the max pending age",
            ),
            ("threshold then", usd(obj.threshold_usd)),
            ("USDT received", usdt(obj.usdt_received)),
            ("platform USDT", usdt(obj.platform_usdt)),
        ]

    def page_context(self, request: HttpRequest, obj: ConversionBatch) -> dict[str, Any]:
        context = super().page_context(request, obj)
        context["distribution"] = self.distribution(obj)
        return context
