"""The receive pump: keeps ASGI ``receive()`` drained while a structured handler is busy elsewhere.

Theory of operation
-------------------
Only one task may wait in ASGI ``receive()`` at a time; it is the *reader*.  There are two
candidates, the handler (inside ``WebSocket.receive``) and the pump task, and the reader role
moves between them:

* **Handler reads directly (fast path).**  While the handler keeps coming back to ``receive()``,
  it calls the server's ``receive()`` itself (``WebSocket.receive`` checks ``relaying``, then
  calls ``handler_left()`` afterwards).  No extra task switch, no channel hop: the cost per
  message is a few attribute updates.
* **The pump takes over.**  Each time the handler leaves ``receive()`` it *arms* a deadline
  ``takeover_delay`` seconds ahead, unless one is already armed, so a busy handler costs a counter
  increment per message.  When the deadline passes the pump looks: if the handler has stayed away
  from ``receive()`` since the deadline was armed, the pump becomes the reader and moves messages
  into a bounded trio memory channel; if it read meanwhile and left again, the pump re-arms; if it
  is waiting in ``receive()``, the look was wasted, and the pump disarms and doubles the next
  delay (up to ``_MAX_BACKOFF`` times), because a wake-up costs about as much as echoing a
  message, and a busy handler would otherwise pay one every ``takeover_delay``.  So a handler that
  only sends learns of a disconnect within about ``2 * takeover_delay``; one that used to receive
  a lot, within ``2 * _MAX_BACKOFF * takeover_delay`` at worst.
* **The handler takes the role back.**  When the handler calls ``receive()`` while the pump is
  the reader, it first drains what the pump buffered (in order), then cancels the pump's pending
  ``receive()`` and waits for the pump's ``_HANDOVER`` marker, after which it reads directly
  again.

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

On disconnect the pump calls ``on_disconnect`` (which records the code, so sends fail from then
on, and sets the ``disconnected`` event) and queues the disconnect message behind any buffered
data.  Then it ends the handler's block through ``on_gone``: at once if nothing is buffered;
otherwise only when the handler has either read its way to the disconnect message (the
``WebSocket`` ends the block itself then) or stayed away from ``receive()`` for ``linger``
seconds.  So a reading handler, even a slow one, still gets every message the client sent before
it left, and a send-only handler still stops promptly (its next send raises, too).  ``linger`` is
the WebSocket's ``drain_timeout``, a setting of its own (``close_timeout`` bounds the closing
handshake instead).  The pump never calls ``send()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import trio

from ._types import Message, Receive

__all__ = ["ReceivePump"]

_HANDOVER: Final[Message] = {"type": "trio_asgi_ws.handover"}
"""Queued by the pump when it gives the reader role back to a waiting handler."""

# Channel slots beyond ``max_messages``: one for a stale handover marker, one for the disconnect.
_CONTROL_SLOTS: Final = 2
_MAX_BACKOFF: Final = 4


def _payload_size(message: Message) -> int:
    data = message.get("bytes")
    if data is None:
        data = message.get("text")
    return len(data) if data is not None else 0


class ReceivePump:
    """Moves the reader role for one connection between its handler and a background task."""

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
        self._send_channel, self._receive_channel = trio.open_memory_channel[Message](
            max_messages + _CONTROL_SLOTS
        )
        self._queued = 0  # items in the channel, control markers included
        self._queued_messages = 0  # messages from the client in the channel, the disconnect aside
        self._queued_bytes = 0
        # Reader role.
        self.relaying = False
        """True while messages wait in the buffer or the pump is the reader: then the handler
        must call ``receive_relayed()``; else it reads the server's ``receive()`` itself and calls
        ``handler_left()`` afterwards."""
        self._handler_waiting = False
        self._pump_reading = False
        self._read_scope = trio.CancelScope()  # the pump's current read of the server
        # Takeover deadline.
        self._receives = 0
        self._armed = True  # with no deadline: until start(), leaving receive() arms nothing
        self._armed_at_receives = 0
        self._backoff = 1
        self._deadline = math.inf
        self._sleep_scope: trio.CancelScope | None = None

    # -- handler side -----------------------------------------------------------------------

    def start(self) -> None:
        """Begin watching the handler: called once the connection is accepted."""
        self._arm()

    def handler_left(self) -> None:
        """The handler has left ``receive()``: start the takeover clock unless it is running."""
        self._receives += 1
        if not self._armed:
            self._arm()

    async def receive_relayed(self) -> Message:
        """The next message while ``relaying``: buffered ones first, then take the reader back."""
        while True:
            if not self._queued and self._pump_reading:
                self._read_scope.cancel()  # take the role back: the pump queues _HANDOVER
            self._handler_waiting = True
            try:
                message = await self._receive_channel.receive()
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

    def _arm(self) -> None:
        self._armed = True
        self._armed_at_receives = self._receives
        self._set_deadline(trio.current_time() + self._takeover_delay * self._backoff)

    def _disarm(self) -> None:
        self._armed = False
        self._set_deadline(math.inf)

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self._sleep_scope is not None:
            self._sleep_scope.deadline = deadline

    # -- pump side --------------------------------------------------------------------------

    async def run(self) -> None:
        """The pump task: wait until the handler looks away, then read for it."""
        while True:
            await self._wait_for_idle_handler()
            final = await self._read_while_handler_away()
            if final is not None:
                break
        if final["type"] == "websocket.disconnect":
            if self._queued_messages:  # let a reading handler have what the client sent first
                # The handler cannot be waiting in receive() while messages are buffered, so
                # no look is wasted from here on: the delay stays the linger.
                self._takeover_delay, self._backoff = self._linger, 1
                self._arm()
                await self._wait_for_idle_handler()
            self._on_gone()

    async def _wait_for_idle_handler(self) -> None:
        """Sleep until the handler has stayed out of receive() for a whole (backed-off) delay."""
        while True:
            with trio.CancelScope(deadline=self._deadline) as self._sleep_scope:
                await trio.sleep_forever()
            self._sleep_scope = None
            if self._handler_in_receive():
                self._backoff = min(self._backoff * 2, _MAX_BACKOFF)  # a wasted look
                self._disarm()  # it re-arms when it leaves receive()
            elif self._receives != self._armed_at_receives:
                self._arm()  # it read meanwhile: give it a full delay from now
            else:
                self._backoff = 1
                self._disarm()
                return

    async def _read_while_handler_away(self) -> Message | None:
        """Read for the handler; None when it gets the role back, else the message that ended it.

        The handler takes the role back by cancelling the read in progress (there is no other
        checkpoint in this loop); if it is waiting for a message, the pump queues ``_HANDOVER``
        for it.  A message of a type the pump does not expect also gives the role back.
        """
        self._pump_reading = self.relaying = True
        try:
            while True:
                message: Message | None = None
                with trio.CancelScope() as self._read_scope:
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
        if message is not _HANDOVER and message["type"] != "websocket.disconnect":
            self._queued_messages += 1
            self._queued_bytes += _payload_size(message)
        self._queued += 1
        self.relaying = True
        self._send_channel.send_nowait(message)
