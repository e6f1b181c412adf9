"""The receive pump: keeps ASGI ``receive()`` drained while a structured handler is busy elsewhere.

Theory of operation
-------------------
Only one task may wait in ASGI ``receive()`` at a time; it is the *reader*.  There are two
candidates, the handler (inside ``WebSocket.receive``) and the pump's reader task, and the reader
role moves between them:

* **Handler reads directly (fast path).**  While the handler keeps coming back to ``receive()``,
  it calls the server's ``receive()`` itself (``WebSocket.receive`` checks ``relaying``, then
  counts ``departures`` afterwards).  No extra task, no timer, no channel hop: leaving
  ``receive()`` costs a counter increment, whatever the traffic, busy or sparse.
* **The pump takes over.**  The reader task exists only while the pump is the reader.  It is
  started in the connection's block nursery, either
  - by the handler's own sends: its first send after leaving ``receive()`` costs a counter
    comparison (``WebSocket.send`` sets ``departure_sent`` to ``departures``); a later one calls
    ``handler_sent``, the second notes the time, and the first send at least ``takeover_delay``
    after that one makes the pump the reader; or
  - by the run's *watcher* (``_watcher.py``, one system task per trio run), which looks at every
    accepted connection when it is accepted: a handler found away from ``receive()`` is looked
    at again ``takeover_delay`` later, and if it has not been back in between, the pump becomes
    the reader; a handler found in ``receive()`` is looked at again ``LOOK_INTERVAL`` (2) seconds
    later, then twice as long each time it is found there again, up to ``LONGEST_LOOK_INTERVAL``
    (16) seconds (``look``).
  The reader moves messages into a bounded trio memory channel (created at the first takeover).
  So **a handler that sends** at least every ``s`` seconds without receiving has a reader within
  ``takeover_delay + 2 * s`` of leaving ``receive()`` (or of the accept); **any handler** within
  ``LONGEST_LOOK_INTERVAL + takeover_delay`` (16.05 s by default) of leaving ``receive()``
  (``LOOK_INTERVAL + takeover_delay`` if a look found it away within the last 2 s), and within
  ``takeover_delay`` of the accept if it never received.  From then on it learns of a
  disconnect, or of a flood (1008, below), as soon as the server delivers it.
* **The handler takes the role back.**  When the handler calls ``receive()`` while the pump is
  the reader, it first drains what the pump buffered (in order), then cancels the reader's
  pending ``receive()`` and waits for the reader's ``_HANDOVER`` marker, after which it reads
  directly again, and the reader task ends.

What this assumes of the server: **cancelling a pending ``receive()`` loses no message.**  That
holds for a ``receive`` that waits on a trio memory channel (hypercorn's trio worker, the test
client, ``tests/driver.py``): a cancelled ``MemoryReceiveChannel.receive()`` takes nothing out of
the channel.  On a server whose ``receive()`` can take a message off its queue and then be
cancelled before returning it (a hand-written ``receive`` that awaits something after dequeuing),
the message being read at the moment of a hand-back would be lost, once per hand-back.  Such a
server can still be used safely in plain mode, or with a ``takeover_delay`` longer than the
handler's pauses (the pump then never takes the role).  The pump cancels the server's
``receive()`` only there, when the handler asks for the reader role back.

Bounds: the pump buffers at most ``max_messages`` messages from the client and ``max_bytes`` of
payload (a single message larger than ``max_bytes`` is still accepted into an empty buffer).  When
a message arrives that does not fit, the pump stops reading and reports *overflow*; the WebSocket
then closes the connection with 1008 (policy violation) so the client learns its messages were
not processed.  Nothing is dropped silently and memory stays bounded; the pump never blocks on a
full buffer, so a client that floods and then leaves can never leave a send-only handler hanging.
A message of a type the pump does not expect (a misbehaving server's second
``websocket.connect``) is queued like data and the pump gives up the reader role at once: the
handler's ``receive()`` raises ``RuntimeError`` for it, as in plain mode.  The channel holds two
control slots beyond ``max_messages``: the disconnect and a stale hand-over marker.

On disconnect the reader calls ``on_disconnect`` (which records the code, so sends fail from
then on, and sets the ``disconnected`` event) and queues the disconnect message behind any
buffered data; no reader is started again.  Then it ends the handler's block through
``on_gone``: at once if nothing is buffered; otherwise only when the handler has either read its
way to the disconnect message (the ``WebSocket`` ends the block itself then) or been found away
from ``receive()``, with no read since the previous look, at a look every ``linger`` seconds.
So a reading handler, even a slow one, still gets every message the client sent before it left,
and a send-only handler still stops promptly (its next send raises, too).  ``linger`` is the
WebSocket's ``drain_timeout``, a setting of its own (``close_timeout`` bounds the closing
handshake instead).  The pump never calls ``send()``.

Cancellation: the reader task lives in the block's nursery, so the block's end (or its
cancellation) cancels it; ``stop()`` unregisters the connection from the watcher first, and no
reader is started after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import trio

from ._counters import ConnectionTally
from ._types import Message, Receive
from ._watcher import LONGEST_LOOK_INTERVAL, LOOK_INTERVAL, Watcher, watch

__all__ = ["ReceivePump"]

_HANDOVER: Final[Message] = {"type": "trio_asgi_ws.handover"}
"""Queued by the pump when it gives the reader role back to a waiting handler."""

# Channel slots beyond ``max_messages``: one for a stale handover marker, one for the disconnect.
_CONTROL_SLOTS: Final = 2


def _payload_size(message: Message) -> int:
    data = message.get("bytes")
    if data is None:
        data = message.get("text")
    return len(data) if data is not None else 0


class ReceivePump:
    """Moves the reader role for one connection between its handler and a reader task."""

    __slots__ = (
        "_channel",
        "_handler_in_receive",
        "_handler_waiting",
        "_linger",
        "_live",
        "_look_interval",
        "_looked_at",
        "_looked_at_departure",
        "_max_bytes",
        "_max_messages",
        "_next_look",
        "_nursery",
        "_on_disconnect",
        "_on_gone",
        "_on_overflow",
        "_path",
        "_pump_reading",
        "_queued",
        "_queued_bytes",
        "_queued_messages",
        "_read_scope",
        "_receive",
        "_sending_since",
        "_takeover_delay",
        "_tally",
        "_timed_departure",
        "_watcher",
        "departure_sent",
        "departures",
        "relaying",
    )

    def __init__(
        self,
        receive: Receive,
        *,
        handler_in_receive: Callable[[], bool],
        on_disconnect: Callable[[Message], None],
        on_gone: Callable[[], None],
        on_overflow: Callable[[], None],
        max_messages: int,
        max_bytes: int,
        takeover_delay: float,
        linger: float,
        tally: ConnectionTally | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes!r}")
        if not takeover_delay >= 0:
            raise ValueError(f"takeover_delay must be >= 0 seconds, got {takeover_delay!r}")
        self._receive = receive
        self._handler_in_receive = handler_in_receive
        self._on_disconnect = on_disconnect
        self._on_gone = on_gone
        self._on_overflow = on_overflow
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._takeover_delay = takeover_delay
        self._linger = linger
        self._tally = tally  # counts takeovers when the server counts (``_counters``)
        self._channel: tuple[trio.MemorySendChannel[Message], trio.MemoryReceiveChannel[Message]] | None
        self._channel = None  # opened at the first takeover
        self._queued = 0  # items in the channel, control markers included
        self._queued_messages = 0  # messages from the client in the channel, the disconnect aside
        self._queued_bytes = 0
        # Reader role.
        self.relaying = False
        """True while messages wait in the buffer or the pump is the reader: then the handler
        must call ``receive_relayed()``; else it reads the server's ``receive()`` itself and counts
        ``departures`` afterwards."""
        self._handler_waiting = False
        self._pump_reading = False
        self._read_scope: trio.CancelScope | None = None  # the reader's current read of the server
        # Takeover: the handler's departures from receive(), as the watcher and the sends saw them.
        self.departures = 0
        """How many times the handler has left ``receive()`` (``WebSocket.receive`` counts them)."""
        self.departure_sent = -1
        """``departures`` at the handler's last send (``WebSocket.send`` keeps it)."""
        self._looked_at_departure = -1
        self._looked_at = 0.0
        self._next_look = -math.inf  # before it, a look is not due (the watcher woke for another)
        self._look_interval = LOOK_INTERVAL  # to the next look, while the handler is in receive()
        self._timed_departure = -1  # the departure whose sends handler_sent() is timing
        self._sending_since = 0.0
        # The block's nursery from attach(); live, and watched, from start() to stop().
        self._nursery: trio.Nursery | None = None
        self._path: object = None
        self._live = False
        self._watcher: Watcher | None = None

    # -- the block ----------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery, path: object) -> None:
        """The block's nursery, where reader tasks (named after the scope's ``path``) will run."""
        self._nursery = nursery
        self._path = path

    def start(self) -> None:
        """The connection is accepted: from now on the pump may read, and the watcher looks."""
        if self._nursery is not None and not self._live:
            self._live = True
            self._watcher = watch(self)

    def stop(self) -> None:
        """Start no reader from now on (a running one carries on), and leave the watcher."""
        self._live = False
        self._nursery = None
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.discard(self)
            self._watcher = None

    # -- handler side -----------------------------------------------------------------------

    def handler_sent(self) -> None:
        """The handler sends again without having been back in ``receive()``: take over in time.

        Called by ``WebSocket.send`` for every send but the first since the handler last left
        ``receive()`` (that one it only notes in ``departure_sent``, so a handler that answers
        each message once never gets here): the second notes the time; the first one at least
        ``takeover_delay`` after it starts the reader.
        """
        if self._live and not self.relaying:
            now = trio.current_time()
            if self.departure_sent != self._timed_departure:
                self._timed_departure = self.departure_sent
                self._sending_since = now
            elif now >= self._sending_since + self._takeover_delay:
                self._take_over()

    async def receive_relayed(self) -> Message:
        """The next message while ``relaying``: buffered ones first, then take the reader back."""
        channel = self._channel
        assert channel is not None  # relaying: a takeover opened it
        while True:
            if not self._queued and self._pump_reading:
                assert self._read_scope is not None  # the reader reads
                self._read_scope.cancel()  # take the role back: the reader queues _HANDOVER
            self._handler_waiting = True
            try:
                message = await channel[1].receive()
            finally:
                self._handler_waiting = False
            self._queued -= 1
            self._update_relaying()
            if message is not _HANDOVER:
                if message["type"] != "websocket.disconnect":
                    self._queued_messages -= 1
                    self._queued_bytes -= _payload_size(message)
                return message
            if not self.relaying:
                return await self._receive()

    def _update_relaying(self) -> None:
        self.relaying = bool(self._queued or self._pump_reading)

    # -- the watcher's side -----------------------------------------------------------------

    def look(self, now: float) -> float:
        """The watcher's look: take over if the handler stayed away since the previous one.

        Returns when the next look is wanted: ``takeover_delay`` after the look that found the
        handler newly away; ``LOOK_INTERVAL`` later when the pump reads for it (it may take the
        role back and go away again); while it is in ``receive()``, ``LOOK_INTERVAL`` later,
        doubling at each look that finds it there again up to ``LONGEST_LOOK_INTERVAL``.  A look
        before the time this one asked for (the watcher woke for another connection) changes
        nothing.
        """
        if now < self._next_look:
            return self._next_look
        if self.relaying:  # the pump reads: look again as after a look that found it away
            self._look_interval = LOOK_INTERVAL
            self._next_look = now + LOOK_INTERVAL
            return self._next_look
        if self._handler_in_receive():
            self._next_look = now + self._look_interval
            self._look_interval = min(self._look_interval * 2, LONGEST_LOOK_INTERVAL)
            return self._next_look
        self._look_interval = LOOK_INTERVAL
        if self._looked_at_departure != self.departures:
            self._looked_at_departure = self.departures
            self._looked_at = now
        elif now >= self._looked_at + self._takeover_delay:
            self._take_over()
            self._next_look = now + LOOK_INTERVAL
            return self._next_look
        self._next_look = self._looked_at + self._takeover_delay
        return self._next_look

    def _take_over(self) -> None:
        """Become the reader: start a reader task in the block's nursery."""
        nursery = self._nursery
        assert nursery is not None  # only called while live
        if self._channel is None:
            self._channel = trio.open_memory_channel[Message](self._max_messages + _CONTROL_SLOTS)
        self._read_scope = trio.CancelScope()
        self._pump_reading = self.relaying = True
        if self._tally is not None:
            self._tally.pump_takeovers += 1
        nursery.start_soon(self._read, name=f"trio_asgi_ws pump {self._path}")

    # -- the reader task --------------------------------------------------------------------

    async def _read(self) -> None:
        """Read for the handler until it takes the role back, or the client leaves or overflows."""
        final = await self._read_while_handler_away()
        if final is None:
            return
        self.stop()  # the client has gone or was too fast: nothing more is read
        if final["type"] == "websocket.disconnect":
            if self._queued_messages:  # let a reading handler have what the client sent first
                while True:
                    departures = self.departures
                    await trio.sleep(self._linger)
                    if departures == self.departures and not self._handler_in_receive():
                        break
            self._on_gone()

    async def _read_while_handler_away(self) -> Message | None:
        """Read for the handler; None when it gets the role back, else the message that ended it.

        The handler takes the role back by cancelling the read in progress (there is no other
        checkpoint in this loop); if it is waiting for a message, the reader queues ``_HANDOVER``
        for it.  A message of a type the pump does not expect also gives the role back.
        """
        try:
            while True:
                message: Message | None = None
                assert self._read_scope is not None  # set before each read
                with self._read_scope:
                    message = await self._receive()
                if message is None:  # the handler cancelled our read to take the role back
                    if self._handler_waiting:
                        self._enqueue(_HANDOVER)
                    return None
                kind = message["type"]
                if kind == "websocket.disconnect":
                    self._on_disconnect(message)
                    self._enqueue(message)
                    return message
                if not self._fits(message):
                    self._on_overflow()
                    return message
                self._enqueue(message)
                if kind != "websocket.receive":  # not ours to judge: the handler's receive() raises
                    return None
                self._read_scope = trio.CancelScope()
        finally:
            self._pump_reading = False
            self._update_relaying()

    def _fits(self, message: Message) -> bool:
        """Whether one more message from the client fits the buffer's bounds."""
        queued = self._queued_messages
        return queued < self._max_messages and (
            not queued or self._queued_bytes + _payload_size(message) <= self._max_bytes
        )

    def _enqueue(self, message: Message) -> None:
        channel = self._channel
        assert channel is not None  # the reader runs: a takeover opened it
        if message is not _HANDOVER and message["type"] != "websocket.disconnect":
            self._queued_messages += 1
            self._queued_bytes += _payload_size(message)
        self._queued += 1
        self.relaying = True
        channel[0].send_nowait(message)
