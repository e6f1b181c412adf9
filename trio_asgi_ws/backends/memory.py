"""The ``memory://`` broadcast backend: one process, delivery straight to local subscribers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..broadcast import BroadcastMessage

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Publishing delivers at once, in the publisher's task: nothing runs in the background."""

    status = "connected"

    def __init__(self) -> None:
        self._deliver: Callable[[BroadcastMessage], Awaitable[None]] | None = None

    async def run(
        self, deliver: Callable[[BroadcastMessage], Awaitable[None]], *, task_status: trio.TaskStatus[None]
    ) -> None:
        self._deliver = deliver
        task_status.started()

    async def publish(self, message: BroadcastMessage) -> None:
        if self._deliver is None:
            raise RuntimeError("the memory backend is not running")
        await self._deliver(message)

    async def status_changed(self) -> None:
        await trio.sleep_forever()  # always connected

    async def subscribed(self, topic: str) -> None:
        pass

    async def unsubscribed(self, topic: str) -> None:
        pass
