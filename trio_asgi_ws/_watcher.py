"""The watcher: one task per trio run that looks at the structured connections, so they need none.

Theory of operation
-------------------
A structured connection (``async with websocket:``, see ``_pump.py``) needs a reader for the
server's ``receive()`` while its handler stays away from ``receive()``: a handler that only sends
must learn that its client left, and a client that floods a handler which stopped reading must be
told (1008).  A handler that keeps sending is caught by its own sends
(``ReceivePump.handler_sent``); for the others, rather than a task and a timer per connection,
each trio run has one watcher: a system task (``trio.lowlevel.spawn_system_task``), kept in a
``trio.lowlevel.RunVar`` so that separate ``trio.run`` calls never share one.  Its task is spawned by
a registration when none runs, and

- **looks** at every registered connection (``Watched.look``) and sleeps until the earliest time
  any of them asks to be looked at again, and at most ``LONGEST_LOOK_INTERVAL`` seconds; a
  registration wakes it at once;
- **ends** as soon as no connection is registered (the last one to leave wakes it), so a run
  with no structured connection has no watcher task, no deadline in trio's timer heap, nothing.

A connection registers when it is accepted.  A look that finds its handler away from
``receive()`` asks for another ``takeover_delay`` seconds later, and if the handler has not been
back in between, the connection starts its reader task in its own block's nursery.  A look that
finds the handler in ``receive()`` (a chat handler waiting for its next message) asks for the
next one ``LOOK_INTERVAL`` (2 s) later, then twice as long each time it finds it there again, up
to ``LONGEST_LOOK_INTERVAL`` (16 s); finding it away starts again from 2 s.  So a handler
leaving ``receive()`` costs its connection a counter increment, no task wakes per message, and a
quiet process wakes its watcher about once every 16 s.  A handler that neither receives nor
sends has a reader within ``LONGEST_LOOK_INTERVAL + takeover_delay`` of leaving ``receive()``
(``LOOK_INTERVAL + takeover_delay`` if it has not been back in ``receive()`` since a look found
it away), and within ``takeover_delay`` of the accept if it never received.

What the period costs (bench/instructions.py, sparse pattern, one connection with a message
every 60 ms, measured here): each timed wake-up about 120,000 instructions, as much as an echoed
message, and a pending deadline in trio's timer heap about 1,000 to 2,000 more per message (every
pass of the run loop checks the heap).  With a look every 2 s that made structured +13,400
instructions per echo over raw against Starlette's +9,900; the backed-off looks leave the heap's
share.  The intervals trade that against how soon an idle handler's client is noticed; a handler
that stops reading soon after a look found it away (the integration tests flood one) is closed
with 1008 within ``LOOK_INTERVAL + takeover_delay``.

Ownership and failure: a connection unregisters when its block ends (cancelled or not) or sees
the client go, so the watcher never holds a finished connection.  ``look`` is plain attribute
work and does not raise; should it ever (a bug), the error is logged on the ``trio_asgi_ws``
logger and that connection dropped, because a system task that raised would crash the whole run
with ``TrioInternalError``.  The watcher's only await is a sleep in a cancel scope, cancelled
when the run ends (system tasks are cancelled after the main task returns).
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import trio

__all__ = ["LONGEST_LOOK_INTERVAL", "LOOK_INTERVAL", "Watched", "Watcher", "watch"]

LOOK_INTERVAL: Final = 2.0
"""Seconds from a look that found a handler away from ``receive()`` (or from the accept) to the
next look at its connection, when nothing asks for one sooner (see above)."""

LONGEST_LOOK_INTERVAL: Final = 16.0
"""The longest time between two looks at a connection: each look that finds its handler in
``receive()`` doubles the interval from ``LOOK_INTERVAL`` up to this (see ``ReceivePump.look``)."""

_logger = logging.getLogger("trio_asgi_ws")


class Watched(Protocol):
    """What the watcher asks of a registered connection (``ReceivePump``)."""

    def look(self, now: float) -> float:
        """Look at the handler; the time it wants its next look (``math.inf``: none in particular).

        May unregister itself.  Must not raise and must not wait: it runs in the watcher's system
        task."""
        ...


class Watcher:
    """The registered connections of one trio run, and the task that looks at them."""

    __slots__ = ("_running", "_sleep", "_watched")

    def __init__(self) -> None:
        self._watched: set[Watched] = set()
        self._running = False
        """Whether the watcher's task runs: from the first registration until none is left."""
        self._sleep: trio.CancelScope | None = None
        """The watcher's sleep until its next look, while it sleeps."""

    def add(self, watched: Watched) -> None:
        """Register ``watched``; the watcher looks at it at its next step (started, or woken)."""
        self._watched.add(watched)
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self.run, name="trio_asgi_ws watcher")
        elif self._sleep is not None:
            self._sleep.cancel()

    def discard(self, watched: Watched) -> None:
        """Unregister ``watched`` (nothing if it is not registered); it is never looked at again.

        The last one to leave wakes the watcher, which then ends.
        """
        self._watched.discard(watched)
        if not self._watched and self._sleep is not None:
            self._sleep.cancel()

    def __len__(self) -> int:
        return len(self._watched)

    async def run(self) -> None:
        """Look, sleep until the next look is due, repeat; end when nothing is registered."""
        clock = trio.lowlevel.current_clock()
        try:
            while self._watched:
                now = clock.current_time()
                next_look = now + LONGEST_LOOK_INTERVAL
                for watched in list(self._watched):  # a look may unregister its connection
                    try:
                        next_look = min(next_look, watched.look(now))
                    except Exception:  # a bug: the run must not die of it (TrioInternalError)
                        self._watched.discard(watched)
                        _logger.exception("watcher: a look failed; the connection is no longer watched")
                with trio.CancelScope(deadline=next_look) as self._sleep:
                    await trio.sleep_forever()
                self._sleep = None
        finally:
            self._running = False
            self._sleep = None


_WATCHER: trio.lowlevel.RunVar[Watcher] = trio.lowlevel.RunVar("trio_asgi_ws.watcher")


def watch(watched: Watched) -> Watcher:
    """Register ``watched`` with this run's watcher (its task starts when it has work)."""
    try:
        watcher = _WATCHER.get()
    except LookupError:
        watcher = Watcher()
        _WATCHER.set(watcher)
    watcher.add(watched)
    return watcher
