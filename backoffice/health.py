"""GET /healthz: database, broker, job freshness and orders needing attention, as JSON.

200 when the database and broker answer and every scheduled job succeeded within twice its
interval; 503 otherwise. Unauthenticated on purpose (load balancers and monitors call it),
so it shows counts and names only, never amounts or ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


def _database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", reported as such
        return False, type(exc).__name__


def _broker() -> tuple[bool, str]:
    if not settings.REDIS_URL:
        return _database()[0], "orm"
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
        return True, "redis"
    except Exception as exc:  # noqa: BLE001
        return False, f"redis: {type(exc).__name__}"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    db_ok, db_detail = _database()
    broker_ok, broker_detail = _broker()
    body: dict[str, Any] = {
        "database": db_detail if db_ok else f"down: {db_detail}",
        "broker": broker_detail if broker_ok else f"down: {broker_detail}",
    }
    jobs_ok = False
    if db_ok:
        from backoffice.operations import job_last_runs, jobs_late
        from batches.models import ConversionBatch
        from payouts.models import Payout

        late = dict(jobs_late())
        runs = job_last_runs()
        body["jobs"] = {
            name: {
                "last_run": run.started_at.isoformat(),
                "outcome": run.outcome,
                "late": name in late,
            }
            for name, run in runs.items()
        }
        for name, why in late.items():
            body["jobs"].setdefault(name, {"last_run": None, "outcome": None, "late": True})
            body["jobs"][name]["why"] = why
        body["needs_attention"] = (
            ConversionBatch.objects.filter(state="needs_attention").count()
            + Payout.objects.filter(state="needs_attention").count()
        )
        jobs_ok = not late
    healthy = db_ok and broker_ok and jobs_ok
    body["status"] = "ok" if healthy else "unhealthy"
    return JsonResponse(body, status=200 if healthy else 503)
