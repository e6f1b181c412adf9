"""Shared pieces of the property tests: hypothesis settings, a mock-clock trio run, a task count.

Every property test runs a fixed, derandomized set of examples with no example database, so a
run in CI is repeatable and depends on nothing a previous run saved (hypothesis still keeps
caches in ``.hypothesis/``, which tells git to ignore it).  To search harder locally, multiply
the example counts: ``TRIO_ASGI_WS_PROPERTY_SCALE=20 pytest tests/test_properties_*``.

Trio code runs under ``trio.run`` with a ``MockClock`` that jumps ahead whenever every task is
blocked: timeouts and sleeps cost no wall-clock time, and a deadlock shows up at once as the
run's ``fail_after`` deadline passing instead of as a hung test.  pytest-trio registers trio's
scheduler randomness with hypothesis, so the task interleavings of an example repeat too.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, settings

__all__ = ["live_tasks", "property_settings", "run_on_mock_clock"]

_T = TypeVar("_T")
_SCALE = float(os.environ.get("TRIO_ASGI_WS_PROPERTY_SCALE", "1"))


def property_settings(max_examples: int) -> settings:
    """Settings for one property test: ``max_examples`` (times the scale), repeatable, no deadline."""
    return settings(
        max_examples=max(1, int(max_examples * _SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run_on_mock_clock(async_fn: Callable[[], Awaitable[_T]]) -> _T:
    """``trio.run(async_fn)`` on a clock that skips ahead whenever every task is blocked."""
    return trio.run(async_fn, clock=trio.testing.MockClock(autojump_threshold=0))


def live_tasks() -> int:
    """How many tasks this trio run has right now, the root and system tasks included."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
