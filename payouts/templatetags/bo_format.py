"""`{% load bo_format %}` then `{{ value|amount:"eth" }}`: the one amount rule of
`payouts.formatting`, right-aligned by its cell's class, the full value on hover."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from payouts.formatting import amount_display

register = template.Library()


@register.filter
def amount(value: Any, asset: str = "") -> str:
    shown = amount_display(value, asset)
    if not shown["rounded"]:
        return format_html('<span class="bo-amount">{}</span>', shown["text"])
    return format_html('<span class="bo-amount" title="{}">{}</span>', shown["full"], shown["text"])
