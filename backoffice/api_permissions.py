"""DRF's default permission: nothing is reachable unless the view says who may call it.

An endpoint that forgets to declare its permission answers 403 instead of quietly being
public (DESIGN.md section 10, lesson 15). Webhook views open themselves with `AllowAny`
because their signature check is their authentication.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class DenyAll(BasePermission):
    message = "This endpoint declares no permission, so nobody may call it."

    def has_permission(self, request: Request, view: Any) -> bool:
        return False

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return False
