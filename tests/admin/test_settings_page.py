"""The run-time settings page: validated, every change audited with old and new value and a
reason, read-only without the permission."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.forms.models import model_to_dict
from django.test import Client as HttpClient
from django.urls import reverse

from payouts.models import AuditEvent, RuntimeSettings
from payouts.services import SETTINGS_EDITABLE, runtime_settings_get

pytestmark = pytest.mark.django_db


@pytest.fixture
def page(db: object) -> str:
    runtime_settings_get()
    return reverse("admin:payouts_runtimesettings_change", args=[1])


def form_data(**changes: Any) -> dict[str, Any]:
    data = model_to_dict(RuntimeSettings.objects.get(), fields=SETTINGS_EDITABLE)
    data = {k: v for k, v in data.items() if v is not False}  # unchecked boxes are absent
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_the_list_url_opens_the_one_settings_page(as_viewer: HttpClient, page: str) -> None:
    response = as_viewer.get(reverse("admin:payouts_runtimesettings_changelist"))
    assert response.status_code == 302 and response["Location"] == page


def test_a_threshold_change_is_audited_with_old_new_and_reason(
    as_approver: HttpClient, as_second_approver: HttpClient, page: str
) -> None:
    response = as_approver.post(
        page,
        form_data(
            conversion_threshold_usd="200",
            stuck_converting_minutes="420",
            reason="volume has grown",
            _continue="1",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = RuntimeSettings.objects.get()
    # The threshold decides when money moves: it waits for another approver; the stuck
    # limit does not and applies at once.
    assert row.conversion_threshold_usd == Decimal(20) and row.stuck_converting_minutes == 420
    from tests.admin.test_actions import approve_pending

    assert "executed: " in approve_pending(as_second_approver, reason="agreed")
    row = RuntimeSettings.objects.get()
    assert row.conversion_threshold_usd == Decimal(200)
    events = {
        e.data["setting"]: e
        for e in AuditEvent.objects.filter(object_type="runtimesettings", kind="setting_changed")
    }
    assert set(events) == {"conversion_threshold_usd", "stuck_converting_minutes"}
    assert Decimal(events["conversion_threshold_usd"].data["old"]) == 20
    assert Decimal(events["conversion_threshold_usd"].data["new"]) == 200
    assert events["conversion_threshold_usd"].reason == (
        "agreed (asked by user:approver-user: volume has grown)"
    )
    assert events["conversion_threshold_usd"].actor == "user:approver-two"
    assert events["stuck_converting_minutes"].actor == "user:approver-user"
    history = as_approver.get(page).content.decode()
    assert "conversion_threshold_usd" in history and "volume has grown" in history


def test_a_change_without_a_reason_changes_nothing(as_approver: HttpClient, page: str) -> None:
    response = as_approver.post(page, form_data(platform_fee_percent="5", reason=""))
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert RuntimeSettings.objects.get().platform_fee_percent == Decimal(3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conversion_threshold_usd", "0"),
        ("platform_fee_percent", "101"),
        ("max_pending_age_minutes", "0"),
    ],
)
def test_invalid_values_are_refused_and_change_nothing(
    as_approver: HttpClient, page: str, field: str, value: str
) -> None:
    response = as_approver.post(page, form_data(**{field: value}, reason="typo"))
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert not AuditEvent.objects.filter(object_type="runtimesettings").exists()
    assert RuntimeSettings.objects.get().conversion_threshold_usd == Decimal(20)


def test_the_page_is_read_only_for_an_operator(as_operator: HttpClient, page: str) -> None:
    html = as_operator.get(page).content.decode()
    assert 'name="conversion_threshold_usd"' not in html
    assert "Save settings" not in html
    assert as_operator.post(page, form_data(reason="x")).status_code == 403


def test_invalid_values_are_explained_on_their_fields_in_words(
    as_approver: HttpClient, page: str
) -> None:
    response = as_approver.post(
        page,
        form_data(conversion_threshold_usd="-5", platform_fee_percent="101", reason="typos"),
    )
    form = response.context["adminform"].form
    assert form.errors["conversion_threshold_usd"] == [
        "The conversion threshold must be more than 0"
    ]
    assert form.errors["platform_fee_percent"] == ["The platform fee must be between 0 and 100 %"]
    html = response.content.decode()
    assert "Constraint" not in html and "settings_threshold_positive" not in html


def test_the_kill_switches_appear_once_and_the_form_cannot_flip_them(
    as_approver: HttpClient, page: str
) -> None:
    html = as_approver.get(page).content.decode()
    assert html.count("Kill switches") == 1
    assert 'name="conversions_paused"' not in html
    data = form_data(reason="forged", conversions_paused="on", payouts_paused="on")
    as_approver.post(page, data)
    row = RuntimeSettings.objects.get()
    assert not row.conversions_paused and not row.payouts_paused
