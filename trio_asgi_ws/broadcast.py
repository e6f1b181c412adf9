"""Nursery-scoped broadcast: publish once, deliver to every subscriber of a topic.

::

    async with open_broadcast("memory://") as hub:          # e.g. in the app's lifespan
        async with hub.subscribe("prices", max_buffer=100, overflow="drop_oldest") as sub:
            async for message in sub:                        # message.data: str or bytes
                ...
        await hub.publish("prices", {"AAPL": 123.4})         # str, bytes or JSON-able

Theory of operation
-------------------

A ``Subscription`` is a ``trio.abc.ReceiveChannel`` in front of a trio memory channel of
``max_buffer`` slots.  The hub holds the sending end; ``hub.subscribe()`` makes one, and entering
its ``async with`` block puts it on its topic's list until the block exits.

**Publishing never waits for a subscriber** (except under ``block``): the backend brings each
published message back to the hub (``memory://`` at once, in the publisher's task; ``redis://``
through the one task reading Redis), and the hub hands it to every subscription of its topic with
``send_nowait``.  A message handed to a reader already waiting in ``receive()`` goes to it
directly; otherwise it waits in the buffer.  When the buffer is full the subscription's *overflow
policy* decides, and under every policy but ``block`` exactly one message is lost and counted in
``dropped``:

- ``drop_oldest``: the oldest buffered message makes room (live data: prices, cursors);
- ``drop_newest``: the new message is dropped (keep what the subscriber already has);
- ``close``: the new message is dropped and the subscription ends: it is unsubscribed at once,
  its buffered messages can still be read, then ``receive()`` raises ``SubscriberTooSlow``; a
  socket attached with ``forward`` is closed with 1013 Try Again Later;
- ``block``: the publisher waits until there is room.  Lossless, for in-process pipelines only:
  one slow subscriber stalls the publisher and, through it, every other subscriber of the topic.
  Refused (``ValueError``) on a backend whose one reader serves every topic (``redis://``).

How a subscription ends, as ``receive()`` reports it (``async for`` stops quietly on the first):

- ``trio.EndOfChannel``: the hub closed (its ``open_broadcast`` block was left), once the
  buffered messages have been read;
- ``SubscriberTooSlow``: a ``close``-policy overflow, once the buffered messages have been read;
- ``trio.ClosedResourceError``: the subscriber itself left its ``async with`` block (or called
  ``close()``); whatever was still buffered is discarded.

``receive_nowait()`` reports the same ends, and ``trio.WouldBlock`` only while the subscription is
live and empty.  Cancelling a ``receive()`` loses nothing: the message stays buffered.

Every subscription counts ``delivered`` (handed to the subscriber), ``dropped`` (lost to its
policy), ``buffered`` (waiting now, read from the channel: never negative, never above
``max_buffer``) and ``peak_buffered``.  While it is subscribed, every message published on its
topic is either delivered, dropped or still buffered.  Subscribers that drop nothing see each
topic's messages in publication order.  A message is encoded once per publish (JSON included),
not once per subscriber, and ``forward`` sends that one prepared ASGI message to each socket.

Sockets attached with ``forward`` are delivered to without a task switch each while they keep
up: by a direct write of the frame, encoded once, where the server offers it (``serve()``), else
from one sender task of the hub that hands a socket back to its own ``forward`` task once its
send is found to block.  ``publish()`` then waits only if that sender has 64 messages queued
(it is out of CPU, not held up by a client).  See ``trio_asgi_ws._fanout``.

History and resume
------------------

Every published message carries an ``id`` (``"<ms>-<seq>"``), ordered within its topic.  With
``open_broadcast(url, history=N)`` (or a function of the topic returning N) each topic keeps its
last N messages, and ``subscribe(topic, since=id)`` (or ``forward(..., since=id)``) first delivers
what the history holds after ``id``, then continues live, with no gap and no duplicate across the
switch.  ``since=START`` (``"0-0"``) delivers everything kept: a room's last messages on joining.
The subscription's ``recovered`` then says whether that was everything published after ``id``;
when the history no longer reaches back that far it is ``False``, the newest messages kept are
delivered instead, and the app should reload its state.  Replayed messages do not count against
``max_buffer`` (the history size bounds them).

Backends: ``memory://`` (this process), ``redis://host:port/db`` (every process sharing that
Redis) and ``redis+cluster://host:port`` (a Redis Cluster, through sharded pub/sub); see
``trio_asgi_ws.backends.redis``.  A hub asks the backend only for the topics it has subscribers
on.  With Redis, local subscribers receive what this process publishes by way of Redis, like
everyone else's, so order is Redis's order.  A backend implements
``trio_asgi_ws.backends.base.Backend``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from types import TracebackType
from typing import Any, Literal

import trio

from ._broadcast_stats import (
    BroadcastStats,
    ClosedHubs,
    Figures,
    StatsKeeper,
    TopicLabel,
    TopicStats,
    process_figures,
    topic_stats,
)
from ._direct_send import encode_frame
from ._fanout import InlineSender, SocketLink
from ._groups import open_owned_nursery
from .backends.base import START, Backend, BroadcastMessage, BroadcastStatus, id_order
from .backends.memory import MemoryBackend
from .websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

__all__ = [
    "START",
    "Broadcast",
    "BroadcastMessage",
    "BroadcastStats",
    "BroadcastStatus",
    "Overflow",
    "SubscriberTooSlow",
    "Subscription",
    "TopicStats",
    "open_broadcast",
    "open_hubs",
]

Overflow = Literal["drop_oldest", "drop_newest", "close", "block"]
"""What a subscription does when a message arrives and its buffer (``max_buffer``) is full.

``drop_oldest`` drops the oldest buffered message to make room; ``drop_newest`` drops the new
one; ``close`` drops it and ends the subscription (``SubscriberTooSlow`` after the buffered
messages; a forwarded socket is closed with 1013); ``block`` makes ``publish`` wait for room
(lossless, but one slow subscriber stalls the publisher; refused on Redis).  Each dropped
message is counted in the subscription's ``dropped``.
"""
_POLICIES = ("drop_oldest", "drop_newest", "close", "block")
TRY_AGAIN_LATER = 1013
TOO_SLOW_REASON = "too slow: fell behind the broadcast"


class SubscriberTooSlow(Exception):
    """A ``close``-policy subscription overflowed: its consumer did not keep up.

    Raised by ``receive()``, ``receive_nowait()`` and ``async for`` once the messages buffered
    before the overflow have been read, and by every call after that.
    """


class Subscription(trio.abc.ReceiveChannel[BroadcastMessage]):
    """One subscriber's bounded buffer on one topic: a trio receive channel of ``BroadcastMessage``.

    Make it with ``hub.subscribe(...)`` and use it as ``async with ... as sub``: entering
    subscribes, leaving unsubscribes and closes it.  Read it with ``async for message in sub``
    (ends quietly when the hub closes), ``await sub.receive()`` or ``sub.receive_nowait()``; how
    each reports the end, the overflow policies and the counters are described in
    ``trio_asgi_ws.broadcast``.  Reading before the ``async with`` entry raises ``RuntimeError``.

    The buffer holds at most ``max_buffer`` messages, and publishing never waits for it (except
    under ``block``): when a message arrives and the buffer is full, ``overflow`` decides
    (``drop_oldest``, ``drop_newest``, ``close`` or ``block``; see ``Overflow``), and each
    message lost to it is counted in ``dropped``.  Cancelling a ``receive()`` loses nothing.
    """

    def __init__(
        self, hub: Broadcast, topic: str, max_buffer: int, overflow: Overflow, since: str | None
    ) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(_POLICIES)}; got {overflow!r}")
        if not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be a positive int, got {max_buffer!r}")
        if since is not None:
            id_order(since)  # ValueError for anything that is not an id
        self.topic = topic
        self.since = since
        self.max_buffer = max_buffer
        self.overflow: Overflow = overflow
        self._hub = hub
        self._send, self._receive = trio.open_memory_channel[BroadcastMessage](max_buffer)
        self._entered = False
        self._ended = False
        self._link: SocketLink | None = None  # set by forward(): the socket it sends to
        self._replay: deque[BroadcastMessage] = deque()  # history, read before the buffer
        self._after: tuple[int, int] | None = None  # while set, live messages up to it are stale
        self.delivered = 0
        """Messages handed to the subscriber."""
        self.dropped = 0
        """Messages lost to the overflow policy (one per overflow, under every policy but block)."""
        self.peak_buffered = 0
        """The most messages ever waiting in the buffer at once (at most ``max_buffer``)."""
        self.too_slow = False
        """Whether a ``close``-policy overflow ended the subscription."""
        self.replayed = 0
        """Messages the subscription was given from the history (``since``), beside live ones."""
        self.recovered: bool | None = None
        """With ``since``: whether every message published after it is delivered (the history
        reached back to it); ``False`` means a gap, so reload state.  ``None`` without ``since``."""

    @property
    def buffered(self) -> int:
        """Messages waiting in the buffer now; 0 once the subscriber has closed it."""
        return self._receive.statistics().current_buffer_used

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.topic!r} {self.overflow} delivered={self.delivered} "
            f"dropped={self.dropped} buffered={self.buffered}/{self.max_buffer}>"
        )

    # -- the subscriber's side -----------------------------------------------------------------

    async def __aenter__(self) -> Subscription:
        """Subscribe: from here on every message published on ``topic`` is offered to it.

        Waits until the backend delivers the topic here (a Redis subscription confirmed; not
        while Redis is unreachable), then, with ``since``, reads the history (``recovered`` is
        set).  Cancelled, or failing (``ConnectionError`` if the history cannot be read), it
        leaves nothing subscribed.
        """
        if self._entered:
            raise RuntimeError("a subscription can be entered only once; subscribe again instead")
        self._hub._add(self)
        self._entered = True
        self._hub._stats.opened(self)
        try:
            await self._hub._backend.subscribe(self.topic)
            if self.since is not None:
                await self._catch_up(self.since)
        except BaseException:
            self.close()
            raise
        return self

    async def _catch_up(self, since: str) -> None:
        """Queue what the history holds after ``since``, and drop live messages it already has.

        The subscription is live (and buffering) before the history is read, so nothing
        published meanwhile is missed; whatever is both buffered and in the history is dropped
        from the buffer, and the backend's copies still on their way are dropped as they arrive
        (until the first newer one: a topic's live messages come in id order).
        """
        replay = await self._hub._backend.replay(self.topic, since)
        self.recovered = replay.complete
        self._replay.extend(replay.messages)
        self.replayed = len(replay.messages)
        last = id_order(replay.messages[-1].id) if replay.messages else id_order(since)
        self._after = last
        with suppress(trio.WouldBlock, trio.EndOfChannel):
            while True:  # what arrived while the history was read goes after it, if newer
                message = self._receive.receive_nowait()
                if id_order(message.id) > last:
                    self._after = None
                    self._replay.append(message)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Unsubscribe and close (see ``close``); never blocks, so it is not a checkpoint."""
        self.close()

    def close(self) -> None:
        """Unsubscribe and close the channel: what is still buffered is discarded (it counts as
        neither delivered nor dropped), and every ``receive`` raises ``trio.ClosedResourceError``,
        a reader already waiting in one included.  Closing twice does nothing."""
        self._receive.close()  # first, so that a waiting reader gets ClosedResourceError
        self._replay.clear()
        self._end()
        self._hub._stats.closed(self)

    async def aclose(self) -> None:
        """``close()``, then a checkpoint, as trio's channels do."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def receive(self) -> BroadcastMessage:
        """The next message, waiting for one if none is buffered.

        Raises ``trio.EndOfChannel`` when the hub has closed, ``SubscriberTooSlow`` after a
        ``close``-policy overflow (each once the buffered messages have been read), and
        ``trio.ClosedResourceError`` once the subscriber has closed it.  Cancellation loses
        nothing: a cancelled ``receive()`` has taken no message.
        """
        self._check_entered()
        if self._replay:
            await trio.lowlevel.checkpoint()
            if self._replay:  # not closed meanwhile
                self.delivered += 1
                return self._replay.popleft()
        try:
            message = await self._receive.receive()
        except trio.EndOfChannel:
            self._raise_if_too_slow()
            raise
        self.delivered += 1
        return message

    def receive_nowait(self) -> BroadcastMessage:
        """The next buffered message, without waiting.

        Raises ``trio.WouldBlock`` when the subscription is live but empty, and otherwise reports
        the end exactly as ``receive()`` does, so a polling loop learns that it is over.
        """
        self._check_entered()
        if self._replay:
            self.delivered += 1
            return self._replay.popleft()
        try:
            message = self._receive.receive_nowait()
        except trio.EndOfChannel:
            self._raise_if_too_slow()
            raise
        self.delivered += 1
        return message

    def _check_entered(self) -> None:
        if not self._entered:
            raise RuntimeError(
                f"subscription to {self.topic!r} not entered: use `async with hub.subscribe(...) as sub`"
            )

    def _raise_if_too_slow(self) -> None:
        if self.too_slow:
            raise SubscriberTooSlow(
                f"subscriber to {self.topic!r} fell {self.max_buffer} messages behind"
            ) from None

    # -- the hub's side ------------------------------------------------------------------------

    def _end(self) -> None:
        """Unsubscribe and close the sending end: readers get what is buffered, then the end."""
        self._ended = True
        self._hub._remove(self)
        self._send.close()

    def _offer(self, message: BroadcastMessage) -> None:
        """Buffer ``message`` without waiting, applying the overflow policy when full (not block).

        Does nothing once the subscription has ended (a delivery that began before it did).
        """
        if self._ended or self._replayed_already(message):
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if self.overflow == "drop_oldest":
                self._receive.receive_nowait()
                self._send.send_nowait(message)
            elif self.overflow == "close":
                self.too_slow = True
                self._end()
            self.dropped += 1
        else:
            self._note_peak()

    async def _offer_blocking(self, message: BroadcastMessage) -> None:
        """Buffer ``message``, waiting for room while the buffer is full (the block policy).

        If the subscription ends meanwhile the message is not delivered to it; if the publisher
        is cancelled meanwhile, neither (trio's memory channel takes the message back).
        """
        if self._replayed_already(message):
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            # Closed: the hub ended it; broken: its subscriber closed it.  Either way it is gone.
            with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                await self._send.send(message)  # full, so peak_buffered is max_buffer already
            return
        except trio.ClosedResourceError:
            return  # it ended while the publisher waited for another block subscriber
        self._note_peak()

    def _replayed_already(self, message: BroadcastMessage) -> bool:
        """Whether ``message`` is a late live copy of one the history gave (``_catch_up``).

        The first newer message ends the check: a topic's live messages come in id order.
        """
        if self._after is None:
            return False
        if id_order(message.id) <= self._after:
            return True
        self._after = None
        return False

    def _note_peak(self) -> None:
        self.peak_buffered = max(self.peak_buffered, self.buffered)


class Broadcast:
    """A hub of topics; create it with ``open_broadcast(url)`` (see the module docstring)."""

    def __init__(self, backend: Backend, *, topic_label: TopicLabel | None = None) -> None:
        self._backend = backend
        self._topics: dict[str, dict[Subscription, None]] = {}  # in subscription order
        self._closed = False
        self._inline = InlineSender()
        self._stats = StatsKeeper(topic_label)
        self._received = 0
        self._arrived: dict[str, int] = {}  # per topic with local subscribers

    @property
    def status(self) -> BroadcastStatus:
        """The backend's health: ``"connected"``, or ``"reconnecting"`` during a Redis outage."""
        return self._backend.status

    async def wait_for_status(self, status: BroadcastStatus | str) -> None:
        """Wait until ``status`` is ``status`` (e.g. ``"connected"`` again after an outage).

        Returns at once if it already is; raises ``ValueError`` for a status that does not exist.
        Cancelling it has no effect on the hub.
        """
        wanted = BroadcastStatus(status)
        while self._backend.status != wanted:
            await self._backend.status_changed()

    @property
    def lost(self) -> int:
        """Messages published while the backend was unreachable, and so lost (at most once)."""
        return self._backend.lost

    def subscribe(
        self,
        topic: str,
        *,
        max_buffer: int = 64,
        overflow: Overflow = "drop_oldest",
        since: str | None = None,
    ) -> Subscription:
        """A subscription to ``topic``, live from its ``async with`` entry to its exit.

        With ``since`` (a message id, or ``START``) it first delivers what the topic's history
        holds after that id, then continues live with no gap and no duplicate; its ``recovered``
        says whether the history reached back to ``since`` (see the module docstring).

        Raises ``ValueError`` for a bad ``max_buffer``, ``overflow`` or ``since``, or for
        ``"block"`` on a backend that does not permit it (``redis://``), and ``RuntimeError`` once
        the hub is closed.
        """
        if self._closed:
            raise RuntimeError("this broadcast hub is closed")
        if overflow == "block" and not self._backend.permits_block:
            raise ValueError(
                f"overflow='block' is refused by {type(self._backend).__name__}: one task delivers "
                "every topic, so one full 'block' subscriber would stall delivery of all topics in "
                "this process; use overflow='close' (nothing lost until SubscriberTooSlow ends it) or "
                "'drop_oldest', or a memory:// hub for a lossless in-process pipeline"
            )
        return Subscription(self, topic, max_buffer, overflow, since)

    async def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` (str, bytes or JSON-able) to every subscriber of ``topic``.

        Always a checkpoint.  Raises ``TypeError`` (delivering nothing) for a message that is not
        JSON-able, and ``RuntimeError`` once the hub is closed.  It waits for no subscriber except
        a full ``block`` one; cancelled while waiting there, the message has reached the
        subscribers it was handed to before, and no others.  With Redis unreachable the message
        is lost and counted in ``lost``, not raised.
        """
        if self._closed:
            raise RuntimeError("this broadcast hub is closed")
        await trio.lowlevel.checkpoint()
        encoded = BroadcastMessage.encode(topic, message)
        self._stats.note_publish(topic)
        await self._backend.publish(encoded)

    async def _deliver(self, message: BroadcastMessage) -> None:
        """Hand one message to this process's subscribers of its topic, in the order they
        subscribed: straight to idle forwarded sockets (``_fanout``), else into buffers (block
        ones last, so that a full one holds up none of the others)."""
        self._received += 1
        subscriptions = self._topics.get(message.topic)
        if not subscriptions:
            return
        self._arrived[message.topic] += 1
        frame: bytes | None = None
        inline: list[Subscription] = []
        blocking: list[Subscription] = []
        for subscription in list(subscriptions):
            link = subscription._link
            if link is not None and subscription._after is None:
                if link.direct is not None:
                    if link.idle:
                        if frame is None:
                            frame = encode_frame(message.asgi)
                        if link.write(frame):
                            subscription.delivered += 1
                            continue
                elif link.routed:
                    inline.append(subscription)
                    continue
            if subscription.overflow == "block":
                blocking.append(subscription)
            else:
                subscription._offer(message)
        if inline:
            await self._inline.put(message, inline)
        for subscription in blocking:
            await subscription._offer_blocking(message)

    async def forward(
        self,
        topic: str,
        websocket: WebSocket,
        *,
        max_buffer: int = 64,
        overflow: Overflow = "drop_oldest",
        since: str | None = None,
        task_status: trio.TaskStatus[Subscription] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send ``topic``'s messages to ``websocket`` until it closes; run it as a task.

        Start it in the socket's structured block (``nursery.start_soon(hub.forward, topic, ws)``,
        or ``await nursery.start(...)`` to get the ``Subscription`` and be subscribed before the
        next line runs), so the client leaving cancels it and unsubscribes at once (a message it
        was sending then counts as delivered).  It returns when the socket is gone, and when the
        hub closes.  With ``since``, the history after that id is sent first (see
        ``subscribe``; the ``Subscription`` handed to ``task_status`` has ``recovered`` set, so
        the app can tell the client about a gap before anything is sent).  A client that stops
        reading costs one
        bounded buffer; under ``overflow="close"`` a client that falls behind is closed with
        1013 Try Again Later once what was buffered has been sent.  Messages already buffered
        are sent back to back, without a scheduler pass each.

        While the socket keeps up, this task stays asleep and the hub delivers to the socket
        itself, without a task switch per socket: with one system call per socket when the
        server offers the ``trio_asgi_ws.direct_send`` extension (``serve()``), else from one
        sender task that hands a socket back to this task once its send is found to block
        (see ``trio_asgi_ws._fanout``).
        """
        async with self.subscribe(
            topic, max_buffer=max_buffer, overflow=overflow, since=since
        ) as subscription:
            task_status.started(subscription)
            subscription._link = link = SocketLink(websocket, may_send_inline=overflow != "block")
            try:
                await link.run(subscription)
            except SubscriberTooSlow:
                await websocket.close(TRY_AGAIN_LATER, TOO_SLOW_REASON)
            except (trio.EndOfChannel, WebSocketDisconnect, WebSocketDisconnected):
                return

    def subscribers(self, topic: str) -> int:
        """How many subscriptions this process has on ``topic`` (presence)."""
        return len(self._topics.get(topic, ()))

    @property
    def topics(self) -> dict[str, int]:
        """Every topic this process has subscribers on, with their counts."""
        return {topic: len(subs) for topic, subs in self._topics.items()}

    def topic_stats(self, topic: str) -> TopicStats:
        """``topic`` in this process: its subscribers now, the messages that arrived for it since
        it last had none, and what its current subscribers got, lost and have waiting."""
        return topic_stats(self._topics.get(topic, ()), self._arrived.get(topic, 0))

    def stats(self) -> BroadcastStats:
        """The hub's figures since it opened (what ``trio_asgi_ws.metrics`` exports).

        Costs one pass over the open subscriptions; nothing is counted per delivery for it.
        Per-topic figures (``.topics``) only for topics named by ``open_broadcast``'s
        ``topic_label``.
        """
        return self._stats.stats(
            status=str(self._backend.status), received=self._received, lost=self._backend.lost
        )

    def _add(self, subscription: Subscription) -> None:
        if self._closed:
            raise RuntimeError("this broadcast hub is closed")
        subs = self._topics.get(subscription.topic)
        if subs is None:
            subs = self._topics[subscription.topic] = {}
            self._arrived[subscription.topic] = 0
        subs[subscription] = None

    def _remove(self, subscription: Subscription) -> None:
        subs = self._topics.get(subscription.topic)
        if subs is not None:
            subs.pop(subscription, None)
            if not subs:
                del self._topics[subscription.topic]
                del self._arrived[subscription.topic]
                self._backend.unsubscribe(subscription.topic)

    def _close(self) -> None:
        """End every subscription (each reader gets its buffered messages, then the end).

        Messages the inline sender had not sent yet are buffered first, so none is lost.
        """
        self._closed = True
        self._inline.drain()
        for subs in list(self._topics.values()):
            for subscription in list(subs):
                subscription._end()


_OPEN_HUBS: set[Broadcast] = set()
_CLOSED_HUBS = ClosedHubs()


def open_hubs() -> list[Broadcast]:
    """The hubs open in this process (their ``open_broadcast`` block not yet left)."""
    return list(_OPEN_HUBS)


def figures() -> Figures:
    """This process's broadcast figures for the metrics: every open hub's ``stats()`` summed,
    plus the counters of hubs that have closed (so counters never go down)."""
    return process_figures([hub.stats() for hub in _OPEN_HUBS], _CLOSED_HUBS)


def open_broadcast(
    url: str = "memory://", *, topic_label: TopicLabel | None = None, **options: Any
) -> AbstractAsyncContextManager[Broadcast]:
    """A hub on ``url`` for the duration of an ``async with`` block, in a nursery of its own.

    ``memory://`` (default), ``redis://host:port/db`` or ``redis+cluster://host:port`` (any one
    node of the cluster).  ``topic_label`` opts topics into per-topic figures in ``stats()`` and
    the metrics: a function from a topic to the label it is counted under, or ``None`` for
    topics counted only in the totals (keep the labels few: each is a time series).  ``options``
    go to the backend: ``history=N`` (every topic keeps its
    last N messages; or a function of the topic returning N; default 0, none kept) and, for
    Redis, ``prefix=``.  An unknown URL or a bad ``history`` raises ``ValueError`` here, at the
    call, and a Redis URL without the ``redis`` extra installed ``ModuleNotFoundError`` naming
    the extra.  Entering starts the
    backend: an error doing so (``ConnectionError`` for an unreachable Redis) raises as itself.
    Leaving the block ends every subscription (readers get what is buffered, then
    ``trio.EndOfChannel``: ``async for`` stops quietly) and stops the backend's tasks; an error
    from the body or the backend leaves as itself, not in an ``ExceptionGroup``.
    """
    return _running(_backend_for(url, options), topic_label)


@asynccontextmanager
async def _running(backend: Backend, topic_label: TopicLabel | None = None) -> AsyncIterator[Broadcast]:
    hub = Broadcast(backend, topic_label=topic_label)
    async with open_owned_nursery() as nursery:
        await nursery.start(hub._inline.run)
        await nursery.start(backend.run, hub._deliver)
        _OPEN_HUBS.add(hub)
        try:
            yield hub
        finally:
            _OPEN_HUBS.discard(hub)
            hub._close()
            _CLOSED_HUBS.add(hub.stats())


def _backend_for(url: str, options: dict[str, Any]) -> Backend:
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return MemoryBackend(**options)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        try:
            from .backends.redis import RedisBackend  # coredis is an optional dependency
        except ImportError as error:
            raise ModuleNotFoundError(
                f"{scheme}:// needs the redis extra: pip install 'trio_asgi_ws[redis]' "
                f"(missing: {error.name or error})",
                name=error.name,
            ) from error
        return RedisBackend(url, cluster=scheme.endswith("+cluster"), **options)
    raise ValueError(
        f"unsupported broadcast URL {url!r}: use memory://, redis://host:port/db or redis+cluster://host:port"
    )
