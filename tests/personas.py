"""Personas: the people of STORIES.md, as users in their role groups.

Approvers must sign in with a second factor, so the approver persona comes with a confirmed
TOTP device (as `manage.py finance_user --role approver` gives one); `totp_code` computes
the code an authenticator app would show for it."""

from __future__ import annotations

import time

from django.contrib.auth.models import Group, User
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.services import roles_setup

PASSWORD = "correct-horse-battery-staple"


def persona(role: str, name: str | None = None) -> User:
    """A staff user in `finance_<role>` (viewer, operator, approver); `name` for a second
    person of the same role."""
    roles_setup()
    username = name or f"{role}-user"
    user = User.objects.create_user(
        username=username, password=PASSWORD, is_staff=True, email=f"{username}@example.com"
    )
    user.groups.add(Group.objects.get(name=f"finance_{role}"))
    if role == "approver":
        TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    return user


def totp_code(device: TOTPDevice, *, at: float | None = None) -> str:
    """The code the device's authenticator app shows at `at` (now by default)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() if at is None else at
    return f"{totp.token():0{device.digits}d}"


def totp_code_for(user: User) -> str:
    """A fresh code for the user's authenticator. Its replay guard (one code per 30 s step)
    is reset first: tests sign the same person in several times within one step."""
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    return totp_code(device)
