"""What the hub and its backends share: the message, its id, the status, and the ``Backend`` protocol.

A backend carries published messages to every hub on the same channel (this process for
``memory://``, every process sharing a Redis for ``redis://`` and ``redis+cluster://``) and hands
each arriving message to its hub's ``deliver`` callback; the hub alone fans it out to local
subscriptions.  Both ``trio_asgi_ws.broadcast`` and the backends import this module, and it
imports neither.

Every message gets an id when it is published: ``"<milliseconds>-<sequence>"``, the shape of a
Redis stream id, ordered within its topic (``id_order``).  A topic may keep its last messages (its
*history*); ``Backend.replay`` reads what came after an id, which is how a subscriber resumes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Final, Protocol

import trio

from .._types import Message

__all__ = [
    "START",
    "Backend",
    "BroadcastMessage",
    "BroadcastStatus",
    "Deliver",
    "History",
    "Replay",
    "history_size",
    "id_order",
]

START: Final = "0-0"
"""The id before a topic's first message: ``since=START`` replays all the history keeps."""

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")

History = int | Callable[[str], int]
"""How many messages a topic keeps: one number for every topic, or a function of the topic."""


def id_order(message_id: str) -> tuple[int, int]:
    """The sortable form of a message id ``"<milliseconds>-<sequence>"``.

    Raises ``ValueError`` for anything else (an id a client sent back may be garbage).
    """
    match = _ID.fullmatch(message_id) if isinstance(message_id, str) else None
    if match is None:
        raise ValueError(f"not a broadcast message id: {message_id!r} (expected '<ms>-<seq>', e.g. '0-0')")
    return int(match[1]), int(match[2])


def history_size(history: History, topic: str) -> int:
    """How many messages ``topic`` keeps under the hub's ``history`` option (0: none)."""
    size = history(topic) if callable(history) else history
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"history must be a non-negative int, got {size!r} for topic {topic!r}")
    return size


@dataclass(frozen=True)
class BroadcastMessage:
    """One published message, encoded once: ``data`` is ``str`` (text) or ``bytes`` (binary)."""

    topic: str
    data: str | bytes
    asgi: Message = field(repr=False, compare=False)
    """The ``websocket.send`` message that carries ``data``, shared by every socket it goes to."""
    id: str = ""
    """Ordered within ``topic`` (see ``id_order``); given by the backend when it is published."""

    @classmethod
    def encode(cls, topic: str, message: Any, id: str = "") -> BroadcastMessage:
        """Text for ``str``, binary for bytes-like, compact non-ASCII-escaped JSON text otherwise.

        Raises ``TypeError`` for anything else that ``json.dumps`` refuses.
        """
        if isinstance(message, str):
            return cls(topic, message, {"type": "websocket.send", "text": message}, id)
        if isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            return cls(topic, data, {"type": "websocket.send", "bytes": data}, id)
        try:
            text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"cannot publish {type(message).__name__}: not str, bytes or JSON-able"
            ) from error
        return cls(topic, text, {"type": "websocket.send", "text": text}, id)

    def with_id(self, id: str) -> BroadcastMessage:
        """This message as published, under ``id``."""
        return BroadcastMessage(self.topic, self.data, self.asgi, id)

    def json(self) -> Any:
        """Decode ``data`` as JSON."""
        return json.loads(self.data)


class BroadcastStatus(str, Enum):
    """A backend's health; a ``str``, so ``hub.status == "connected"`` works."""

    CONNECTING = "connecting"
    """Not yet started (a hub is never returned in this state)."""
    CONNECTED = "connected"
    """Messages flow."""
    RECONNECTING = "reconnecting"
    """The shared channel is unreachable (e.g. Redis is down): publishes are lost and counted."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Replay:
    """What a topic's history holds after an id (``Backend.replay``)."""

    messages: list[BroadcastMessage]
    """Oldest first, every one after the id asked for."""
    complete: bool
    """Whether nothing published after that id is missing: false when the history no longer
    reaches back to it (the subscriber should reload its state), or the backend cannot tell."""


Deliver = Callable[[BroadcastMessage], Awaitable[None]]
"""The hub's fan-out: hands one message to this process's subscribers of its topic."""


class Backend(Protocol):
    """Carries published messages to every hub on the same channel (process, Redis, ...)."""

    permits_block: ClassVar[bool]
    """Whether ``overflow="block"`` subscriptions are allowed: only where a full subscriber can
    stall nothing but the publisher of its own topic (not a reader shared by every topic)."""

    @property
    def status(self) -> BroadcastStatus:
        """The current health; changes are announced by ``status_changed``."""
        ...

    @property
    def lost(self) -> int:
        """Messages published while the channel was unreachable, and so lost (at most once)."""
        ...

    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Run for the hub's lifetime, awaiting ``deliver`` for each message that arrives.

        Call ``task_status.started()`` once messages flow; raise before that if they cannot
        (the hub's ``open_broadcast`` then raises that error).  Cancelled when the hub closes.
        """
        ...

    async def publish(self, message: BroadcastMessage) -> None:
        """Give ``message`` its id, keep it in its topic's history and send it to every hub on the
        channel subscribed to its topic, this one included; count it in ``lost`` (rather than
        raise) if the channel is unreachable."""
        ...

    async def subscribe(self, topic: str) -> None:
        """Have messages on ``topic`` delivered to this hub; called by each subscription entering.

        Returns once everything published on ``topic`` from then on will be delivered (at once
        when already so), or at once while the channel is unreachable (delivery starts when it is
        back).  Cancelled, the topic stays wanted until ``unsubscribe``.
        """
        ...

    def unsubscribe(self, topic: str) -> None:
        """Stop delivering ``topic`` here (its last local subscription left); never blocks."""
        ...

    async def replay(self, topic: str, since: str) -> Replay:
        """What ``topic``'s history holds after the id ``since`` (``START``: all of it).

        When the history no longer reaches back to ``since`` the newest messages kept are given,
        with ``complete`` false.  Raises ``ConnectionError`` if the history cannot be read.
        """
        ...

    async def status_changed(self) -> None:
        """Return at the next change of ``status``."""
        ...
