"""The ``redis://host:port/db`` broadcast backend: fan-out across processes through Redis pub/sub.

The hub keeps one pub/sub connection (pattern-subscribed to every topic under ``prefix``) read by
one task, and one connection for ``PUBLISH``.  Everything published, by this process or another,
comes back through the reader and is then fanned out locally exactly as with ``memory://``.

If Redis goes away, local subscribers stay subscribed and the reader reconnects with exponential
backoff (0.1 s doubling to 5 s); ``status`` is ``BroadcastStatus.RECONNECTING`` meanwhile and the
outage is logged.  Delivery is at most once: messages published while Redis is unreachable (here or
elsewhere) are lost, counted in ``lost``, and not retried.  Opening a hub while Redis is down
raises, so a wrong URL is noticed at start-up rather than hidden behind retries.

``overflow="block"`` is refused (``permits_block`` is false): the one reader delivers every topic,
so a single full ``block`` subscriber would stall every topic of the process.

coredis runs on trio through anyio; that is the only place anyio appears in this library.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from .._groups import leaves, only_cancelled, raise_unwrapped
from .base import BroadcastMessage, BroadcastStatus, Deliver

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RedisBackend"]

logger = logging.getLogger("trio_asgi_ws.broadcast")

_TEXT, _BYTES = b"t", b"b"
_FIRST_BACKOFF, _MAX_BACKOFF = 0.1, 5.0
# What coredis's anyio streams raise beside the Cancelled when a cancelled pub/sub tears itself
# down (see _without_teardown_noise).
_TEARDOWN_NOISE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
_FAILURES = (coredis.exceptions.RedisError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class RedisBackend:
    """Publishes to, and reads from, Redis channels named ``prefix + topic``."""

    permits_block: ClassVar[bool] = False  # one reader for every topic: see the module docstring

    def __init__(self, url: str, *, prefix: str = "trio_asgi_ws:") -> None:
        self._url = url
        self._prefix = prefix
        self._client: Any = coredis.Redis.from_url(url, retry_policy=NoRetryPolicy())
        self.status = BroadcastStatus.CONNECTING
        self._status_changed = trio.Event()
        self.lost = 0
        self.outages = 0

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: BroadcastMessage) -> None:
        if isinstance(message.data, str):
            payload = _TEXT + message.data.encode("utf-8")
        else:
            payload = _BYTES + message.data
        try:
            await self._client.publish(self._prefix + message.topic, payload)
        except _FAILURES as error:
            self.lost += 1
            logger.warning("Broadcast to %r lost, Redis unreachable: %r", message.topic, error)

    # -- reading -------------------------------------------------------------------------------

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the pattern subscription forever, reconnecting with backoff after an outage."""
        try:
            async with self._client:
                await self._read(deliver, task_status)  # the first connection must work
                await self._reconnect_forever(deliver)
        except BaseExceptionGroup as group:  # the client's own task group
            raise_unwrapped(group)

    async def _reconnect_forever(self, deliver: Deliver) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
            if await self._read(deliver, trio.TASK_STATUS_IGNORED):
                backoff = _FIRST_BACKOFF

    async def _read(self, deliver: Deliver, task_status: trio.TaskStatus[None]) -> bool:
        """Subscribe and deliver until the connection fails; return whether it connected at all."""
        connected = False
        pattern = self._prefix + "*"
        start = len(self._prefix)
        pubsub = self._client.pubsub(
            patterns=[pattern], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
        )
        try:
            async with pubsub:
                if self.status == BroadcastStatus.RECONNECTING:
                    logger.warning("Redis reachable again at %s: broadcast resumed", self._url)
                self._set_status(BroadcastStatus.CONNECTED)
                connected = True
                task_status.started()
                async for message in pubsub:
                    if message["type"] != "pmessage":
                        continue
                    topic = _text(message["channel"])[start:]
                    payload = bytes(message["data"])
                    data: str | bytes = payload[1:].decode("utf-8") if payload[:1] == _TEXT else payload[1:]
                    await deliver(BroadcastMessage.encode(topic, data))
        except _FAILURES as error:
            self._outage(error)
        except BaseExceptionGroup as group:  # coredis's anyio task groups wrap what went wrong
            group = _without_teardown_noise(group)
            failures, rest = group.split(_FAILURES)
            if failures is None or rest is not None:  # a cancellation, or not only a lost connection
                raise_unwrapped(group)
            self._outage(leaves(failures)[0])
        return connected

    def _outage(self, error: BaseException) -> None:
        """The connection failed: raise at start-up, else log the outage once and carry on."""
        if self.status == BroadcastStatus.CONNECTING:
            raise ConnectionError(f"cannot reach Redis at {self._url}: {error}") from None
        if self.status == BroadcastStatus.CONNECTED:
            self.outages += 1
            logger.warning(
                "Redis at %s unreachable (%s): reconnecting; broadcasts meanwhile are lost", self._url, error
            )
        self._set_status(BroadcastStatus.RECONNECTING)

    def _set_status(self, status: BroadcastStatus) -> None:
        if status != self.status:
            self.status = status
            self._status_changed.set()
            self._status_changed = trio.Event()

    async def status_changed(self) -> None:
        """Return at the next change of ``status``."""
        await self._status_changed.wait()


def _without_teardown_noise(
    group: BaseExceptionGroup[BaseException],
) -> BaseExceptionGroup[BaseException]:
    """``group`` without coredis's complaints about its own streams, when it is a cancellation.

    coredis 6.9, cancelled while a pub/sub reads (the hub closing), closes the pub/sub's anyio
    memory streams and its reader task then raises ``anyio.ClosedResourceError`` (or
    ``BrokenResourceError``) into the same task group as our ``Cancelled``.  Beside a
    cancellation that error is moot; anywhere else it is kept.  Seen on every hub closed while
    connected (e.g. tests/integration/test_broadcast_redis.py, two hubs sharing topics).
    """
    noise, rest = group.split(_TEARDOWN_NOISE)
    if noise is not None and rest is not None and only_cancelled(rest):
        return rest
    return group


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
