"""The demo and benchmark pacer: one of each scheduled job outstanding, never skipped for
queue depth."""

from __future__ import annotations

import importlib.util
import time
from types import ModuleType

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Task

from backoffice.settings import BASE_DIR

pytestmark = pytest.mark.django_db
JOBS = ["conversion_sweep", "advance", "payout_sweep"]


def run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_script", BASE_DIR / "scripts" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finish(task_id: str) -> None:
    now = timezone.now()
    Task.objects.create(
        id=task_id,
        name=task_id,
        func="backoffice.tasks.advance",
        started=now,
        stopped=now,
        success=True,
    )


def test_it_enqueues_a_job_again_only_once_its_last_task_has_a_result() -> None:
    pacer = run_script().Pacer()
    assert pacer.enqueue(JOBS) == 3
    assert pacer.enqueue(JOBS) == 0  # all three still wait
    finish(pacer.last["advance"][0])
    assert pacer.enqueue(JOBS) == 1
    assert OrmQ.objects.count() == 4


def test_a_full_queue_does_not_hold_the_sweeps_back() -> None:
    pacer = run_script().Pacer()
    for _ in range(50):  # per-order steps the sweeps enqueued
        pacer.enqueue(["advance"])
        finish(pacer.last["advance"][0])
    assert OrmQ.objects.count() == 50
    assert pacer.enqueue(["conversion_sweep", "payout_sweep"]) == 2


def test_a_task_lost_without_a_result_blocks_its_job_only_until_it_is_stale() -> None:
    pacer = run_script().Pacer()
    pacer.enqueue(["conversion_sweep"])
    assert pacer.enqueue(["conversion_sweep"]) == 0
    task_id, _ = pacer.last["conversion_sweep"]
    pacer.last["conversion_sweep"] = (task_id, time.monotonic() - pacer.STALE_SECONDS - 1)
    assert pacer.enqueue(["conversion_sweep"]) == 1
