"""Connects the audit trail of staff sign-in (lockouts, unlocks) at start-up.

A separate app only so that its `ready()` runs in every process (web, commands, clusters):
an unlock by `manage.py axes_reset_username` must be audited like one made in admin.
"""
