"""Personas: the people of STORIES.md, as users in their role groups."""

from __future__ import annotations

from django.contrib.auth.models import Group, User

from backoffice.services import roles_setup

PASSWORD = "correct-horse-battery-staple"


def persona(role: str) -> User:
    """A staff user in `finance_<role>` (viewer, operator, approver)."""
    roles_setup()
    user = User.objects.create_user(
        username=f"{role}-user", password=PASSWORD, is_staff=True, email=f"{role}@example.com"
    )
    user.groups.add(Group.objects.get(name=f"finance_{role}"))
    return user
