"""Operator commands and their JSON contract (DESIGN.md section 11)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django_q.models import Schedule

from batches.models import ConversionBatch
from payouts.models import Accumulation, Client, FundedOrder, RuntimeSettings
from tests.factories import AccumulationFactory, ClientFactory

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def run_json(*args: str) -> dict:
    out = io.StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_bootstrap_is_idempotent() -> None:
    call_command("bootstrap", stdout=io.StringIO())
    call_command("bootstrap", stdout=io.StringIO())
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "finance_viewer",
        "finance_operator",
        "finance_approver",
    }
    assert Schedule.objects.filter(name="conversion_sweep").count() == 1
    assert RuntimeSettings.objects.count() == 1


def test_sweep_json_has_the_contract_shape(providers) -> None:  # noqa: ANN001
    client = ClientFactory()
    for _ in range(3):
        AccumulationFactory(client=client, usd=Decimal("10"), eth=Decimal("0.004"))
    dry = run_json("sweep", "--dry-run")
    assert dry == {
        "created": False,
        "batch_id": None,
        "rows": 3,
        "eth": "0.012",
        "usd": "30",
        "reason": "dry_run:threshold",
        "batches": [],
    }
    assert not ConversionBatch.objects.exists()
    real = run_json("sweep")
    assert real["created"] is True
    assert real["batch_id"] == str(ConversionBatch.objects.get().pk)
    assert (real["rows"], real["eth"], real["usd"]) == (3, "0.012", "30")
    assert real["batches"] == [
        {"batch_id": real["batch_id"], "rows": 3, "eth": "0.012", "usd": "30"}
    ]


def test_status_json_lists_every_state_with_zeros() -> None:
    AccumulationFactory(eth=Decimal("0.5"), usd=Decimal("1500"))
    status = run_json("status")
    assert set(status["accumulations"]) == {s.value for s in Accumulation.State}
    assert status["accumulations"]["pending"] == {
        "count": 1,
        "eth": "0.5",
        "usd": "1500",
        "usdt": "0",
    }
    assert status["accumulations"]["paid"]["count"] == 0
    states = {s.value for s in FundedOrder.State}
    assert set(status["batches"]) == states and set(status["payouts"]) == states
    assert status["platform_usdt"] == "0"


def test_seed_creates_clients_and_pending_rows_set_based() -> None:
    out = run_json("seed", "--clients", "7", "--accumulations", "500")
    assert out["accumulations"] == 500
    assert Client.objects.filter(reference__startswith="seed-").count() == 7
    assert Accumulation.objects.filter(state="pending").count() == 500
    assert Accumulation.objects.values("client").distinct().count() == 7
    run_json("seed", "--clients", "7", "--accumulations", "10")
    assert Client.objects.filter(reference__startswith="seed-").count() == 7


def test_check_deploy_reports_no_warnings_with_production_settings() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEBUG", "SECURE_", "SESSION_", "CSRF_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="backoffice.settings",
        DEBUG="false",
        SECRET_KEY="x7Qp-" + "k9Lm2Vn8Rt4Wy6Zb1Hc3Jd5Fg7Ks0Pq" * 2,
        ALLOWED_HOSTS="backoffice.example.com",
    )
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout
