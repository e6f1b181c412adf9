"""The ``WebSocket`` connection: Starlette's API and state machine, plus a Trio structured mode.

The parts live in modules of their own: the scope API in ``requests.HTTPConnection``, the state
table in ``_states``, the exception tree in ``exceptions``, accept's argument checks in
``_handshake``, and the structured block with the exit policy in ``_lifecycle`` (over the receive
pump of ``_pump``).  This module joins them into the class handlers use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import trio

from ._handshake import check_subprotocol, checked_accept_headers
from ._lifecycle import Lifecycle, Settings
from ._pump import ReceivePump
from ._send_turns import SendTurns
from ._states import CONNECTED, CONNECTING, DISCONNECTED, ConnectionState, WebSocketState
from ._types import ASGIApp, Message, Receive, Scope, Send
from .exceptions import (
    FrameTypeError,
    InvalidJSON,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketException,
)
from .requests import HTTPConnection

__all__ = [
    "FrameTypeError",
    "InvalidJSON",
    "WebSocket",
    "WebSocketClose",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketException",
    "WebSocketState",
]

_T = TypeVar("_T")

# Errors a server's send() raises once the peer is gone: OSError under ASGI spec 2.4, trio stream
# errors from hypercorn's own close path racing ours.
_SEND_FAILURES: Final = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.BusyResourceError,
)
_MODE_ERROR: Final = 'The "mode" argument should be "text" or "binary".'
_NOT_ACCEPTED: Final = 'WebSocket is not connected. Need to call "accept" first.'


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidJSON(error.msg, error.doc, error.pos) from None
    except RecursionError:  # the C scanner recurses per nesting level
        raise InvalidJSON("Nested too deeply", text, 0) from None


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJSON(
            f"Invalid UTF-8 ({error.reason})", data.decode("utf-8", "replace"), error.start
        ) from None


class WebSocketClose:
    """An ASGI app that closes the WebSocket: rejects it before accept, ends it after."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send ``websocket.close`` with this code and reason (before accept: HTTP 403 under
        hypercorn); it neither receives nor waits for the client's answer."""
        await send({"type": "websocket.close", "code": self.code, "reason": self.reason})


async def _no_receive() -> Message:
    raise RuntimeError("Receive channel has not been made available")


async def _no_send(message: Message) -> None:
    raise RuntimeError("Send channel has not been made available")


def _check_mode(mode: str) -> None:
    if mode not in ("text", "binary"):
        raise RuntimeError(_MODE_ERROR)


class _MessageIterator(Generic[_T]):
    """``async for`` over one kind of message; ends quietly when the client disconnects."""

    def __init__(self, receive: Any) -> None:
        self._receive = receive

    def __aiter__(self) -> _MessageIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            return await self._receive()  # type: ignore[no-any-return]
        except WebSocketDisconnect:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Present for parity with async generators; there is nothing to release."""


class WebSocket(HTTPConnection):
    """One WebSocket connection, usable in two modes.

    *Plain*: every call goes to the ASGI callables with Starlette's state machine, so Starlette
    code runs unchanged.  *Structured*: ``async with websocket:`` opens a nursery for the
    duration of the block, in which the receive pump reads for the handler while it stays away
    from ``receive()``, so that:

    - a client disconnect is seen even while the handler only sends: it sets ``disconnected``,
      makes sends and later ``receive_*`` calls raise ``WebSocketDisconnect``, ends ``iter_*``
      loops, and cancels the block's body.  A handler that keeps sending (at least every ``s``
      seconds) without receiving gets the pump as its reader within ``takeover_delay + 2 * s``
      of leaving ``receive()``; any handler within ``LONGEST_LOOK_INTERVAL + takeover_delay``
      (16.05 s by default, 2.05 s after a look found it away; see ``_pump.py``); from then on a
      disconnect is seen at once.  Messages the client
      sent before leaving are still delivered to a handler that keeps reading; the body is
      cancelled once it reaches the disconnect, or once it has stayed out of ``receive()`` for
      ``drain_timeout`` seconds;
    - messages that arrive while the handler is away from ``receive()`` wait in a buffer bounded
      by ``max_buffered_messages`` and ``max_buffered_bytes``; when it overflows, the block is
      cancelled and the connection closed with 1008, so the client learns it was too fast;
    - leaving the block closes the socket if it is still open (1000, 1001 when the server is
      stopping, 1011 when the block raised) and waits up to ``close_timeout`` seconds for the
      client's close, reading and discarding what the client still sends, so the server's
      queue can never wedge the connection.  ``WebSocketDisconnect`` from this socket and the
      pump's own cancellation end the block quietly; any other exception propagates unwrapped
      (never as an ExceptionGroup).

    The pump assumes that cancelling the server's ``receive()`` loses no message (true of trio
    memory channels, which hypercorn's trio worker and the test client use); see
    docs/websocket.md for what happens on a server where that does not hold.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive | None = None,
        send: Send | None = None,
        *,
        max_buffered_messages: int = 64,
        max_buffered_bytes: int = 1024 * 1024,
        takeover_delay: float = 0.05,
        close_timeout: float = 5.0,
        drain_timeout: float = 5.0,
    ) -> None:
        if scope.get("type") != "websocket":
            raise ValueError(f'WebSocket needs a "websocket" scope, got type {scope.get("type")!r}')
        super().__init__(scope)
        self._receive = receive or _no_receive
        self._send = send or _no_send
        self._states = ConnectionState()
        self.disconnected = self._states.disconnected
        """Set once the client is known to have gone (by a receive, the pump, or a failed send)."""
        self._receiving = False
        self._pump: ReceivePump | None = None  # the block's pump, inside ``async with`` only
        self._send_turns = SendTurns()
        self._lifecycle = Lifecycle(
            scope,
            self._states,
            self._receive,
            in_receive=self._in_receive,
            close=self.close,
            deny=self.send_denial_response,
            settings=Settings(
                max_buffered_messages, max_buffered_bytes, takeover_delay, close_timeout, drain_timeout
            ),
        )

    @property
    def client_state(self) -> WebSocketState:
        """The client's side: CONNECTING, CONNECTED once it connected, DISCONNECTED once it left."""
        return self._states.client

    @property
    def application_state(self) -> WebSocketState:
        """Our side: CONNECTING, CONNECTED after accept, RESPONSE mid-denial, DISCONNECTED after close."""
        return self._states.application

    def _in_receive(self) -> bool:
        return self._receiving

    # -- raw ASGI messages --------------------------------------------------------------------

    async def receive(self) -> Message:
        """Receive one ASGI message, enforcing Starlette's state transitions.

        Waits for the client's next message (or, inside a block, takes it from the pump's
        buffer).  Safe to cancel: the message is not lost, the next call gets it.  A disconnect
        is returned as a message (and ends the structured block); a second task calling while
        one waits gets ``trio.BusyResourceError``.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already waiting in receive() on this WebSocket")
        states = self._states
        if states.client is not CONNECTED:
            states.check_receive()
            self._receiving = True
            try:
                message = await self._receive()
            finally:
                self._receiving = False
            states.received(message)
            return message
        pump = self._pump
        self._receiving = True
        try:
            if pump is not None and pump.relaying:
                message = await pump.receive_relayed()
            else:
                message = await self._receive()  # the fast path: the pump, if any, just watches
        finally:
            self._receiving = False
            if pump is not None:
                pump.departures += 1  # the handler leaves receive(): all the pump needs to know
        if message["type"] == "websocket.receive":
            return message
        states.received(message)  # a disconnect; anything else raises RuntimeError
        self._lifecycle.cancel_block()
        return message

    async def send(self, message: Message) -> None:
        """Send one ASGI message, enforcing Starlette's state transitions.

        Checked before it waits: a message the state does not allow raises at once.  Tasks
        sending at the same time take turns in FIFO order; cancelled while waiting for its turn,
        nothing is sent and nothing changes.  Once handed to the server the message counts as
        sent.  A server ``send()`` that finds the client gone raises ``WebSocketDisconnect``
        (1006) here, and ends the structured block.  ``websocket.close`` after the client is
        known to have gone is a quiet no-op.
        """
        states = self._states
        # The state table's busiest row (data while connected) without the lookup:
        hot = message["type"] == "websocket.send" and states.application is CONNECTED
        after = CONNECTED if hot and states.disconnect is None else states.check_send(message)
        pump = self._pump
        if pump is not None and not self._receiving:  # a handler sending while away from receive()
            if pump.departure_sent != pump.departures:
                pump.departure_sent = pump.departures  # its first send since it left: noted only
            else:
                pump.handler_sent()
        turns = self._send_turns
        waited = turns.busy
        if waited:
            await turns.wait()  # cancelled here: nothing was sent, nothing changed
        else:
            turns.busy = True
        try:
            if waited:  # what went first may have changed the state
                after = states.check_send(message)
            if after is not states.application:
                close_to_nobody = states.application is CONNECTED and states.disconnect is not None
                states.sent(after)
                if close_to_nobody:  # the client is gone: there is nobody to send a close frame to
                    return
            try:
                await self._send(message)
            except _SEND_FAILURES:
                states.send_failed()
                self._lifecycle.cancel_block()
                raise WebSocketDisconnect(code=1006) from None
        finally:
            turns.done()

    # -- the handshake ------------------------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Accept the connection; bad arguments raise before anything reaches the server.

        ``headers`` are ``(name, value)`` byte pairs added to the handshake response; their names
        are sent lowercased (``b"X-Token"`` goes out as ``b"x-token"``), as the ASGI spec asks.

        Receives the client's ``websocket.connect`` first if nobody has.  Cancelling it before
        the accept is handed to the server leaves the connection unanswered (the block or router
        then rejects it).
        """
        checked_headers = checked_accept_headers(headers)
        check_subprotocol(self.scope, subprotocol)
        if self._states.client is CONNECTING:
            await self.receive()
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": checked_headers})
        pump = self._lifecycle.pump
        if pump is not None:
            pump.start()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection (before accept: reject it, which hypercorn answers with 403).

        Waits for its turn to send, like ``send``; cancelled while waiting, it sends nothing and
        the socket stays open.  After the client has gone it is a quiet no-op.
        """
        await self.send({"type": "websocket.close", "code": code, "reason": reason or ""})

    async def send_denial_response(self, response: ASGIApp) -> None:
        """Reject the handshake with an HTTP response: any ASGI HTTP response callable works.

        Its messages are sent like ``send``'s (in turn; a client already gone raises
        ``WebSocketDisconnect`` (1006)).  Cancelled part-way, the response is left unfinished and
        the handshake refused; the structured block or the router then sends nothing more.
        """
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            raise RuntimeError("The server doesn't support the Websocket Denial Response extension.")
        await response(self.scope, self.receive, self._send_response_message)

    send_response = send_denial_response

    async def _send_response_message(self, message: Message) -> None:
        message_type = message["type"]
        if message_type.startswith("http.response."):  # a plain ASGI HTTP app
            message = {**message, "type": "websocket." + message_type}
        await self.send(message)

    # -- data ---------------------------------------------------------------------------------

    async def _receive_field(self, field: str) -> Any:
        """The ``"text"`` or ``"bytes"`` of the next data message, checked on the way."""
        states = self._states
        if states.application is not CONNECTED:
            raise WebSocketDisconnected(_NOT_ACCEPTED)
        if states.client is DISCONNECTED and states.disconnect is not None:
            raise states.disconnect_error()
        message = await self.receive()
        value = message.get(field)
        if value is None:  # the other kind of frame, or the client left
            if message["type"] == "websocket.disconnect":
                raise states.disconnect_error()
            raise FrameTypeError(*(("text", "binary") if field == "text" else ("binary", "text")))
        return value

    async def receive_text(self) -> str:
        """Receive a text frame; a binary frame raises ``FrameTypeError``; safe to cancel."""
        return await self._receive_field("text")  # type: ignore[no-any-return]

    async def receive_bytes(self) -> bytes:
        """Receive a binary frame; a text frame raises ``FrameTypeError``; safe to cancel."""
        return await self._receive_field("bytes")  # type: ignore[no-any-return]

    async def receive_json(self, mode: str = "text") -> Any:
        """Receive a JSON document from a text frame (or a binary one with ``mode="binary"``).

        A frame that is not JSON raises ``InvalidJSON`` (a ``ValueError``); the frame is consumed.
        Safe to cancel, like ``receive``.
        """
        _check_mode(mode)
        if mode == "text":
            return _parse_json(await self._receive_field("text"))
        return _parse_json(_decode_utf8(await self._receive_field("bytes")))

    def iter_text(self) -> _MessageIterator[str]:
        """``async for`` over text frames until the client disconnects (cancelling it is safe)."""
        return _MessageIterator(self.receive_text)

    def iter_bytes(self) -> _MessageIterator[bytes]:
        """``async for`` over binary frames until the client disconnects (cancelling it is safe)."""
        return _MessageIterator(self.receive_bytes)

    def iter_json(self) -> _MessageIterator[Any]:
        """``async for`` over JSON text frames until the client disconnects (``InvalidJSON`` ends it)."""
        return _MessageIterator(self.receive_json)

    async def send_text(self, data: str) -> None:
        """Send a text frame (see ``send`` for cancellation and a client that has gone)."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, got {type(data).__name__}")
        await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame (see ``send`` for cancellation and a client that has gone)."""
        if type(data) is not bytes:  # the common case skips the check and the copy
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
            data = bytes(data)
        await self.send({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send compact, non-ASCII-escaped JSON in a text frame (or binary with mode="binary")."""
        _check_mode(mode)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "text":
            await self.send({"type": "websocket.send", "text": text})
        else:
            await self.send({"type": "websocket.send", "bytes": text.encode("utf-8")})

    # -- structured mode ----------------------------------------------------------------------

    async def __aenter__(self) -> WebSocket:
        """Start the receive pump; bad buffer limits raise ``ValueError`` here."""
        await self._lifecycle.enter()
        self._pump = self._lifecycle.pump
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stop the pump, close as the body's ending calls for, wait (bounded) for the client.

        If the socket is still open it is closed: 1000 when the body ended normally or was
        cancelled, 1001 when it was cancelled because ``serve()`` is stopping, 1011 when it
        raised, 1007 for ``InvalidJSON``, a ``WebSocketException``'s own code, 1008 after a
        receive-buffer overflow; a block left before ``accept()`` rejects the handshake.  Then
        it reads and discards what the client still sends until its close arrives, for at most
        ``close_timeout`` seconds, shielded from outside cancellation, so a cancelled block
        still ends the connection cleanly.  ``WebSocketDisconnect`` from this socket, and the
        cancellation of the body on disconnect or overflow, end the block quietly; any other
        exception propagates as itself, never inside an ``ExceptionGroup``.
        """
        self._pump = None
        return await self._lifecycle.exit(exc)


def lifecycle(websocket: WebSocket) -> Lifecycle:
    """The internal interface of ``websocket``'s ending, for the router and ``WebSocketEndpoint``."""
    return websocket._lifecycle
