"""One leak check for the whole suite: the live trio tasks of the current run, before and after.

::

    async with no_leaked_tasks():            # counts the run's live tasks here...
        ...                                   # ...do something that must clean up after itself
                                              # ...and waits (bounded) until the count is back

Every task of a trio run hangs off ``trio.lowlevel.current_root_task()`` through child
nurseries, so walking that tree finds all of them: the test's own, a server's started in the
same run (``served(app)``), and any a library forgot to end.  A task that outlives the block
it was started for is a leak even if it ends later, so the check is "back to the baseline
within a bounded wait", not "eventually".

Tasks are compared by name, count per name: the block passes when, for every name, no more
tasks run than at the baseline.  Counting by name (not by identity) lets a long-lived task be
replaced by a new one of the same kind (a Redis client reconnecting starts fresh reader tasks),
and it names what leaked: ``hypercorn.trio.task_group._handle x1`` says more than
"one task too many".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import trio
import trio.testing

__all__ = ["TaskCount", "live_tasks", "no_leaked_tasks"]

DEFAULT_WITHIN = 5.0
"""Seconds a block's leftover tasks get to finish (closing handshakes, shielded cleanup)."""

_POLL = 0.01


def _walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _walk(child)


def live_tasks() -> list[trio.lowlevel.Task]:
    """Every task of the current trio run that has not finished, the root task first."""
    root = trio.lowlevel.current_root_task()
    assert root is not None, "live_tasks() must run inside trio.run"
    return list(_walk(root))


class TaskCount:
    """The live tasks of the run at the baseline, counted by name."""

    def __init__(self) -> None:
        self.baseline: Counter[str] = Counter(task.name for task in live_tasks())

    @property
    def total(self) -> int:
        return sum(self.baseline.values())

    def extra(self) -> Counter[str]:
        """The tasks, by name, running now beyond the baseline's count for that name."""
        return Counter(task.name for task in live_tasks()) - self.baseline

    async def wait_for_baseline(self, within: float = DEFAULT_WITHIN) -> None:
        """Return once no name has more live tasks than at the baseline.

        ``AssertionError`` naming the leftover tasks if that takes longer than ``within``
        seconds.  Polls, since no event fires when an unrelated task ends.
        """
        with trio.move_on_after(within):
            while self.extra():  # noqa: ASYNC110  (nothing to wait on: tasks end anywhere)
                await trio.sleep(_POLL)
            return
        leaked = self.extra()
        if leaked:
            listed = ", ".join(f"{name} x{count}" for name, count in sorted(leaked.items()))
            now = len(live_tasks())
            raise AssertionError(
                f"{sum(leaked.values())} task(s) still running {within} s after the block "
                f"({now} live, baseline {self.total}): {listed}"
            )


@asynccontextmanager
async def no_leaked_tasks(within: float = DEFAULT_WITHIN) -> AsyncIterator[TaskCount]:
    """Count the run's live tasks; on leaving, wait until the count is back (``within`` s).

    The baseline is counted once every other task is blocked (bounded by ``within`` too), so
    that work already under way is in it: a server that has just reported it is listening may
    not have started its listener task yet (hypercorn starts it right after).  The check runs
    only when the block ends normally: after an exception the leftover tasks are the
    consequence, not the news.  ``within=math.inf`` leaves the bounds to an enclosing cancel
    scope.
    """
    with trio.move_on_after(within):
        await trio.testing.wait_all_tasks_blocked()
    count = TaskCount()
    yield count
    await count.wait_for_baseline(within)
