"""The Redis broadcast backends: ``redis://host:port/db`` and ``redis+cluster://host:port``.

Each topic is a Redis pub/sub channel and a Redis stream, both named after the topic under
``prefix`` with the topic as the hash tag (``prefix{t:topic}`` and ``prefix{t:topic}:history``;
``}`` and ``%`` in a topic are escaped), so on a cluster both live in the topic's slot.

Publishing runs one Lua script: ``XADD`` to the topic's stream (trimmed to about the topic's
history size, or to nothing: the stream then only numbers the messages), then ``PUBLISH`` (on a
cluster ``SPUBLISH``, sharded pub/sub) of the id and the payload.  Both happen at once, so live
messages arrive in id order, which is what lets a subscriber switch from the history to live
delivery without a gap or a duplicate (``trio_asgi_ws.broadcast``).  One stream key per topic
ever published stays in Redis.

The hub keeps one pub/sub connection (on a cluster, one per master) and subscribes it only to the
topics it has local subscribers for: ``subscribe`` asks, and returns once Redis confirmed;
``unsubscribe`` lets go when the last local subscriber left.  One task of the backend applies
those changes in order, so coming and going never loses or doubles a message for the subscribers
that stay.

If Redis goes away (on a cluster: any master the hub reads from), local subscribers stay
subscribed and the reader reconnects with exponential backoff (0.1 s doubling to 5 s),
resubscribing to every wanted topic; ``status`` is ``BroadcastStatus.RECONNECTING`` meanwhile and
the outage is logged.  Live delivery is at most once: messages published while Redis is
unreachable are lost (counted in ``lost`` by the publisher), and messages published elsewhere
while this hub was cut off do not reach it live (they are in the history, if the topic keeps
one).  Opening a hub while Redis is down raises, so a wrong URL is noticed at start-up.

``overflow="block"`` is refused (``permits_block`` is false): the one reader delivers every topic,
so a single full ``block`` subscriber would stall every topic of the process.

coredis runs on trio through anyio; that is the only place anyio appears in this library.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from .._groups import leaves, only_cancelled, raise_unwrapped
from .base import BroadcastMessage, BroadcastStatus, Deliver, History, Replay, history_size

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RedisBackend"]

logger = logging.getLogger("trio_asgi_ws.broadcast")

_TEXT, _BYTES = b"t", b"b"
_FIRST_BACKOFF, _MAX_BACKOFF = 0.1, 5.0
_SUBSCRIBE_TIMEOUT = 5.0  # seconds for Redis to confirm a subscription before it counts as down
# What coredis's anyio streams raise beside the Cancelled when a cancelled pub/sub tears itself
# down (see _without_teardown_noise).
_TEARDOWN_NOISE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
_FAILURES = (coredis.exceptions.RedisError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)

# KEYS[1] the stream; ARGV: trim ('=' or '~'), size, payload, publish command, channel.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], '*', 'd', ARGV[3])
redis.call(ARGV[4], ARGV[5], id .. ' ' .. ARGV[3])
return id
"""

# KEYS[1] the stream; ARGV: since, size.  Returns {complete (0/1), entries oldest first}.
_REPLAY = """
local function newest()
  local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
  local oldest_first = {}
  for i = #entries, 1, -1 do oldest_first[#oldest_first + 1] = entries[i] end
  return oldest_first
end
local function info(field)
  local fields = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #fields, 2 do if fields[i] == field then return fields[i + 1] end end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {ARGV[1] == '0-0' and 1 or 0, {}}
end
if ARGV[1] == '0-0' then
  local entries = newest()
  return {info('entries-added') == #entries and 1 or 0, entries}
end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+')
if #entries > 0 and entries[1][1] == ARGV[1] then
  table.remove(entries, 1)
  return {1, entries}
end
if #entries == 0 and info('last-generated-id') == ARGV[1] then
  return {1, {}}
end
return {0, newest()}
"""


class RedisBackend:
    """Publishes to, and reads from, one Redis (``cluster=False``) or a Redis Cluster."""

    permits_block: ClassVar[bool] = False  # one reader for every topic: see the module docstring

    def __init__(
        self, url: str, *, prefix: str = "trio_asgi_ws:", history: History = 0, cluster: bool = False
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must not contain '{{' or '}}' (it would move the hash tag): {prefix!r}")
        history_size(history, "")  # a bad constant fails here, at open_broadcast
        self._url = url
        self._prefix = prefix
        self._history = history
        self._cluster = cluster
        if cluster:
            self._client: Any = _cluster_client(url)
        else:
            self._client = coredis.Redis.from_url(url, retry_policy=NoRetryPolicy())
        self._publish_script: Any = self._client.register_script(_PUBLISH)
        self._replay_script: Any = self._client.register_script(_REPLAY)
        self._publish_command = "SPUBLISH" if cluster else "PUBLISH"
        self._wanted: dict[str, trio.Event] = {}  # topic -> set once Redis delivers it here
        self._unconfirmed: set[str] = set()  # wanted topics whose event is not set yet
        self._channels: dict[bytes, str] = {}  # channel -> topic, for every wanted topic
        self._wanted_changed = trio.Event()
        self.status = BroadcastStatus.CONNECTING
        self._status_changed = trio.Event()
        self.lost = 0
        self.outages = 0
        self.received = 0
        """Messages read from Redis (only topics with local subscribers are read)."""

    def channel(self, topic: str) -> str:
        """The pub/sub channel of ``topic`` (its stream is this plus ``:history``)."""
        escaped = topic.replace("%", "%25").replace("}", "%7D")
        return f"{self._prefix}{{t:{escaped}}}"

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: BroadcastMessage) -> None:
        if isinstance(message.data, str):
            payload = _TEXT + message.data.encode("utf-8")
        else:
            payload = _BYTES + message.data
        size = history_size(self._history, message.topic)
        channel = self.channel(message.topic)
        try:
            await self._publish_script(
                keys=[channel + ":history"],
                args=["~" if size else "=", size, payload, self._publish_command, channel],
            )
        except _FAILURES as error:
            self.lost += 1
            logger.warning("Broadcast to %r lost, Redis unreachable: %r", message.topic, error)

    async def replay(self, topic: str, since: str) -> Replay:
        size = history_size(self._history, topic)
        try:
            complete, entries = await self._replay_script(
                keys=[self.channel(topic) + ":history"], args=[since, max(size, 1)]
            )
        except _FAILURES as error:
            raise ConnectionError(f"cannot read the history of {topic!r} from Redis: {error}") from error
        messages = [_decode(topic, _text(id), fields[1]) for id, fields in entries]
        return Replay(messages, complete=bool(complete))

    # -- what this hub reads -------------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        ready = self._wanted.get(topic)
        if ready is None:
            ready = self._wanted[topic] = trio.Event()
            self._unconfirmed.add(topic)
            self._channels[self.channel(topic).encode()] = topic
            self._wanted_changed.set()
        if self.status != BroadcastStatus.CONNECTED:
            await trio.lowlevel.checkpoint()  # delivery starts when Redis is back
        else:
            await ready.wait()

    def unsubscribe(self, topic: str) -> None:
        if self._wanted.pop(topic, None) is not None:
            self._unconfirmed.discard(topic)
            del self._channels[self.channel(topic).encode()]
            self._wanted_changed.set()

    # -- reading -------------------------------------------------------------------------------

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the subscribed topics forever, reconnecting with backoff after an outage."""
        try:
            async with self._client:
                await self._read(deliver, task_status)  # the first connection must work
                await self._reconnect_forever(deliver)
        except BaseExceptionGroup as group:  # the client's own task group
            raise_unwrapped(group)
        except _FAILURES as error:  # the client itself could not start (no cluster node answers)
            if self.status != BroadcastStatus.CONNECTING:
                raise
            raise ConnectionError(f"cannot reach Redis at {self._url}: {error}") from None

    async def _reconnect_forever(self, deliver: Deliver) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            if await self._read(deliver, trio.TASK_STATUS_IGNORED):
                backoff = _FIRST_BACKOFF

    def _pubsub(self) -> Any:
        options: dict[str, Any] = {
            "ignore_subscribe_messages": True,
            "retry_policy": NoRetryPolicy(),
            "subscription_timeout": _SUBSCRIBE_TIMEOUT,
        }
        if self._cluster:
            return self._client.sharded_pubsub(**options)
        return self._client.pubsub(**options)

    async def _read(self, deliver: Deliver, task_status: trio.TaskStatus[None]) -> bool:
        """Subscribe and deliver until the connection fails; return whether it connected at all."""
        connected = False
        try:
            async with self._pubsub() as pubsub, trio.open_nursery() as nursery:
                # Every topic wanted now is subscribed before the hub counts as connected, so
                # that "connected" again after an outage means delivery has resumed.
                for topic in self._wanted:  # new subscribers wait for this connection's answer
                    self._wanted[topic] = trio.Event()
                self._unconfirmed = set(self._wanted)
                subscribed: set[str] = set()
                await self._apply_wanted(pubsub, subscribed)
                if self.status == BroadcastStatus.RECONNECTING:
                    logger.warning("Redis reachable again at %s: broadcast resumed", self._url)
                self._set_status(BroadcastStatus.CONNECTED)
                connected = True
                nursery.start_soon(self._follow_wanted, pubsub, subscribed)
                task_status.started()
                await self._deliver_from(pubsub, deliver)
        except _FAILURES as error:
            self._outage(error)
        except BaseExceptionGroup as group:  # coredis's anyio task groups wrap what went wrong
            group = _without_teardown_noise(group)
            failures, rest = group.split(_FAILURES)
            if failures is None or rest is not None:  # a cancellation, or not only a lost connection
                raise_unwrapped(group)
            self._outage(leaves(failures)[0])
        return connected

    async def _follow_wanted(self, pubsub: Any, subscribed: set[str]) -> None:
        """Keep ``pubsub`` subscribed to every wanted topic and no other, as the set changes.

        Changes are applied in order, one command at a time, each awaited until Redis confirms
        it; a topic wanted again while its unsubscription is under way is subscribed again.
        """
        while True:
            await self._wanted_changed.wait()
            await self._apply_wanted(pubsub, subscribed)

    async def _apply_wanted(self, pubsub: Any, subscribed: set[str]) -> None:
        """Subscribe ``pubsub`` to the wanted topics not in ``subscribed`` (what it is subscribed
        to, updated here), unsubscribe it from the others, and confirm the topics' waiters.

        A topic let go and wanted again since the last pass stays subscribed, and is confirmed.
        """
        self._wanted_changed = trio.Event()
        to_add = [topic for topic in self._wanted if topic not in subscribed]
        to_drop = [topic for topic in subscribed if topic not in self._wanted]
        if to_add:
            await pubsub.subscribe(*(self.channel(topic) for topic in to_add))
            subscribed.update(to_add)
        if to_drop:
            await pubsub.unsubscribe(*(self.channel(topic) for topic in to_drop))
            subscribed.difference_update(to_drop)
        for topic in [topic for topic in self._unconfirmed if topic in subscribed]:
            self._unconfirmed.discard(topic)
            self._wanted[topic].set()

    async def _deliver_from(self, pubsub: Any, deliver: Deliver) -> None:
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] not in ("message", "smessage"):
                continue
            channel = message["channel"]
            topic = self._channels.get(channel if isinstance(channel, bytes) else channel.encode())
            if topic is None:  # unsubscribed since it was sent
                continue
            self.received += 1
            id, _, payload = bytes(message["data"]).partition(b" ")
            await deliver(_decode(topic, id.decode("ascii"), payload))

    def _outage(self, error: BaseException) -> None:
        """The connection failed: raise at start-up, else log the outage once and carry on.

        Subscribers waiting for Redis to confirm their topic are let go (delivery resumes with
        the reconnection).
        """
        if self.status == BroadcastStatus.CONNECTING:
            raise ConnectionError(f"cannot reach Redis at {self._url}: {error}") from None
        if self.status == BroadcastStatus.CONNECTED:
            self.outages += 1
            logger.warning(
                "Redis at %s unreachable (%s): reconnecting; broadcasts meanwhile are lost", self._url, error
            )
        self._set_status(BroadcastStatus.RECONNECTING)
        for ready in self._wanted.values():
            ready.set()

    def _set_status(self, status: BroadcastStatus) -> None:
        if status != self.status:
            self.status = status
            self._status_changed.set()
            self._status_changed = trio.Event()

    async def status_changed(self) -> None:
        """Return at the next change of ``status``."""
        await self._status_changed.wait()


def _cluster_client(url: str) -> Any:
    """A cluster client for ``redis+cluster://[user:password@]host:port`` (``rediss+`` for TLS):
    any one node; the client finds the others."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"a cluster URL needs a host: {url!r} (e.g. redis+cluster://127.0.0.1:7000)")
    return coredis.RedisCluster(
        startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme.startswith("rediss"),
        retry_policy=NoRetryPolicy(),
    )


def _decode(topic: str, id: str, payload: bytes) -> BroadcastMessage:
    data: str | bytes = payload[1:].decode("utf-8") if payload[:1] == _TEXT else payload[1:]
    return BroadcastMessage.encode(topic, data, id)


def _without_teardown_noise(
    group: BaseExceptionGroup[BaseException],
) -> BaseExceptionGroup[BaseException]:
    """``group`` without coredis's complaints about its own streams, when it is a cancellation.

    coredis 6.9, cancelled while a pub/sub reads (the hub closing), closes the pub/sub's anyio
    memory streams and its reader task then raises ``anyio.ClosedResourceError`` (or
    ``BrokenResourceError``) into the same task group as our ``Cancelled``.  Beside a
    cancellation that error is moot; anywhere else it is kept.  Seen on every hub closed while
    connected (e.g. tests/integration/test_broadcast_redis.py, two hubs sharing topics).  On a
    cluster the shard readers re-raise it as ``coredis.exceptions.ConnectionError("Connection
    lost while waiting for push messages")`` caused by it (seen in about one close in six,
    tests/integration/test_broadcast_history.py on a cluster): that is the same noise.
    """
    noise, rest = group.split(_is_teardown_noise)
    if noise is not None and rest is not None and only_cancelled(rest):
        return rest
    return group


def _is_teardown_noise(error: BaseException) -> bool:
    return isinstance(error, _TEARDOWN_NOISE) or isinstance(error.__cause__, _TEARDOWN_NOISE)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
