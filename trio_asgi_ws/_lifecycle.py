"""How a WebSocket handler's connection ends: its structured block, the close code, the close.

``Lifecycle`` is the internal interface between a ``WebSocket`` and the code that runs handlers
(the ``async with websocket:`` block, the router's plain mode, ``WebSocketEndpoint``).  It owns:

- **the structured block**: a nursery for the body of ``async with websocket:`` in which the
  receive pump (``_pump.py``) starts its reader task when the handler stays away from
  ``receive()``, and its cancel scope, which the client's disconnect, a failed send and a
  receive-buffer overflow cancel;
- **the exit policy**, decided in one place (``close_for``): what code a handler ending with a
  given error closes with;
- **the close** (``finish``): close if still open, and read until the client's disconnect while
  the close is sent, shielded and bounded by ``close_timeout``.

The ``WebSocket`` creates one per connection and hands it only what it needs: the state
machine, the server's ``receive``, and its own public ``close`` and ``send_denial_response``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from ._counters import TALLY_KEY, note_rejection
from ._groups import only_cancelled, open_owned_nursery, raise_unwrapped
from ._pump import ReceivePump
from ._states import CONNECTED, CONNECTING, DISCONNECTED, ConnectionState
from ._types import ASGIApp, Receive, Scope, Send
from .exceptions import InvalidJSON, WebSocketDisconnect, WebSocketDisconnected, WebSocketException

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["GOING_AWAY_KEY", "Lifecycle", "Settings", "close_for"]

GOING_AWAY_KEY: Final = "trio_asgi_ws.going_away"
"""Scope key of a ``trio.Event`` the server sets when it stops: cancelled handlers close with 1001."""

NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
INVALID_PAYLOAD: Final = 1007
POLICY_VIOLATION: Final = 1008
INTERNAL_ERROR: Final = 1011


@dataclass(frozen=True, slots=True)
class Settings:
    """A WebSocket's limits and waits (see ``WebSocket`` for what each one means)."""

    max_buffered_messages: int = 64
    max_buffered_bytes: int = 1024 * 1024
    takeover_delay: float = 0.05
    close_timeout: float = 5.0
    drain_timeout: float = 5.0


def close_for(error: BaseException | None, *, overflowed: bool, going_away: bool) -> tuple[int, str]:
    """The close code and reason for a handler that ended with ``error`` (None: returned).

    A receive-buffer overflow wins (1008: the client must learn its messages were not read); a
    ``WebSocketException`` asks for its own; ``InvalidJSON`` is the client's fault (1007); a
    return, the client leaving or a cancellation is a normal close (1000), or 1001 when the
    server is stopping; anything else is a server error (1011).
    """
    if overflowed:
        return POLICY_VIOLATION, "receive buffer full"
    if isinstance(error, WebSocketException):
        return error.code, error.reason
    if isinstance(error, InvalidJSON):
        return INVALID_PAYLOAD, "invalid JSON"
    if error is None or isinstance(error, WebSocketDisconnect):
        return NORMAL_CLOSURE, ""
    if only_cancelled(error):
        return (GOING_AWAY, "server shutting down") if going_away else (NORMAL_CLOSURE, "")
    return INTERNAL_ERROR, ""


class Lifecycle:
    """The ending of one connection's handler; see the module docstring."""

    __slots__ = (
        "_block_scope",
        "_close",
        "_deny",
        "_in_receive",
        "_owned",
        "_receive",
        "_scope",
        "_states",
        "overflowed",
        "pump",
        "settings",
    )

    def __init__(
        self,
        scope: Scope,
        states: ConnectionState,
        receive: Receive,
        *,
        in_receive: Callable[[], bool],
        close: Callable[[int, str], Awaitable[None]],
        deny: Callable[[ASGIApp], Awaitable[None]],
        settings: Settings,
    ) -> None:
        self._scope = scope
        self._states = states
        self._receive = receive
        self._in_receive = in_receive
        self._close = close
        self._deny = deny
        self.settings = settings
        self.pump: ReceivePump | None = None
        """The live block's pump, None outside ``async with websocket:``."""
        self.overflowed = False
        self._owned: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None
        self._block_scope: trio.CancelScope | None = None

    # -- the structured block -----------------------------------------------------------------

    async def enter(self) -> None:
        """Open the block's own nursery and give it to a new pump; the limits are checked here.

        The pump registers with the run's watcher once the connection is accepted (now, or at
        ``accept()``); no task is started until the handler stays away from ``receive()``.
        """
        if self._owned is not None:
            raise RuntimeError("this WebSocket is already inside an `async with` block")
        if self._states.client is DISCONNECTED:
            raise WebSocketDisconnected("Cannot enter structured mode after a disconnect.")
        settings = self.settings
        pump = ReceivePump(
            self._receive,
            handler_in_receive=self._in_receive,
            on_disconnect=self._states.record_disconnect,
            on_gone=self.cancel_block,
            on_overflow=self._overflow,
            max_messages=settings.max_buffered_messages,
            max_bytes=settings.max_buffered_bytes,
            takeover_delay=settings.takeover_delay,
            linger=settings.drain_timeout,
            tally=self._scope.get(TALLY_KEY),
        )
        owned = open_owned_nursery()
        nursery = await owned.__aenter__()
        self._owned, self._block_scope, self.pump = owned, nursery.cancel_scope, pump
        pump.attach(nursery, self._scope.get("path"))
        if self._states.application is CONNECTED:
            pump.start()

    async def exit(self, exc: BaseException | None) -> bool:
        """End the block: stop the pump, close as ``close_for`` says, then decide what escapes.

        The client leaving (``WebSocketDisconnect`` from this socket) and a ``WebSocketException``
        (it asked for the close just sent) end the block quietly; a lone error escapes as itself,
        never wrapped in an ``ExceptionGroup``.
        """
        assert self._owned is not None
        assert self.pump is not None
        self.pump.stop()  # no reader starts from here on: the watcher lets go of this connection
        owned, self._owned = self._owned, None  # leaving it cancels the reader, the body having ended
        failure: BaseException | None = None
        try:
            tb = exc.__traceback__ if exc is not None else None  # contextlib sets it on the error
            suppressed = bool(await owned.__aexit__(type(exc) if exc is not None else None, exc, tb))
            if not suppressed:
                failure = exc
        except BaseException as raised:
            suppressed, failure = False, raised
        finally:
            self._block_scope = self.pump = None
        self._states.client_gone()
        await self.finish(failure)
        if failure is None:
            return suppressed
        if isinstance(failure, WebSocketDisconnect) and self._states.disconnect is not None:
            return True
        if isinstance(failure, WebSocketException):
            return True
        if failure is exc:
            return False
        raise failure

    def cancel_block(self) -> None:
        """End the block's body (the client left, or a send found it gone); no-op outside one.

        The pump stops watching too: nothing is left for a reader to find.
        """
        if self._block_scope is not None:
            self._block_scope.cancel()
        if self.pump is not None:
            self.pump.stop()

    def _overflow(self) -> None:
        self.overflowed = True
        tally = self._scope.get(TALLY_KEY)
        if tally is not None:
            tally.receive_overflows += 1
        self.cancel_block()

    # -- the plain mode -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def plain_block(self) -> AsyncIterator[None]:
        """Run a handler without a pump and close as ``close_for`` says when it ends."""
        try:
            yield
        except BaseException as error:
            await self.finish(error)
            raise
        await self.finish(None)

    # -- the end ------------------------------------------------------------------------------

    def close_for(self, error: BaseException | None) -> tuple[int, str]:
        """The close code and reason for this connection's handler ending with ``error``."""
        going_away = self._scope.get(GOING_AWAY_KEY)
        return close_for(
            error, overflowed=self.overflowed, going_away=going_away is not None and going_away.is_set()
        )

    @property
    def disconnect_code(self) -> int | None:
        """The client's close code once any task has seen it leave (1005: it gave none)."""
        disconnect = self._states.disconnect
        return None if disconnect is None else int(disconnect.get("code") or 1005)

    async def finish(self, error: BaseException | None) -> None:
        """Close if still open as ``error`` calls for, and read until the client's close.

        Before accept an unexpected error is answered with HTTP 500 (when the server supports
        denial responses), anything else with a plain close (HTTP 403).  After accept the reading
        runs *while* the close is sent: hypercorn's send path can itself wait for room in its
        full receive queue (it queues the disconnect there when it finds the peer gone), and
        only a reader makes that room.  Bounded by ``close_timeout``; shielded from outside
        cancellation, so cleanup always happens; a client already gone is not an error here.
        """
        code, reason = self.close_for(error)
        states = self._states
        with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
            if states.application is CONNECTING:
                denials = "websocket.http.response" in self._scope.get("extensions", {})
                with contextlib.suppress(WebSocketDisconnect):  # the client left mid-handshake
                    if code == INTERNAL_ERROR:
                        note_rejection(self._scope, "error")
                    if code == INTERNAL_ERROR and denials:
                        await self._deny(_internal_error_response)
                    else:
                        await self._close(code, reason)
                return
            if states.rejected:  # no WebSocket was opened: nothing to close, no disconnect to wait for
                return
            try:
                async with trio.open_nursery() as nursery:
                    if states.client is CONNECTED and states.disconnect is None:
                        nursery.start_soon(self._discard_until_disconnect)
                    if states.application is CONNECTED:
                        with contextlib.suppress(WebSocketDisconnect):  # gone already
                            await self._close(code, reason)
            except BaseExceptionGroup as group:
                raise_unwrapped(group)

    async def _discard_until_disconnect(self) -> None:
        """Read and drop what the client still sends, until its disconnect arrives."""
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self._states.record_disconnect(message)
                self._states.client_gone()
                return


async def _internal_error_response(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"Internal Server Error"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "websocket.http.response.start", "status": 500, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
