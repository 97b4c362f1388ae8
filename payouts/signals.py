"""Signals the engine sends to layers above it (it never imports them).

`engine_alert(key, kind, message, order_kind, order_id)`: something a person must look at
(a fee ceiling, the retry cap of an order with money in flight, rows failing again and
again). The back office turns it into an alert, once per key while it is open.
"""

from __future__ import annotations

from django.dispatch import Signal

engine_alert = Signal()
