"""Nursery-scoped broadcast: publish once, deliver to every subscriber of a topic.

::

    async with open_broadcast("memory://") as hub:          # e.g. in the app's lifespan
        async with hub.subscribe("prices", max_buffer=100, overflow="drop_oldest") as sub:
            async for message in sub:                        # message.data: str or bytes
                ...
        await hub.publish("prices", {"AAPL": 123.4})         # str, bytes or JSON-able

**Publishing never waits for a subscriber** (except under ``block``): each subscription has its
own bounded trio memory channel, fed with ``send_nowait``.  When a subscriber's buffer is full its
*overflow policy* decides:

- ``drop_oldest``: the oldest buffered message is dropped to make room (live data: prices, cursors);
- ``drop_newest``: the new message is dropped (keep what the subscriber already has);
- ``close``: the subscription ends; its iteration raises ``SubscriberTooSlow`` once the buffered
  messages are read, and a socket attached with ``forward`` is closed with 1013 Try Again Later;
- ``block``: ``publish`` waits until there is room.  Lossless, for in-process pipelines only: one
  slow subscriber stalls the publisher and, through it, every other subscriber of the topic.

Every subscription counts ``delivered``, ``dropped``, ``buffered`` (in use) and ``peak_buffered``.
Subscribers that drop nothing see each topic's messages in publication order.  A message is
encoded once per publish (JSON included), not once per subscriber, and ``forward`` sends that one
prepared ASGI message to each socket.

Backends: ``memory://`` (this process) and ``redis://host:port/db`` (every process sharing that
Redis, see ``trio_asgi_ws.backends.redis``).  With Redis, local subscribers receive what this
process publishes by way of Redis, like everyone else's, so order is Redis's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio

from ._groups import open_owned_nursery
from ._types import Message
from .websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = [
    "Broadcast",
    "BroadcastMessage",
    "Overflow",
    "SubscriberTooSlow",
    "Subscription",
    "open_broadcast",
]

Overflow = Literal["drop_oldest", "drop_newest", "close", "block"]
_POLICIES = ("drop_oldest", "drop_newest", "close", "block")
TRY_AGAIN_LATER = 1013


class SubscriberTooSlow(Exception):
    """A ``close``-policy subscription overflowed: its consumer did not keep up."""


@dataclass(frozen=True)
class BroadcastMessage:
    """One published message, encoded once: ``data`` is ``str`` (text) or ``bytes`` (binary)."""

    topic: str
    data: str | bytes
    asgi: Message = field(repr=False, compare=False)
    """The ``websocket.send`` message that carries ``data``, shared by every socket it goes to."""

    @classmethod
    def encode(cls, topic: str, message: Any) -> BroadcastMessage:
        """Text for ``str``, binary for bytes-like, compact non-ASCII-escaped JSON text otherwise."""
        if isinstance(message, str):
            return cls(topic, message, {"type": "websocket.send", "text": message})
        if isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            return cls(topic, data, {"type": "websocket.send", "bytes": data})
        try:
            text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"cannot publish {type(message).__name__}: not str, bytes or JSON-able"
            ) from error
        return cls(topic, text, {"type": "websocket.send", "text": text})

    def json(self) -> Any:
        """Decode ``data`` as JSON."""
        return json.loads(self.data)


class Subscription:
    """One subscriber's bounded buffer on one topic; iterate it with ``async for``.

    Use it as ``async with hub.subscribe(...) as sub``: leaving the block unsubscribes.  Iteration
    ends quietly when the hub closes, and raises ``SubscriberTooSlow`` after a ``close``-policy
    overflow (once the buffered messages have been read).  Cancelling an iteration loses nothing.
    """

    def __init__(self, hub: Broadcast, topic: str, max_buffer: int, overflow: Overflow) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(_POLICIES)}; got {overflow!r}")
        if not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be a positive int, got {max_buffer!r}")
        self.topic = topic
        self.max_buffer = max_buffer
        self.overflow: Overflow = overflow
        self._hub = hub
        self._send, self._receive = trio.open_memory_channel[BroadcastMessage](max_buffer)
        self.delivered = 0
        self.dropped = 0
        self.buffered = 0
        self.peak_buffered = 0
        self.too_slow = False

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.topic!r} {self.overflow} delivered={self.delivered} "
            f"dropped={self.dropped} buffered={self.buffered}/{self.max_buffer}>"
        )

    async def __aenter__(self) -> Subscription:
        self._hub._add(self)
        await self._hub._backend.subscribed(self.topic)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end()
        with trio.CancelScope(shield=True):
            await self._hub._backend.unsubscribed(self.topic)

    def _end(self) -> None:
        self._hub._remove(self)
        self._send.close()

    # -- the publisher's side ------------------------------------------------------------------

    def _offer(self, message: BroadcastMessage) -> None:
        """Buffer ``message`` without waiting, applying the overflow policy when full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if self.overflow == "drop_oldest":
                self._receive.receive_nowait()
                self._send.send_nowait(message)
            elif self.overflow == "close":
                self.too_slow = True
                self._end()
                return
            self.dropped += 1
            return
        except trio.ClosedResourceError:
            return  # ended meanwhile
        self._count_buffered()

    async def _offer_blocking(self, message: BroadcastMessage) -> None:
        try:
            await self._send.send(message)
        except trio.ClosedResourceError:
            return
        self._count_buffered()

    def _count_buffered(self) -> None:
        self.buffered += 1
        self.peak_buffered = max(self.peak_buffered, self.buffered)

    # -- the subscriber's side -----------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BroadcastMessage:
        try:
            message = await self._receive.receive()
        except trio.EndOfChannel:
            if self.too_slow:
                raise SubscriberTooSlow(
                    f"subscriber to {self.topic!r} fell {self.max_buffer} messages behind"
                ) from None
            raise StopAsyncIteration from None
        return self._count_delivered(message)

    async def receive(self) -> BroadcastMessage:
        """The next message; raises ``StopAsyncIteration`` when the subscription has ended."""
        return await self.__anext__()

    def receive_nowait(self) -> BroadcastMessage:
        """The next buffered message; ``trio.WouldBlock`` if there is none yet."""
        try:
            message = self._receive.receive_nowait()
        except trio.EndOfChannel:
            raise trio.WouldBlock from None  # the ending surfaces through receive()/iteration
        return self._count_delivered(message)

    def _count_delivered(self, message: BroadcastMessage) -> BroadcastMessage:
        self.buffered -= 1
        self.delivered += 1
        return message


class Backend(Protocol):
    """Carries published messages to every hub on the same channel (process, Redis, ...)."""

    async def run(
        self, deliver: Callable[[BroadcastMessage], Awaitable[None]], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run for the hub's lifetime, calling ``deliver`` for each message that arrives."""

    async def publish(self, message: BroadcastMessage) -> None: ...

    async def subscribed(self, topic: str) -> None: ...

    async def unsubscribed(self, topic: str) -> None: ...

    async def status_changed(self) -> None:
        """Return at the next change of ``status``."""

    @property
    def status(self) -> str: ...


class Broadcast:
    """A hub of topics; create it with ``open_broadcast(url)`` (see the module docstring)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._topics: dict[str, set[Subscription]] = {}
        self._closed = False

    @property
    def status(self) -> str:
        """The backend's health: ``"connected"``, or e.g. ``"reconnecting"`` during a Redis outage."""
        return self._backend.status

    async def wait_for_status(self, status: str) -> None:
        """Wait until ``status`` is ``status`` (e.g. ``"connected"`` again after an outage)."""
        while self._backend.status != status:
            await self._backend.status_changed()

    @property
    def lost(self) -> int:
        """Messages published while the backend was unreachable, and so lost (at most once)."""
        return int(getattr(self._backend, "lost", 0))

    def subscribe(
        self, topic: str, *, max_buffer: int = 64, overflow: Overflow = "drop_oldest"
    ) -> Subscription:
        """A subscription to ``topic``, live from its ``async with`` entry to its exit."""
        if self._closed:
            raise RuntimeError("this broadcast hub is closed")
        return Subscription(self, topic, max_buffer, overflow)

    async def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` (str, bytes or JSON-able) to every subscriber of ``topic``."""
        if self._closed:
            raise RuntimeError("this broadcast hub is closed")
        await trio.lowlevel.checkpoint()
        await self._backend.publish(BroadcastMessage.encode(topic, message))

    async def _deliver(self, message: BroadcastMessage) -> None:
        """Hand one message to this process's subscribers of its topic."""
        blocking = []
        for subscription in list(self._topics.get(message.topic, ())):
            if subscription.overflow == "block":
                blocking.append(subscription)
            else:
                subscription._offer(message)
        for subscription in blocking:
            await subscription._offer_blocking(message)

    async def forward(
        self,
        topic: str,
        websocket: WebSocket,
        *,
        max_buffer: int = 64,
        overflow: Overflow = "drop_oldest",
        task_status: trio.TaskStatus[Subscription] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send ``topic``'s messages to ``websocket`` until it closes; run it as a task.

        Start it in the socket's structured block (``nursery.start_soon(hub.forward, topic, ws)``,
        or ``await nursery.start(...)`` to get the ``Subscription`` and be subscribed before the
        next line runs), so the client leaving cancels it and unsubscribes at once.  A client that
        stops reading costs one bounded buffer; with ``overflow="close"`` it is closed with 1013.
        """
        async with self.subscribe(topic, max_buffer=max_buffer, overflow=overflow) as subscription:
            task_status.started(subscription)
            try:
                async for message in subscription:
                    await websocket.send(message.asgi)
                    while subscription.buffered:  # catch up without a scheduler pass per message
                        await websocket.send(subscription.receive_nowait().asgi)
            except SubscriberTooSlow:
                await websocket.close(TRY_AGAIN_LATER, "too slow: fell behind the broadcast")
            except (WebSocketDisconnect, WebSocketDisconnected):
                return

    def subscribers(self, topic: str) -> int:
        """How many subscriptions this process has on ``topic`` (presence)."""
        return len(self._topics.get(topic, ()))

    @property
    def topics(self) -> dict[str, int]:
        """Every topic this process has subscribers on, with their counts."""
        return {topic: len(subs) for topic, subs in self._topics.items()}

    def _add(self, subscription: Subscription) -> None:
        self._topics.setdefault(subscription.topic, set()).add(subscription)

    def _remove(self, subscription: Subscription) -> None:
        subs = self._topics.get(subscription.topic)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._topics[subscription.topic]

    def _close(self) -> None:
        self._closed = True
        for subs in list(self._topics.values()):
            for subscription in list(subs):
                subscription._end()


class open_broadcast:
    """Open a hub on ``url`` for the duration of an ``async with`` block, in a nursery of its own.

    ``memory://`` (default) or ``redis://host:port/db``.  Leaving the block ends every
    subscription (their iterations stop) and stops the backend's tasks.
    """

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        self._backend = _backend_for(url, options)
        self._hub = Broadcast(self._backend)
        self._owned: AbstractAsyncContextManager[trio.Nursery] = open_owned_nursery()

    async def __aenter__(self) -> Broadcast:
        nursery = await self._owned.__aenter__()
        try:
            await nursery.start(self._run_backend)
        except BaseException as error:
            await self._owned.__aexit__(type(error), error, error.__traceback__)
            raise
        return self._hub

    async def _run_backend(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._backend.run(self._hub._deliver, task_status=task_status)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._hub._close()
        return bool(await self._owned.__aexit__(exc_type, exc, tb))


def _backend_for(url: str, options: dict[str, Any]) -> Backend:
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from .backends.memory import MemoryBackend

        return MemoryBackend(**options)
    if scheme in ("redis", "rediss"):
        from .backends.redis import RedisBackend

        return RedisBackend(url, **options)
    raise ValueError(f"unsupported broadcast URL {url!r}: use memory:// or redis://host:port/db")
