"""The admin's sign-in form: username, password and, once the person has enrolled, the
code of their authenticator app (or a one-time backup code), in one step."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed

from backoffice.services_auth import SecondFactorError, has_confirmed_device, second_factor_check


class BackofficeAuthenticationForm(AdminAuthenticationForm):
    # One message for a wrong password and a wrong or missing code: the form must not tell
    # a guesser that the password was right.
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter the correct %(username)s, password and authentication code of a "
            "staff account (the code once you have enrolled an authenticator). The fields "
            "may be case-sensitive."
        ),
    }

    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=32,
        strip=True,
        help_text="The 6 digits your authenticator app shows, or one of your backup codes.",
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "spellcheck": "false", "autocapitalize": "off"}
        ),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # password (and the lockout, through django-axes' backend)
        user = self.get_user()
        if user is None or not has_confirmed_device(user):
            # Nobody enrolled yet: the admin sends those who need a device to enrolment.
            return cleaned
        try:
            device = second_factor_check(user=user, token=cleaned.get("otp_token") or "")
        except SecondFactorError:
            # Counted like a wrong password, so that codes cannot be guessed past the lockout.
            user_login_failed.send(
                sender=type(self),
                credentials={"username": cleaned.get("username")},
                request=self.request,
            )
            self.user_cache = None
            raise self.get_invalid_login_error() from None
        # django-otp stores the device in the session when Django signs the user in.
        user.otp_device = device
        return cleaned
