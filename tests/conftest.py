"""Unit tests of in-memory code run on trio's autojump clock, so none depends on the machine's speed.

A test module opts in with ``VIRTUAL_TIME = True``: its async tests then run with
``MockClock(autojump_threshold=0)``, which jumps to the next deadline whenever every task is
blocked.  Timeouts, ``takeover_delay`` and ``close_timeout`` become exact steps of virtual time,
and a deadlock fails at once at the test's own ``fail_after`` instead of after seconds.  Modules
that touch real sockets or processes must not opt in (the clock would jump while they wait on I/O).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing


def run_on_virtual_time(
    async_fn: Callable[[], Awaitable[Any]],
    *,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Any:
    """pytest-trio's ``run``: ``trio.run`` on an autojump clock unless the test brings its own."""
    return trio.run(
        async_fn, clock=clock or trio.testing.MockClock(autojump_threshold=0), instruments=instruments
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        function = getattr(item, "function", None)
        if getattr(module, "VIRTUAL_TIME", False) and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.trio(run=run_on_virtual_time))
