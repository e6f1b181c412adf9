"""What the hub and its backends share: the message, the status, and the ``Backend`` protocol.

A backend carries published messages to every hub on the same channel (this process for
``memory://``, every process sharing a Redis for ``redis://``) and hands each arriving message to
its hub's ``deliver`` callback; the hub alone fans it out to local subscriptions.  Both
``trio_asgi_ws.broadcast`` and the backends import this module, and it imports neither.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol

import trio

from .._types import Message

__all__ = ["Backend", "BroadcastMessage", "BroadcastStatus", "Deliver"]


@dataclass(frozen=True)
class BroadcastMessage:
    """One published message, encoded once: ``data`` is ``str`` (text) or ``bytes`` (binary)."""

    topic: str
    data: str | bytes
    asgi: Message = field(repr=False, compare=False)
    """The ``websocket.send`` message that carries ``data``, shared by every socket it goes to."""

    @classmethod
    def encode(cls, topic: str, message: Any) -> BroadcastMessage:
        """Text for ``str``, binary for bytes-like, compact non-ASCII-escaped JSON text otherwise.

        Raises ``TypeError`` for anything else that ``json.dumps`` refuses.
        """
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
        """Send ``message`` to every hub on the channel, this one included; count it in ``lost``
        (rather than raise) if the channel is unreachable."""
        ...

    async def status_changed(self) -> None:
        """Return at the next change of ``status``."""
        ...
