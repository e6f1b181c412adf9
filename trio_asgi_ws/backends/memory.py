"""The ``memory://`` broadcast backend: one process, delivery straight to local subscribers.

Ids are ``"<start>-<n>"``: the hub's start in milliseconds since the epoch (one more than the
last hub's when two start within a millisecond), then a counter shared by every topic, so an id
given out by an earlier process or another hub is never found in this one's history.  A topic
whose history size is N keeps its last N messages in a ring buffer; a topic without history
keeps nothing (and no state at all).
"""

from __future__ import annotations

import time
from collections import deque
from typing import ClassVar

import trio

from .base import START, BroadcastMessage, BroadcastStatus, Deliver, History, Replay, history_size

__all__ = ["MemoryBackend"]

_last_start = 0  # of the latest hub in this process, so that no two share one


class _Kept:
    """One topic's history: its last messages, and whether older ones were let go."""

    __slots__ = ("messages", "trimmed")

    def __init__(self, size: int) -> None:
        self.messages: deque[BroadcastMessage] = deque(maxlen=size)
        self.trimmed = False


class MemoryBackend:
    """Publishing delivers at once, in the publisher's task: nothing runs in the background.

    ``overflow="block"`` is permitted: a full ``block`` subscriber stalls only the task publishing
    to its topic, and through it the rest of that publish's subscribers.
    """

    permits_block: ClassVar[bool] = True
    status = BroadcastStatus.CONNECTED  # always: there is nothing to lose touch with
    lost = 0  # nothing is ever lost on the way

    def __init__(self, *, history: History = 0) -> None:
        history_size(history, "")  # a bad constant fails here, at open_broadcast
        self._history = history
        self._deliver: Deliver | None = None
        global _last_start
        self._epoch = _last_start = max(time.time_ns() // 1_000_000, _last_start + 1)
        self._count = 0
        self._kept: dict[str, _Kept] = {}

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._deliver = deliver
        task_status.started()

    async def publish(self, message: BroadcastMessage) -> None:
        if self._deliver is None:
            raise RuntimeError("the memory backend is not running")
        self._count += 1
        message = message.with_id(f"{self._epoch}-{self._count}")
        kept = self._kept.get(message.topic)
        if kept is None:
            size = history_size(self._history, message.topic)
            if size:
                kept = self._kept[message.topic] = _Kept(size)
        if kept is not None:
            kept.trimmed = kept.trimmed or len(kept.messages) == kept.messages.maxlen
            kept.messages.append(message)
        await self._deliver(message)

    async def subscribe(self, topic: str) -> None:
        await trio.lowlevel.checkpoint()  # every publish reaches the hub: nothing to ask for

    def unsubscribe(self, topic: str) -> None:
        pass

    async def replay(self, topic: str, since: str) -> Replay:
        await trio.lowlevel.checkpoint()
        kept = self._kept.get(topic)
        if kept is None:  # no history, or nothing published yet on a topic that keeps one
            nothing_yet = history_size(self._history, topic) > 0
            return Replay([], complete=nothing_yet and since == START)
        messages = list(kept.messages)
        if since == START:
            return Replay(messages, complete=not kept.trimmed)
        for index, message in enumerate(messages):
            if message.id == since:
                return Replay(messages[index + 1 :], complete=True)
        return Replay(messages, complete=False)

    async def status_changed(self) -> None:
        await trio.sleep_forever()  # the status never changes
