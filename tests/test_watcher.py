"""The per-run watcher on its own: when it looks, what it holds, and that it cannot sink the run.

The connections here are scripted ``Watched`` objects that record each look and answer with the
time they want the next one, on a ``MockClock`` moved only by the tests.
"""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from trio_asgi_ws._watcher import _WATCHER, LONGEST_LOOK_INTERVAL, Watcher, watch


class Scripted:
    """A connection that records the times it was looked at and asks for ``wants`` after each."""

    def __init__(self, wants: float = math.inf) -> None:
        self.looks: list[float] = []
        self.wants = wants

    def look(self, now: float) -> float:
        self.looks.append(now)
        return now + self.wants


class Broken:
    def __init__(self) -> None:
        self.looks = 0

    def look(self, now: float) -> float:
        self.looks += 1
        raise ValueError("a bug in a look")


def watcher_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack, count = [root], 0
    while stack:
        task = stack.pop()
        count += task.name == "trio_asgi_ws watcher"
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()


async def settle(clock: trio.testing.MockClock, seconds: float = 0.0) -> None:
    await trio.testing.wait_all_tasks_blocked()
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def test_the_first_registration_spawns_one_watcher_that_looks_at_once(
    clock: trio.testing.MockClock,
) -> None:
    first, second = Scripted(), Scripted()
    watcher = watch(first)
    assert watch(second) is watcher is _WATCHER.get()
    await settle(clock)
    assert first.looks == second.looks == [0.0]


async def test_without_requests_the_looks_come_every_longest_look_interval(
    clock: trio.testing.MockClock,
) -> None:
    watched = Scripted()
    watch(watched)
    await settle(clock)
    await settle(clock, LONGEST_LOOK_INTERVAL * 0.999)
    assert watched.looks == [0.0]
    await settle(clock, LONGEST_LOOK_INTERVAL * 0.001)
    assert watched.looks == [0.0, LONGEST_LOOK_INTERVAL]


async def test_a_registration_wakes_a_sleeping_watcher_at_once(clock: trio.testing.MockClock) -> None:
    first = Scripted()
    watch(first)
    await settle(clock)
    await settle(clock, LONGEST_LOOK_INTERVAL / 2)
    new = Scripted()
    watch(new)
    await settle(clock)
    assert new.looks == [LONGEST_LOOK_INTERVAL / 2]
    assert first.looks == [0.0, LONGEST_LOOK_INTERVAL / 2]  # everyone is looked at when it wakes
    assert trio.lowlevel.current_statistics().seconds_to_next_deadline == pytest.approx(LONGEST_LOOK_INTERVAL)


async def test_the_next_look_is_the_earliest_any_connection_asks_for(clock: trio.testing.MockClock) -> None:
    soon, later, never = Scripted(1.0), Scripted(3.0), Scripted()
    for watched in (soon, later, never):
        watch(watched)
    await settle(clock)
    await settle(clock, 0.999)
    assert len(never.looks) == 1
    await settle(clock, 0.001)
    assert soon.looks == later.looks == never.looks == [0.0, 1.0]  # everyone is looked at


async def test_an_unregistered_connection_is_not_looked_at_and_an_empty_watcher_ends(
    clock: trio.testing.MockClock,
) -> None:
    watched = Scripted(1.0)
    watcher = watch(watched)
    await settle(clock)
    watcher.discard(watched)
    watcher.discard(watched)  # unknown: nothing happens
    assert len(watcher) == 0
    await settle(clock)  # the last one leaving woke it: it ends, leaving no task and no deadline
    assert watcher_tasks() == 0
    assert trio.lowlevel.current_statistics().seconds_to_next_deadline == math.inf
    await settle(clock, 1.0)
    assert watched.looks == [0.0]
    again = Scripted()
    assert watch(again) is watcher  # a new task for the same watcher, looking at once
    await settle(clock)
    assert again.looks == [1.0] and watcher_tasks() == 1


async def test_a_look_that_raises_is_logged_and_dropped_and_the_run_carries_on(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken, healthy = Broken(), Scripted(1.0)
    watcher = watch(broken)
    watch(healthy)
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        await settle(clock)
        await settle(clock, 1.0)
    assert broken.looks == 1 and len(watcher) == 1
    assert healthy.looks == [0.0, 1.0]
    assert [(record.getMessage(), record.exc_info and record.exc_info[0]) for record in caplog.records] == [
        ("watcher: a look failed; the connection is no longer watched", ValueError)
    ]


def test_each_trio_run_has_a_watcher_of_its_own_and_none_outlives_it() -> None:
    watchers: list[Watcher] = []

    async def main() -> None:
        watchers.append(watch(Scripted()))
        await trio.lowlevel.checkpoint()

    trio.run(main)  # returns although a connection is still registered: the system task ends
    trio.run(main)
    assert len(watchers) == 2 and watchers[0] is not watchers[1]
