"""The ``memory://`` broadcast backend: one process, delivery straight to local subscribers."""

from __future__ import annotations

from typing import ClassVar

import trio

from .base import BroadcastMessage, BroadcastStatus, Deliver

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Publishing delivers at once, in the publisher's task: nothing runs in the background.

    ``overflow="block"`` is permitted: a full ``block`` subscriber stalls only the task publishing
    to its topic, and through it the rest of that publish's subscribers.
    """

    permits_block: ClassVar[bool] = True
    status = BroadcastStatus.CONNECTED  # always: there is nothing to lose touch with
    lost = 0  # nothing is ever lost on the way

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._deliver = deliver
        task_status.started()

    async def publish(self, message: BroadcastMessage) -> None:
        if self._deliver is None:
            raise RuntimeError("the memory backend is not running")
        await self._deliver(message)

    async def status_changed(self) -> None:
        await trio.sleep_forever()  # the status never changes
