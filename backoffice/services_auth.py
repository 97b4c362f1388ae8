"""Staff sign-in: who needs a second factor, TOTP enrolment and one-time backup codes, the
accounts of the finance roles (`finance_user`), and the audit trail of lockouts.

Two-factor rules (DESIGN.md 12.5): approvers and superusers must have a confirmed TOTP
device and a session verified by it before they may use the admin; viewers and operators
may enrol (and, once enrolled, must give the code at every sign-in). `OTP_REQUIRED=false`
switches the requirement off (the `make run` demo); `OTP_REQUIRED_FOR_ALL_STAFF=true`
extends it to every staff user.
"""

from __future__ import annotations

import secrets
from base64 import b32encode
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import segno
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.break_glass import os_user
from backoffice.services import roles_setup
from payouts.transitions import Actor, audit_record

ROLE_GROUPS = {
    "viewer": "finance_viewer",
    "operator": "finance_operator",
    "approver": "finance_approver",
}
APPROVER_GROUP = ROLE_GROUPS["approver"]
# Whoever holds one of these can move or stop money, in a group or not: such a person is
# treated as an approver for the second factor.
MONEY_PERMISSIONS = (
    "payouts.force_close_orders",
    "payouts.force_complete_orders",
    "payouts.pause_jobs",
    "payouts.change_runtimesettings",
)
TOTP_DEVICE_NAME = "authenticator"
BACKUP_DEVICE_NAME = "backup codes"
BACKUP_CODE_COUNT = 10
AUDIT_OBJECT = "user"


class SecondFactorError(Exception):
    """A code that does not verify, or an enrolment step that no longer applies."""


class FinanceUserError(Exception):
    """Input `finance_user` refuses (unknown role, invalid username or email)."""


# --- who must give a second factor -------------------------------------------------------


def second_factor_required(user: AbstractBaseUser | Any) -> bool:
    """Whether this signed-in staff user may use the admin only with a verified TOTP."""
    if not settings.OTP_REQUIRED:
        return False
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    cached = getattr(user, "_second_factor_required", None)
    if cached is None:
        # Asked several times per page (permission checks, sidebar): once per request user.
        # Permissions before the group: the admin loads them for this user anyway (cached),
        # so an approver's page costs no extra query.
        cached = bool(
            settings.OTP_REQUIRED_FOR_ALL_STAFF
            or user.is_superuser
            or any(user.has_perm(perm) for perm in MONEY_PERMISSIONS)
            or user.groups.filter(name=APPROVER_GROUP).exists()
        )
        user._second_factor_required = cached
    return cached


def is_verified(user: Any) -> bool:
    """The session passed a second factor (set by django-otp's middleware)."""
    check = getattr(user, "is_verified", None)
    return bool(check()) if callable(check) else False


def second_factor_pending(user: Any) -> bool:
    """Signed in with the password only, while the second factor is required: such a user
    may enrol, verify or log out, nothing else."""
    # Verified first: a verified session needs no role lookup at all.
    return not is_verified(user) and second_factor_required(user)


def has_confirmed_device(user: Any) -> bool:
    return (
        TOTPDevice.objects.filter(user=user, confirmed=True).exists()
        or StaticDevice.objects.filter(user=user, confirmed=True, token_set__isnull=False).exists()
    )


# --- verification -------------------------------------------------------------------------


def second_factor_check(*, user: Any, token: str) -> Device:
    """The device that accepts `token`: six digits are tried on the user's authenticator,
    anything else as a one-time backup code (consumed). Raises SecondFactorError.

    Only the device the code's shape names is tried, so that a wrong code never counts a
    failure (and a throttling delay) against the other device."""
    token = "".join((token or "").split())
    if not token:
        raise SecondFactorError("Enter the code from your authenticator app or a backup code.")
    devices: Any
    if token.isdigit():
        devices = TOTPDevice.objects.filter(user=user, confirmed=True)
    else:
        devices = StaticDevice.objects.filter(user=user, confirmed=True)
        token = token.lower()
    matched: Device | None = None
    throttled = False
    # One transaction with the devices locked: two sign-ins racing cannot both use one code.
    with transaction.atomic():
        for device in devices.select_for_update().order_by("pk"):
            allowed, _ = device.verify_is_allowed()
            if not allowed:
                throttled = True
                continue
            if device.verify_token(token):
                matched = device
                break
    if matched is not None:
        return matched
    if throttled:
        raise SecondFactorError("Too many wrong codes: wait a minute, then try again.")
    raise SecondFactorError("That code is not valid (or was already used).")


# --- enrolment ------------------------------------------------------------------------------


def totp_pending_device(*, user: Any) -> TOTPDevice:
    """The user's authenticator awaiting confirmation, created when first asked for. Its
    secret is shown (QR code and text) only while it is unconfirmed."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
    return device


def totp_secret_text(device: TOTPDevice) -> str:
    """The secret as authenticator apps take it when typed in: base32, in groups of four."""
    secret = b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_svg(data: str) -> str:
    """An inline SVG QR code (no external asset, no inline style: CSP-clean)."""
    return segno.make(data, error="m").svg_inline(
        scale=4, dark="#000", light="#fff", svgclass="bo-qr", title="Scan with your app"
    )


@dataclass(frozen=True)
class Enrolment:
    device: TOTPDevice
    backup_codes: list[str]


def totp_enrolment_confirm(*, user: Any, device_id: int, token: str) -> Enrolment:
    """Confirm the pending authenticator with a code it produced: it becomes the user's only
    authenticator (a replaced one stops working) and a fresh set of backup codes is issued,
    shown once. Audited."""
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(pk=device_id, user=user, confirmed=False)
            .first()
        )
        if device is None:
            raise SecondFactorError("This enrolment is no longer pending: reload the page.")
        allowed, _ = device.verify_is_allowed()
        verified = allowed and device.verify_token("".join((token or "").split()))
    # Outside the block: a failed try must stay counted (throttling), not be rolled back.
    if not verified:
        raise SecondFactorError(
            "That code does not match. Check that the phone's clock is right and enter the "
            "code the app shows now."
        )
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        replaced = TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()[0]
        codes = _backup_codes_issue(user)
        audit_record(
            object_type=AUDIT_OBJECT,
            object_id=user.get_username()[:64],
            kind="two_factor_enrolled",
            actor=Actor.of_user(user),
            reason="authenticator confirmed with a code",
            data={"device": device.persistent_id, "replaced": replaced},
        )
    return Enrolment(device=device, backup_codes=codes)


def backup_codes_regenerate(*, user: Any) -> list[str]:
    """A new set of one-time backup codes; the previous ones stop working. Audited."""
    with transaction.atomic():
        codes = _backup_codes_issue(user)
        audit_record(
            object_type=AUDIT_OBJECT,
            object_id=user.get_username()[:64],
            kind="backup_codes_issued",
            actor=Actor.of_user(user),
            data={"count": len(codes)},
        )
    return codes


def backup_codes_left(user: Any) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def _backup_codes_issue(user: Any) -> list[str]:
    device = StaticDevice.objects.filter(user=user).order_by("pk").first()
    if device is None:
        device = StaticDevice.objects.create(user=user, name=BACKUP_DEVICE_NAME, confirmed=True)
    StaticToken.objects.filter(device__user=user).delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


# --- accounts of the finance roles ----------------------------------------------------------


@dataclass(frozen=True)
class FinanceUser:
    username: str
    role: str
    password: str
    otpauth_uri: str | None
    created: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "role": self.role,
            "password": self.password,
            "otpauth_uri": self.otpauth_uri,
        }


def finance_user_upsert(
    *, username: str, role: str, email: str | None = None, actor: Actor
) -> FinanceUser:
    """Create or update a staff user in exactly one finance role, with a new generated
    password (returned once, stored hashed; existing sessions end with the old password).

    Approvers also get a new, already confirmed TOTP device whose `otpauth://` URI is
    returned: the person adds it to an authenticator app before the first sign-in, which
    then asks for a code. Confirmed rather than pending so that the password alone never
    opens an approver's account nor lets someone else enrol a device for it. Running it
    again for an approver therefore also replaces the authenticator and drops the backup
    codes (the way to recover a lost phone). Viewers and operators keep any device they
    enrolled themselves. Audited."""
    if role not in ROLE_GROUPS:
        raise FinanceUserError(f"unknown role {role!r}: one of {', '.join(ROLE_GROUPS)}")
    username_field = User._meta.get_field("username")
    try:
        username_field.run_validators(username)
        if not username or len(username) > username_field.max_length:
            raise ValidationError("a username of 1 to 150 characters is required")
        if email:
            validate_email(email)
    except ValidationError as exc:
        raise FinanceUserError("; ".join(exc.messages)) from exc
    roles_setup()
    password = secrets.token_urlsafe(18)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(username=username).first()
        created = user is None
        if user is None:
            user = User(username=username)
        user.is_staff = True
        user.is_active = True
        if email is not None:
            user.email = email
        user.set_password(password)
        user.save()
        others = Group.objects.filter(name__in=ROLE_GROUPS.values()).exclude(name=ROLE_GROUPS[role])
        user.groups.remove(*others)
        user.groups.add(Group.objects.get(name=ROLE_GROUPS[role]))
        uri: str | None = None
        if role == "approver":
            TOTPDevice.objects.filter(user=user).delete()
            StaticToken.objects.filter(device__user=user).delete()
            device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=True)
            uri = device.config_url
        audit_record(
            object_type=AUDIT_OBJECT,
            object_id=username[:64],
            kind="finance_user_created" if created else "finance_user_updated",
            actor=actor,
            reason=f"role {role}",
            data={
                "role": role,
                "email": user.email,
                "password": "new",
                "two_factor": "new authenticator" if uri else "unchanged",
            },
        )
    return FinanceUser(
        username=username, role=role, password=password, otpauth_uri=uri, created=created
    )


# --- redirects ------------------------------------------------------------------------------


def safe_next_url(request: HttpRequest, candidate: str | None, fallback: str) -> str:
    """`candidate` when it points into this site, else `fallback` (no open redirects)."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return fallback


def client_ip(request: HttpRequest) -> str | None:
    """The client's address behind our own TLS proxy: the last X-Forwarded-For entry, the
    one the proxy appended (earlier entries come from the client and prove nothing)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    last = forwarded.split(",")[-1].strip() if forwarded else ""
    return last or request.META.get("REMOTE_ADDR")


# --- audit of lockouts and unlocks (django-axes signals) -----------------------------------

_unlocking_actor: ContextVar[Actor | None] = ContextVar("unlocking_actor", default=None)


@contextmanager
def unlocking_by(actor: Actor) -> Iterator[None]:
    """Attribute the access attempts deleted inside the block (an unlock) to `actor`."""
    token = _unlocking_actor.set(actor)
    try:
        yield
    finally:
        _unlocking_actor.reset(token)


def _audit_lockout(sender: Any, request: Any = None, username: Any = None, **kwargs: Any) -> None:
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None:
        # A refused try during a lockout already audited (axes signals those again).
        return
    address = kwargs.get("ip_address") or ""
    audit_record(
        object_type=AUDIT_OBJECT,
        object_id=(str(username or "") or "(no username)")[:64],
        kind="login_locked_out",
        actor=Actor.system("login-throttle"),
        reason=f"{failures} failed sign-ins from {address}",
        data={
            "ip_address": address,
            "failures": failures,
            "locked_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
            "path": getattr(request, "axes_path_info", ""),
        },
    )


def _audit_unlock(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return  # it never locked anything
    person = _unlocking_actor.get()
    expired = instance.attempt_time + settings.AXES_COOLOFF_TIME <= timezone.now()
    if person is not None:
        kind, actor = "login_unlocked", person
    elif expired:
        # Axes cleans up a lockout that ran out at the next sign-in of that pair.
        kind, actor = "login_lock_expired", Actor.system("login-throttle")
    else:
        # Not from our admin: a command (`axes_reset_username`) or a shell removed it.
        kind, actor = "login_unlocked", Actor.system(f"unlock (OS user {os_user()})")
    audit_record(
        object_type=AUDIT_OBJECT,
        object_id=(instance.username or "(no username)")[:64],
        kind=kind,
        actor=actor,
        data={"ip_address": instance.ip_address, "failures": instance.failures_since_start},
    )


def connect_audit_receivers() -> None:
    from axes.models import AccessAttempt
    from axes.signals import user_locked_out
    from django.db.models.signals import post_delete

    user_locked_out.connect(_audit_lockout, dispatch_uid="backoffice-audit-lockout")
    post_delete.connect(_audit_unlock, sender=AccessAttempt, dispatch_uid="backoffice-audit-unlock")
