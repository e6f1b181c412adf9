"""FIFO turns at the server's ``send()``: one task at a time, in arrival order.

This does what ``trio.StrictFIFOLock`` does, for less: measured here, an uncontended
``acquire_nowait()`` + ``release()`` of trio's lock costs about 1.4 µs (each call is wrapped for
KeyboardInterrupt protection and looks up the current task), about half the cost of a whole
``WebSocket.send``, against a flag test and a flag write here.  Contended, the waiters park in a
``trio.lowlevel.ParkingLot`` and the turn is handed to the first of them directly, so a newcomer
can never overtake a waiter.  There is no owner check: only ``WebSocket.send`` uses it, always
in ``try``/``finally``.
"""

from __future__ import annotations

import trio

__all__ = ["SendTurns"]


class SendTurns:
    """``busy`` while a task sends; ``wait()`` queues for the turn, ``done()`` passes it on.

    The parking lot is made by the first task that has to wait: most connections never need one.
    """

    __slots__ = ("_lot", "_waiting", "busy")

    def __init__(self) -> None:
        self.busy = False
        self._waiting = 0
        self._lot: trio.lowlevel.ParkingLot | None = None

    async def wait(self) -> None:
        """Wait until the sending task hands its turn to this one (first come, first served).

        Cancelled while waiting, the task leaves the queue without the turn; once handed the
        turn it returns holding it, even if cancelled meanwhile.
        """
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        self._waiting += 1
        try:
            await self._lot.park()
        finally:
            self._waiting -= 1

    def done(self) -> None:
        """The turn's holder has finished: hand the turn to the first waiter, or free it."""
        if not (self._waiting and self._lot is not None and self._lot.unpark()):
            self.busy = False
