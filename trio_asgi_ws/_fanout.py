"""How the hub gets one message to many sockets without a task switch per socket.

``Broadcast.forward`` ties a subscription to its socket with a ``SocketLink``.  The link's
forward task only sends what had to be buffered; while its buffer is empty it waits, *idle*, and
the hub delivers to the socket itself, one of two ways:

- **Direct** (the socket's scope offers ``trio_asgi_ws.direct_send``: served by this library's
  ``serve()`` over HTTP/1.1 without TLS or compression): the hub encodes the frame once per
  message and writes it to each idle socket with one non-blocking system call, in the
  publishing task.  A socket that cannot take the whole frame at once keeps its tail (see
  ``_direct_send``), and the link wakes its forward task to flush it.
- **Inline** (any other ASGI server): the hub's ``InlineSender`` task awaits each idle socket's
  ``send()`` in turn, as a hand-written ``for ws in sockets: await ws.send(...)`` loop would, at
  the same cost.  A send that makes no progress for ``STALL_AFTER`` seconds is *found to block*:
  its socket stops being idle, and a fresh sender task carries on with the other sockets and the
  next messages, while the stuck one ends as soon as its send returns.  So a stalled client
  delays the others once, by at most ``2 * STALL_AFTER``, and never again until its forward
  task has caught up.

Whenever the hub cannot deliver directly (the link is not idle, a direct write is refused, or a
stuck socket was handed off), the message goes to the subscription's bounded buffer under its
overflow policy, exactly as for any subscriber, and the forward task sends it; it makes the link
idle again only once that buffer is empty.  That is what keeps each socket's messages in order:
the hub delivers directly only when nothing of that socket's is waiting anywhere else.

Counters keep their meaning: a direct or inline delivery counts as ``delivered``; nothing is
buffered for it.  ``block`` subscriptions are never sent to inline (their wait would stall every
topic's sender), only directly.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from ._direct_send import EXTENSION, PARTIAL, DirectSend
from .backends.base import BroadcastMessage

if TYPE_CHECKING:
    from .broadcast import Subscription
    from .websockets import WebSocket

__all__ = ["STALL_AFTER", "InlineSender", "SocketLink"]

STALL_AFTER: Final = 0.02
"""Seconds an inline send may go without progress before its socket is handed to its own task."""

_STILL_STUCK_PASSES: Final = 4
"""Scheduler passes an inline send gets, after ``STALL_AFTER``, to show it is not blocked."""

_QUEUE: Final = 64
"""Messages waiting for the inline sender before publishers wait for it."""

_Batch = tuple[BroadcastMessage, list["Subscription"]]


class SocketLink:
    """One ``forward``'s socket, as the hub sees it on every delivery."""

    __slots__ = ("_wake", "direct", "idle", "routed", "stuck", "websocket")

    def __init__(self, websocket: WebSocket, *, may_send_inline: bool) -> None:
        extension = websocket.scope.get("extensions", {}).get(EXTENSION)
        self.websocket = websocket
        self.direct = extension if isinstance(extension, DirectSend) and extension.usable else None
        """The socket's direct writer, when its server offers a usable one."""
        self.routed = self.direct is None and may_send_inline
        """Whether the hub's ``InlineSender`` delivers to this socket."""
        self.idle = False
        """True while the forward task waits with an empty buffer: the hub may deliver itself."""
        self.stuck: trio.Event | None = None
        """Set when an inline send found to block returns; until then the forward task waits."""
        self._wake = trio.CancelScope()

    def write(self, frame: bytes) -> bool:
        """Deliver ``frame`` directly if idle; False (and no longer idle) if it must be buffered."""
        assert self.direct is not None
        if self.idle:
            written = self.direct.write(frame)
            if written:
                if written == PARTIAL:  # the forward task flushes the tail; the next ones wait
                    self.idle = False
                    self._wake.cancel()
                return True
        self.idle = False
        return False

    async def run(self, subscription: Subscription) -> None:
        """Forward's loop: send what is buffered, flush tails, wait idle in between.

        Ends with the exception that ends the subscription (``trio.EndOfChannel``,
        ``SubscriberTooSlow``) or the socket's send (``WebSocketDisconnect``, ...).  Cancelled,
        it stops being idle at once, so the hub never writes to it again.
        """
        direct, websocket = self.direct, self.websocket
        while True:
            if self.stuck is not None:  # the hub's send to this socket blocked: it goes first
                await self.stuck.wait()
                self.stuck = None
            if direct is not None and direct.pending:
                await direct.flush()
            try:
                message = subscription.receive_nowait()
            except trio.WouldBlock:
                waited = await self._wait_idle(subscription)
                if waited is None:
                    continue  # woken to flush a tail
                message = waited
            await websocket.send(message.asgi)

    async def _wait_idle(self, subscription: Subscription) -> BroadcastMessage | None:
        """Wait for a buffered message while the hub delivers; None when woken (to flush a tail,
        or because the hub's send to the socket blocked)."""
        with trio.CancelScope() as self._wake:
            self.idle = True
            try:
                return await subscription.receive()
            finally:
                self.idle = False
        return None


class InlineSender:
    """The hub's sender for sockets without direct writes (see the module docstring).

    ``run`` is the hub's task; ``put`` queues a message with the routed subscriptions it is for,
    waiting only while ``_QUEUE`` messages are already queued (the sender is behind on CPU,
    not on any one client).  Cancelled (the hub closing), it stops at once, cancelling a send in
    progress (which counts as delivered, as a cancelled ``WebSocket.send`` counts as sent;
    hypercorn's own send cannot be cancelled and completes); ``drain`` first buffers whatever it
    had not sent yet, so nothing else published before the close is lost.
    """

    def __init__(self) -> None:
        # Not a memory channel: an item handed straight to a waiting receiver is in neither the
        # channel nor the sender's hands until it runs, and drain() must find every message.
        self._queue: deque[_Batch] = deque()
        self._room = trio.lowlevel.ParkingLot()  # publishers waiting for the queue to shrink
        self._work = trio.lowlevel.ParkingLot()  # the sender waiting for the queue to fill
        self._nursery: trio.Nursery | None = None
        self._generation = 0  # the live sender's; a stuck one finds it changed and ends
        self._sends = 0  # inline sends started: the watchdog's measure of progress
        self._sending: SocketLink | None = None  # the link whose send is in progress
        self._batch: _Batch | None = None  # the batch being sent, and where a sender taking
        self._next = 0  # over would carry on in it
        self._watch = trio.Event()  # set while the watchdog has sends to watch
        self._watching = False  # whether it is set (cheaper to test per send)

    async def put(self, message: BroadcastMessage, subscriptions: list[Subscription]) -> None:
        """Queue a message for the sender, waiting while ``_QUEUE`` are queued (cancellable:
        cancelled while it waits, nothing was queued)."""
        while len(self._queue) >= _QUEUE:
            await self._room.park()
        self._queue.append((message, subscriptions))
        self._work.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watchdog, name="trio_asgi_ws hub watchdog")
            nursery.start_soon(self._send_loop, 0, None, 0, name="trio_asgi_ws hub sender")
            task_status.started()

    def drain(self) -> None:
        """Buffer every queued message, and the rest of the one being sent, then stop sending."""
        self._generation += 1  # the live sender ends after its current send
        pending = []
        if self._batch is not None:  # being sent, or handed to a sender not yet started
            message, subscriptions = self._batch
            pending.append((message, subscriptions[self._next :]))
        self._sending = self._batch = None
        pending.extend(self._queue)
        self._queue.clear()
        self._room.unpark_all()
        for message, subscriptions in pending:
            for subscription in subscriptions:
                subscription._offer(message)

    async def _send_loop(self, generation: int, batch: _Batch | None, start: int) -> None:
        """Send each batch to its idle sockets in order; ends when handed off while stuck."""
        while True:
            if batch is None:
                while not self._queue:
                    await self._work.park()
                batch, start = self._queue.popleft(), 0
                self._room.unpark()
            self._batch = batch
            message, subscriptions = batch
            asgi = message.asgi
            for index in range(start, len(subscriptions)):
                if generation != self._generation:
                    return  # drained before this sender started: the rest is buffered
                subscription = subscriptions[index]
                link = subscription._link
                if link is None or not link.idle:
                    subscription._offer(message)
                    continue
                self._sends += 1
                self._sending, self._next = link, index + 1
                if not self._watching:
                    self._watching = True
                    self._watch.set()
                try:
                    await link.websocket.send(asgi)
                except Exception:  # its forward task sends it again, and meets the error itself
                    link.idle = False
                    subscription._offer(message)
                except BaseException:  # the hub closing: as for send(), handed over counts as sent
                    subscription.delivered += 1
                    raise
                else:
                    subscription.delivered += 1
                finally:
                    if generation != self._generation and link.stuck is not None:
                        link.stuck.set()  # handed off while stuck: its forward task carries on
                if generation != self._generation:  # handed off while stuck (or drained)
                    return
            batch = self._sending = self._batch = None

    async def _watchdog(self) -> None:
        while True:
            await self._watch.wait()
            seen = self._sends
            await trio.sleep(STALL_AFTER)
            if self._sending is not None and self._sends == seen and await self._still_stuck(seen):
                self._hand_off(self._sending)
            if self._sending is None:
                self._watch, self._watching = trio.Event(), False

    async def _still_stuck(self, seen: int) -> bool:
        """Whether the send in progress stays put while the scheduler runs a few more batches.

        The timer alone is not enough: when the whole process was off the CPU (a busy machine),
        the watchdog can wake before the sender had any chance to move.  A send that is not
        blocked completes within a couple of scheduler passes (hypercorn's takes two).
        """
        for _ in range(_STILL_STUCK_PASSES):
            await trio.lowlevel.cancel_shielded_checkpoint()
            if self._sends != seen or self._sending is None:
                return False
        return True

    def _hand_off(self, stuck: SocketLink) -> None:
        """The send to ``stuck`` is blocked: carry on without it in a new sender task."""
        assert self._nursery is not None and self._batch is not None
        stuck.idle = False  # from now on its forward task sends its messages, after this one
        stuck.stuck = trio.Event()
        stuck._wake.cancel()
        self._generation += 1
        self._nursery.start_soon(
            self._send_loop, self._generation, self._batch, self._next, name="trio_asgi_ws hub sender"
        )
        self._sending = None  # _batch and _next stay: drain() buffers them if it runs first
