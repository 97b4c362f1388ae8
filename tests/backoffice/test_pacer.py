"""The demo and benchmark pacer: one of each scheduled job waiting, never skipped for
queue depth."""

from __future__ import annotations

import importlib.util
import time
from types import ModuleType

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from backoffice.models import JobRun
from backoffice.settings import BASE_DIR

pytestmark = pytest.mark.django_db
JOBS = ["conversion_sweep", "advance", "payout_sweep"]


def run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_script", BASE_DIR / "scripts" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(name: str) -> None:
    """What a worker's run of the job leaves behind: its heartbeat."""
    JobRun.objects.create(name=name, started_at=timezone.now())


def test_it_enqueues_a_job_again_only_once_a_run_of_it_started() -> None:
    pacer = run_script().Pacer()
    assert pacer.enqueue(JOBS) == 3
    assert pacer.enqueue(JOBS) == 0  # all three still wait
    start("advance")
    assert pacer.enqueue(JOBS) == 1
    assert OrmQ.objects.count() == 4


def test_a_full_queue_does_not_hold_the_sweeps_back() -> None:
    pacer = run_script().Pacer()
    for _ in range(50):  # per-order steps the sweeps enqueued
        pacer.enqueue(["advance"])
        start("advance")
    assert OrmQ.objects.count() == 50
    assert pacer.enqueue(["conversion_sweep", "payout_sweep"]) == 2


def test_a_task_lost_without_a_result_blocks_its_job_only_until_it_is_stale() -> None:
    pacer = run_script().Pacer()
    pacer.enqueue(["conversion_sweep"])
    assert pacer.enqueue(["conversion_sweep"]) == 0
    enqueued_at, _ = pacer.last["conversion_sweep"]
    pacer.last["conversion_sweep"] = (enqueued_at, time.monotonic() - pacer.STALE_SECONDS - 1)
    assert pacer.enqueue(["conversion_sweep"]) == 1


def test_a_run_that_started_before_the_enqueue_does_not_count() -> None:
    pacer = run_script().Pacer()
    start("payout_sweep")  # an earlier run, say from the schedule
    pacer.enqueue(["payout_sweep"])
    assert pacer.enqueue(["payout_sweep"]) == 0
