"""Fixtures of the end-to-end tests: one bootstrapped template database per test module,
one fresh stack (database clone + sandbox + gunicorn) per test, torn down even on failure,
with the subprocesses' logs attached to the report of a failed test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DbServer, Stack, bootstrap_template


@pytest.fixture(scope="session")
def db_server() -> DbServer:
    server = DbServer()
    server.drop_stale()
    return server


@pytest.fixture(scope="module")
def template(db_server: DbServer, request: pytest.FixtureRequest) -> Iterator[str]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]
    name = f"e2e_tpl_{os.getpid()}_{module}"
    bootstrap_template(db_server, name)
    yield name
    db_server.drop(name)


class StackFactory:
    """Builds stacks for one test and closes every one of them afterwards."""

    def __init__(self, server: DbServer, template: str, workdir: Path) -> None:
        self.server = server
        self.template = template
        self.workdir = workdir
        self.stacks: list[Stack] = []

    def __call__(
        self,
        *,
        redis_url: str | None = None,
        web: bool = True,
        requests_logged: bool = False,
        **knobs: Any,
    ) -> Stack:
        workdir = self.workdir / f"stack{len(self.stacks) + 1}"
        workdir.mkdir(parents=True, exist_ok=True)
        # Fast exchanges and reproducible sandbox ids, jitter and faults unless told otherwise.
        knobs = {"step_seconds": "0.3", "seed": "7", **{k: str(v) for k, v in knobs.items()}}
        stack = Stack(
            server=self.server,
            template=self.template,
            workdir=workdir,
            redis_url=redis_url,
            sandbox_knobs=knobs,
            sandbox_requests_logged=requests_logged,
        )
        self.stacks.append(stack)
        return stack.start(web=web)

    def close(self) -> None:
        for stack in self.stacks:
            stack.close()

    def logs(self) -> str:
        return "\n\n".join(stack.logs() for stack in self.stacks)


@pytest.fixture
def make_stack(db_server: DbServer, template: str, tmp_path: Path) -> Iterator[StackFactory]:
    factory = StackFactory(db_server, template, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    return make_stack()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    factory = getattr(item, "funcargs", {}).get("make_stack")
    if isinstance(factory, StackFactory) and factory.stacks:
        # Read now, while the processes still run: teardown removes them.
        report.sections.append(("subprocess logs", factory.logs()))
