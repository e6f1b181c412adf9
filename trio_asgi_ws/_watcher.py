"""The watcher: one task per trio run that looks at the structured connections, so they need none.

Theory of operation
-------------------
A structured connection (``async with websocket:``, see ``_pump.py``) needs a reader for the
server's ``receive()`` while its handler is away from ``receive()``, or a send-only handler would
never learn that its client left.  Rather than a task and a timer per connection, each trio run
has one watcher: a system task (``trio.lowlevel.spawn_system_task``), kept in a
``trio.lowlevel.RunVar`` so that separate ``trio.run`` calls never share one.  It is spawned by
the first ``watch()``, and

- **sleeps without a deadline** (on a ``trio.Event``) while no connection is registered, so a run
  with no structured connection pays nothing;
- otherwise **looks** at every registered connection (``Watched.look``) and sleeps until the
  earliest time any of them asks to be looked at again, and at most ``LOOK_INTERVAL`` seconds.
  A connection whose handler is waiting in ``receive()`` (or is already served by its reader)
  asks for nothing; one whose handler has left ``receive()`` since the last look asks to be
  looked at again ``takeover_delay`` seconds later, and at that look, if the handler has not come
  back meanwhile, the connection starts its reader task in its own block's nursery.

So a handler leaving ``receive()`` costs its connection a counter increment, and no task wakes
per message however sparse the traffic: the watcher wakes every ``LOOK_INTERVAL`` seconds for the
whole process, and ``takeover_delay`` after a look that found some handler away.  A handler that
neither receives nor sends is therefore given a reader within ``LOOK_INTERVAL + takeover_delay``
seconds of leaving ``receive()``; a handler that sends is caught sooner by its own sends
(``ReceivePump.handler_sent``).

Ownership and failure: a connection registers when it is accepted and unregisters when its block
ends (cancelled or not) or no longer needs a reader (the client left, the buffer overflowed), so
the watcher never holds a finished connection.  ``look`` is plain attribute work and does not
raise; should it ever (a bug), the error is logged on the ``trio_asgi_ws`` logger and that
connection dropped from the watch, because a system task that raised would crash the whole run
with ``TrioInternalError``.  The watcher's only awaits are an ``Event.wait`` and a
``trio.sleep_until``, both cancelled when the run ends (system tasks are cancelled after the main
task returns).
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import trio

__all__ = ["LOOK_INTERVAL", "Watched", "Watcher", "watch"]

LOOK_INTERVAL: Final = 10.0
"""Seconds between the watcher's looks while no handler was found away (see the module docstring).

Measured (bench/instructions.py, sparse pattern): a timed wake-up of a trio task costs about
120,000 instructions here, as much as a whole echoed message; at one look per 10 s a connection
that gets a message every 60 ms pays under 1,000 instructions per message for it."""


_logger = logging.getLogger("trio_asgi_ws")


class Watched(Protocol):
    """What the watcher asks of a registered connection (``ReceivePump``)."""

    def look(self, now: float) -> float:
        """Look at the handler; the time it wants its next look (``math.inf``: none in particular).

        Must not raise and must not wait: it runs in the watcher's system task."""
        ...


class Watcher:
    """The registered connections of one trio run, and the task that looks at them."""

    __slots__ = ("_wakeup", "_watched")

    def __init__(self) -> None:
        self._watched: set[Watched] = set()
        self._wakeup = trio.Event()
        """Set while the watcher has connections to look at, or is being woken for the first one."""

    def add(self, watched: Watched) -> None:
        """Register ``watched``; its first look comes within ``LOOK_INTERVAL`` seconds."""
        self._watched.add(watched)
        self._wakeup.set()

    def discard(self, watched: Watched) -> None:
        """Unregister ``watched`` (nothing if it is not registered); it is never looked at again."""
        self._watched.discard(watched)

    def __len__(self) -> int:
        return len(self._watched)

    async def run(self) -> None:
        """Look, sleep until the next look is due, repeat; park while nothing is registered."""
        clock = trio.lowlevel.current_clock()
        while True:
            await self._wakeup.wait()
            now = clock.current_time()
            next_look = now + LOOK_INTERVAL
            for watched in list(self._watched):  # a look may unregister its connection
                try:
                    next_look = min(next_look, watched.look(now))
                except Exception:  # a bug: the run must not die of it (TrioInternalError)
                    self._watched.discard(watched)
                    _logger.exception("watcher: a look failed; the connection is no longer watched")
            if self._watched:
                await trio.sleep_until(next_look)
            else:
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
