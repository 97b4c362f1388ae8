"""Test settings: production settings with test secrets; DEBUG stays off."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-that-is-long-enough-for-django-checks-000000")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("NOWPAYMENTS_IPN_SECRET", "test-ipn-secret")
os.environ.setdefault("CHANGENOW_WEBHOOK_SECRET", "test-changenow-webhook-secret")
os.environ.setdefault("CHANGENOW_API_KEY", "test-changenow-key")
os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
os.environ.setdefault("ADMINS", "Finance Ops:finance-ops@example.com")
os.environ.setdefault("WALLET_CONFIRMATIONS", "1")

from backoffice.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A throwaway database per test run, so that concurrent runs never share one.
DATABASES["default"]["TEST"] = {"NAME": f"test_backoffice_{os.getpid()}"}  # noqa: F405
ENGINE_ENQUEUE_FOLLOWUPS = False
