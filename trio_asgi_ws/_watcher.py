"""The watcher: one task per trio run that looks at newly accepted structured connections.

Theory of operation
-------------------
A structured connection (``async with websocket:``, see ``_pump.py``) needs a reader for the
server's ``receive()`` while its handler stays away from ``receive()``, or a handler that only
sends would never learn that its client left.  A handler that keeps sending is caught by its own
sends (``ReceivePump.handler_sent``); what is left is the handler that, once accepted, neither
receives nor sends (it awaits something else first).  Rather than a task and a timer per
connection for that, each trio run has one watcher: a system task
(``trio.lowlevel.spawn_system_task``), kept in a ``trio.lowlevel.RunVar`` so that separate
``trio.run`` calls never share one.  It is spawned by the first ``watch()``, and

- **sleeps without a deadline** (on a ``trio.Event``) while no connection is registered, so a run
  with no connection to look at pays nothing, not even a deadline in trio's timer heap;
- otherwise **looks** at every registered connection (``Watched.look``) and sleeps until the
  earliest time any of them asks to be looked at again.

A connection registers when it is accepted.  The watcher looks at once: a handler away from
``receive()`` asks for another look ``takeover_delay`` seconds later, and if it has not been back
in between, the connection starts its reader task in its own block's nursery.  A connection whose
handler is found waiting in ``receive()``, or that has its reader, unregisters: from then on its
handler leaving ``receive()`` costs a counter increment and wakes nothing, however sparse the
traffic.

Why not look at every connection periodically, so that a handler that has received, then stays
away without sending, is caught too?  Measured here (bench/instructions.py, sparse pattern: one
message every 60 ms): a watcher that merely keeps a deadline in trio's timer heap makes every
message about 1,200 instructions dearer (each pass of the run loop checks the heap), and each
timed wake-up costs about 120,000 instructions, as much as an echoed message; a look every 10 s
put the structured mode above Starlette's cost per message, where the issue wants it below.

Ownership and failure: a connection also unregisters when its block ends (cancelled or not) or
sees the client go, so the watcher never holds a finished connection.  ``look`` is plain attribute
work and does not raise; should it ever (a bug), the error is logged on the ``trio_asgi_ws``
logger and that connection dropped, because a system task that raised would crash the whole run
with ``TrioInternalError``.  The watcher's only awaits are an ``Event.wait`` and a
``trio.sleep_until``, both cancelled when the run ends (system tasks are cancelled after the main
task returns).
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import trio

__all__ = ["Watched", "Watcher", "watch"]

_logger = logging.getLogger("trio_asgi_ws")


class Watched(Protocol):
    """What the watcher asks of a registered connection (``ReceivePump``)."""

    def look(self, now: float) -> float:
        """Look at the handler; the time it wants its next look (``math.inf``: none).

        May unregister itself.  Must not raise and must not wait: it runs in the watcher's system
        task."""
        ...


class Watcher:
    """The registered connections of one trio run, and the task that looks at them."""

    __slots__ = ("_sleep", "_wakeup", "_watched")

    def __init__(self) -> None:
        self._watched: set[Watched] = set()
        self._wakeup = trio.Event()
        """Set while the watcher has connections to look at, or is being woken for the first one."""
        self._sleep: trio.CancelScope | None = None
        """The watcher's sleep until its next look, while it sleeps."""

    def add(self, watched: Watched) -> None:
        """Register ``watched`` and wake the watcher, which looks at it at its next step."""
        self._watched.add(watched)
        self._wakeup.set()
        if self._sleep is not None:
            self._sleep.cancel()

    def discard(self, watched: Watched) -> None:
        """Unregister ``watched`` (nothing if it is not registered); it is never looked at again."""
        self._watched.discard(watched)

    def __len__(self) -> int:
        return len(self._watched)

    async def run(self) -> None:
        """Look, sleep until the next look is due, repeat; park while none is due."""
        clock = trio.lowlevel.current_clock()
        while True:
            await self._wakeup.wait()
            now = clock.current_time()
            next_look = math.inf
            for watched in list(self._watched):  # a look may unregister its connection
                try:
                    next_look = min(next_look, watched.look(now))
                except Exception:  # a bug: the run must not die of it (TrioInternalError)
                    self._watched.discard(watched)
                    _logger.exception("watcher: a look failed; the connection is no longer watched")
            if next_look < math.inf:
                with trio.CancelScope(deadline=next_look) as self._sleep:
                    await trio.sleep_forever()
                self._sleep = None
            else:  # nothing registered asks for a look: wait for the next registration
                self._wakeup = trio.Event()


_WATCHER: trio.lowlevel.RunVar[Watcher] = trio.lowlevel.RunVar("trio_asgi_ws.watcher")


def watch(watched: Watched) -> Watcher:
    """Register ``watched`` with this run's watcher, spawning the watcher on first use."""
    try:
        watcher = _WATCHER.get()
    except LookupError:
        watcher = Watcher()
        _WATCHER.set(watcher)
        trio.lowlevel.spawn_system_task(watcher.run, name="trio_asgi_ws watcher")
    watcher.add(watched)
    return watcher
