"""Every role's pages fit a 1,280 x 800 window: no horizontal scroll on the dashboard, the
lists, the order pages and the reports (long hashes are shortened, tables wrap or scroll
inside their own box)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from payouts.models import Payout
from payouts.payout_sweep import payout_sweep
from tests.admin.conftest import SYSTEM
from tests.admin.test_browser_screenshots import a_working_week

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LISTS = (
    "payouts/accumulation/",
    "payouts/payout/",
    "batches/conversionbatch/",
    "payouts/client/",
    "payouts/transfer/",
    "payouts/auditevent/",
    "reports/?report=payouts&from=2026-11-01&to=2026-12-31",
    "reports/?report=statement&from=2026-11-01&to=2026-12-31",
)


def overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no horizontal scroll)."""
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


WIDEST_JS = """
() => {
  const w = document.documentElement.clientWidth;
  let found = [];
  for (const el of document.querySelectorAll('#content *')) {
    const r = el.getBoundingClientRect();
    if (r.right > w + 1 && el.children.length === 0) {
      found.push(el.tagName + '.' + el.className + ': ' + (el.textContent || '').slice(0, 60));
    }
  }
  return found.slice(0, 3);
}
"""


def widest(page: Any) -> list[str]:
    """The innermost elements that stick out of the window: what to fix."""
    return list(page.evaluate(WIDEST_JS))


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_no_page_is_wider_than_a_1280_pixel_window(
    role: str, login: Any, live_server: Any, request: pytest.FixtureRequest
) -> None:
    from decimal import Decimal

    from payouts.limits import PairRange

    batch = a_working_week()
    payout_sweep(actor=SYSTEM, range_for=lambda currency, network: PairRange(Decimal(0), None))
    payout = Payout.objects.first()
    assert payout is not None
    user: User = request.getfixturevalue(role)
    page = login(user)
    page.set_viewport_size({"width": 1280, "height": 800})
    wide = {}
    paths = [
        "",
        *LISTS,
        f"batches/conversionbatch/{batch.pk}/change/",
        f"payouts/payout/{payout.pk}/change/",
        f"payouts/client/{payout.client_id}/change/",
    ]
    for path in paths:
        page.goto(f"{live_server.url}/admin/{path}")
        page.wait_for_load_state("load")
        if overflow(page) > 0:
            wide[path] = (overflow(page), widest(page))
    assert wide == {}, f"pages wider than 1280 px for {role}: {wide}"
