"""Shared fixtures: personas (viewer, operator, approver) and the system actor."""

from __future__ import annotations

import pytest

from payouts.transitions import Actor
from tests.personas import persona


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("tests")


@pytest.fixture
def viewer(db):  # noqa: ANN001, ANN201
    return persona("viewer")


@pytest.fixture
def operator(db):  # noqa: ANN001, ANN201
    return persona("operator")


@pytest.fixture
def approver(db):  # noqa: ANN001, ANN201
    return persona("approver")
