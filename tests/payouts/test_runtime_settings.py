"""Run-time settings: seeded once from the environment, then changed only with an audit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from payouts.models import AuditEvent, RuntimeSettings
from payouts.services import runtime_settings_get, runtime_settings_update
from payouts.transitions import Actor

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


@override_settings(CONVERSION_THRESHOLD_USD=Decimal("35"), PLATFORM_FEE_PERCENT=Decimal("2.5"))
def test_the_row_is_seeded_from_the_environment_once() -> None:
    row = runtime_settings_get()
    assert (row.conversion_threshold_usd, row.platform_fee_percent) == (Decimal(35), Decimal("2.5"))
    with override_settings(CONVERSION_THRESHOLD_USD=Decimal("99")):
        assert runtime_settings_get().conversion_threshold_usd == Decimal(35)
    assert RuntimeSettings.objects.count() == 1


def test_each_change_is_audited_with_old_and_new_value() -> None:
    runtime_settings_update(
        changes={"conversion_threshold_usd": Decimal(200), "payouts_paused": True},
        actor=ACTOR,
        reason="volume grew",
    )
    events = {e.data["setting"]: e for e in AuditEvent.objects.filter(kind="setting_changed")}
    assert events["conversion_threshold_usd"].data == {
        "setting": "conversion_threshold_usd",
        "old": "20.000000000000000000",
        "new": "200",
    }
    assert events["payouts_paused"].reason == "volume grew"
    assert runtime_settings_get().payouts_paused is True


def test_an_unchanged_value_writes_no_event() -> None:
    runtime_settings_update(changes={"payouts_paused": False}, actor=ACTOR, reason="noop")
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"conversion_threshold_usd": Decimal(0)},
        {"platform_fee_percent": Decimal(101)},
        {"platform_fee_percent": Decimal(-1)},
    ],
)
def test_it_rejects_invalid_values_and_keeps_the_old_ones(changes: dict) -> None:
    with pytest.raises(ValidationError):
        runtime_settings_update(changes=changes, actor=ACTOR, reason="bad")
    row = runtime_settings_get()
    assert (row.conversion_threshold_usd, row.platform_fee_percent) == (Decimal(20), Decimal(3))
    assert not AuditEvent.objects.exists()


def test_it_requires_a_reason_and_known_fields() -> None:
    with pytest.raises(ValueError, match="reason"):
        runtime_settings_update(changes={"payouts_paused": True}, actor=ACTOR, reason=" ")
    with pytest.raises(ValueError, match="not editable"):
        runtime_settings_update(changes={"id": 2}, actor=ACTOR, reason="x")
