"""The ``WebSocket`` connection: Starlette's API and state machine, plus a Trio structured mode.

Exceptions raised by this module, one type per situation::

    Exception
    ├── WebSocketDisconnect          the client has gone (.code, .reason); ends iter_* loops
    ├── WebSocketException           raised by a handler to close with (.code, .reason)
    ├── RuntimeError
    │   └── WebSocketDisconnected    the socket was used after a disconnect or our own close
    ├── TypeError
    │   └── FrameTypeError           receive_text() got a binary frame, or the reverse
    └── ValueError
        └── json.JSONDecodeError
            └── InvalidJSON          receive_json() got a frame that is not JSON: bad syntax,
                                     nesting too deep, or (binary) not UTF-8; escaping a
                                     structured block or a routed handler, it closes with 1007

A second task calling ``receive()`` while another is waiting in it gets ``trio.BusyResourceError``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

from ._groups import only_cancelled, raise_unwrapped, unwrapped
from ._pump import ReceivePump
from ._types import ASGIApp, Message, Receive, Scope, Send
from .datastructures import URL, Address, Headers, QueryParams, State

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

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
_SEND_FAILURES = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.BusyResourceError,
)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_BYTES = re.compile(rb"[\r\n\x00]")
_RESERVED_ACCEPT_HEADERS = {
    b"sec-websocket-protocol": "pass the subprotocol as accept(subprotocol=...) instead",
    b"sec-websocket-accept": "the server computes it from the client's key",
}
_MODE_ERROR = 'The "mode" argument should be "text" or "binary".'
_NOT_ACCEPTED = 'WebSocket is not connected. Need to call "accept" first.'


class WebSocketState(enum.Enum):
    """Where one side of the connection is: ``client_state`` and ``application_state``."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2
    RESPONSE = 3


class WebSocketDisconnect(Exception):
    """The client went away; ``code`` and ``reason`` are what the server reported."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""


class WebSocketDisconnected(RuntimeError):
    """Raised when attempting to use a WebSocket after it has been disconnected or closed."""


class FrameTypeError(TypeError):
    """A receive method got the other kind of frame (text where bytes were expected, or back)."""

    def __init__(self, expected: str, received: str) -> None:
        super().__init__(
            f'Expected a {expected} frame ("{_FIELD[expected]}" in the "websocket.receive" '
            f'message), but got a {received} frame ("{_FIELD[received]}")'
        )
        self.expected = expected
        self.received = received


_FIELD = {"text": "text", "binary": "bytes"}


class InvalidJSON(json.JSONDecodeError):
    """A frame given to ``receive_json`` is not a JSON document; ``msg`` says why.

    The client's fault, not the server's: leaving a structured block or a routed handler with it
    closes the connection with **1007 Invalid frame payload data**, and the router logs it on one
    line without a traceback.  A subclass of ``json.JSONDecodeError``, so Starlette code that
    catches that still does.
    """


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


class WebSocketException(Exception):
    """Raise in a handler to close with ``code`` and ``reason`` (before accept: reject)."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class WebSocketClose:
    """An ASGI app that closes the WebSocket: rejects it before accept, ends it after."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class WebSocket(Mapping[str, Any]):
    """One WebSocket connection, usable in two modes.

    *Plain*: every call goes to the ASGI callables with Starlette's state machine, so Starlette
    code runs unchanged.  *Structured*: ``async with websocket:`` runs a receive pump in a
    nursery for the duration of the block, so that:

    - a client disconnect is seen even while the handler only sends: it sets ``disconnected``,
      makes sends and later ``receive_*`` calls raise ``WebSocketDisconnect``, ends ``iter_*``
      loops, and cancels the block's body (a send-only loop stops within about
      ``2 * takeover_delay``; see ``_pump.py`` for the rare worse case).  Messages the client
      sent before leaving are still delivered to a handler that keeps reading; the body is
      cancelled once it reaches the disconnect, or once it has stayed out of ``receive()`` for
      ``close_timeout`` seconds;
    - messages that arrive while the handler is away from ``receive()`` wait in a buffer bounded
      by ``max_buffered_messages`` and ``max_buffered_bytes``; when it overflows, the block is
      cancelled and the connection closed with 1008, so the client learns it was too fast;
    - leaving the block closes the socket if it is still open (1000, or 1011 when the block
      raised) and waits up to ``close_timeout`` seconds for the client's close, reading and
      discarding what the client still sends, so the server's queue can never wedge the
      connection.  ``WebSocketDisconnect`` from this socket and the pump's own cancellation end
      the block quietly; any other exception propagates unwrapped (never as an ExceptionGroup).
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
    ) -> None:
        if scope.get("type") != "websocket":
            raise ValueError(f'WebSocket needs a "websocket" scope, got type {scope.get("type")!r}')
        self.scope = scope
        self._receive = receive or _no_receive
        self._send = send or _no_send
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING
        self.disconnected = trio.Event()
        """Set once the client is known to have gone (by the handler's receive or the pump)."""
        self._max_buffered_messages = max_buffered_messages
        self._max_buffered_bytes = max_buffered_bytes
        self._takeover_delay = takeover_delay
        self._close_timeout = close_timeout
        self._live_pump: ReceivePump | None = None  # set inside the `async with` block
        self._receiving = False
        self._disconnect: Message | None = None
        self._sending = False
        self._senders_waiting = 0
        self._send_turn = trio.lowlevel.ParkingLot()
        self._pump: ReceivePump | None = None
        self._nursery_manager: Any = None
        self._block_scope: trio.CancelScope | None = None
        self._overflowed = False
        self._rejected = False  # the handshake was answered with a close or an HTTP response

    # -- mapping over the scope, and the request data ---------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def app(self) -> Any:
        return self.scope["app"]

    @property
    def url(self) -> URL:
        if not hasattr(self, "_url"):
            self._url = URL(scope=self.scope)
        return self._url

    @property
    def headers(self) -> Headers:
        if not hasattr(self, "_headers"):
            self._headers = Headers(scope=self.scope)
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if not hasattr(self, "_query_params"):
            self._query_params = QueryParams(self.scope["query_string"])
        return self._query_params

    @property
    def path_params(self) -> dict[str, Any]:
        return self.scope.get("path_params", {})  # type: ignore[no-any-return]

    @property
    def cookies(self) -> dict[str, str]:
        if not hasattr(self, "_cookies"):
            self._cookies = _parse_cookies(self.headers.getlist("cookie"))
        return self._cookies

    @property
    def client(self) -> Address | None:
        host_port = self.scope.get("client")
        return Address(*host_port) if host_port is not None else None

    @property
    def state(self) -> State:
        if not hasattr(self, "_state"):
            self._state = State(self.scope.setdefault("state", {}))
        return self._state

    # -- raw ASGI messages --------------------------------------------------------------------

    async def receive(self) -> Message:
        """Receive one ASGI message, enforcing Starlette's state transitions."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already waiting in receive() on this WebSocket")
        if self.client_state is WebSocketState.CONNECTED:
            pump = self._live_pump
            self._receiving = True
            try:
                if pump is None:
                    message = await self._receive()
                elif pump.relaying:
                    message = await pump.receive_relayed()
                else:
                    message = await self._receive()  # the fast path: the pump just watches
            finally:
                self._receiving = False
                if pump is not None:
                    pump.handler_left()
            if message["type"] == "websocket.receive":
                return message
            return self._received_other(message)
        if self.client_state is WebSocketState.DISCONNECTED:
            raise WebSocketDisconnected('Cannot call "receive" once a disconnect message has been received.')
        self._receiving = True
        try:
            message = await self._receive()
        finally:
            self._receiving = False
        message_type = message["type"]
        if message_type != "websocket.connect":
            raise RuntimeError(f'Expected ASGI message "websocket.connect", but got {message_type!r}')
        self.client_state = WebSocketState.CONNECTED
        return message

    def _received_other(self, message: Message) -> Message:
        """A connected socket received something other than data: a disconnect, or an error."""
        message_type = message["type"]
        if message_type == "websocket.disconnect":
            self.client_state = WebSocketState.DISCONNECTED
            self._observe_disconnect(message)
            return message
        raise RuntimeError(
            f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {message_type!r}'
        )

    async def send(self, message: Message) -> None:
        """Send one ASGI message, enforcing Starlette's state transitions."""
        state = self.application_state
        message_type = message["type"]
        if state is WebSocketState.CONNECTED:
            if message_type == "websocket.send":
                if self._disconnect is not None:
                    raise WebSocketDisconnect(
                        self._disconnect.get("code", 1005), self._disconnect.get("reason")
                    )
            elif message_type == "websocket.close":
                self.application_state = WebSocketState.DISCONNECTED
                if self._disconnect is not None:
                    return  # the client is gone: there is nobody to send a close frame to
            else:
                raise RuntimeError(
                    f'Expected ASGI message "websocket.send" or "websocket.close", but got {message_type!r}'
                )
            try:
                if self._sending:  # the send lock, inline: this is every message's path
                    await self._wait_for_turn()
                else:
                    self._sending = True
                try:
                    await self._send(message)
                finally:
                    if not (self._senders_waiting and self._send_turn.unpark()):
                        self._sending = False
            except _SEND_FAILURES:
                self.application_state = WebSocketState.DISCONNECTED
                self._observe_disconnect({"type": "websocket.disconnect", "code": 1006})
                raise WebSocketDisconnect(code=1006) from None
        elif state is WebSocketState.CONNECTING:
            if message_type == "websocket.accept":
                self.application_state = WebSocketState.CONNECTED
            elif message_type == "websocket.close":
                self.application_state = WebSocketState.DISCONNECTED
                self._rejected = True
            elif message_type == "websocket.http.response.start":
                self.application_state = WebSocketState.RESPONSE
                self._rejected = True
            else:
                raise RuntimeError(
                    'Expected ASGI message "websocket.accept", "websocket.close" or '
                    f'"websocket.http.response.start", but got {message_type!r}'
                )
            await self._send_serialised(message)
        elif state is WebSocketState.RESPONSE:
            if message_type != "websocket.http.response.body":
                raise RuntimeError(
                    f'Expected ASGI message "websocket.http.response.body", but got {message_type!r}'
                )
            if not message.get("more_body", False):
                self.application_state = WebSocketState.DISCONNECTED
            await self._send_serialised(message)
        else:
            raise WebSocketDisconnected('Cannot call "send" once a close message has been sent.')

    async def _send_serialised(self, message: Message) -> None:
        """Let one task at a time into the server's send(); others queue in FIFO order."""
        if self._sending:
            await self._wait_for_turn()
        else:
            self._sending = True
        try:
            await self._send(message)
        finally:
            if not (self._senders_waiting and self._send_turn.unpark()):
                self._sending = False

    async def _wait_for_turn(self) -> None:
        """Queue behind the task that is sending; return holding the turn it hands over."""
        self._senders_waiting += 1
        try:
            await self._send_turn.park()
        finally:
            self._senders_waiting -= 1

    # -- the handshake ------------------------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Accept the connection; bad arguments raise before anything reaches the server."""
        checked_headers = self._checked_accept_headers(headers)
        self._check_subprotocol(subprotocol)
        if self.client_state is WebSocketState.CONNECTING:
            await self.receive()
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": checked_headers})
        if self._live_pump is not None:
            self._live_pump.start()

    def _check_subprotocol(self, subprotocol: str | None) -> None:
        if subprotocol is None:
            return
        if not isinstance(subprotocol, str):
            raise TypeError(f"subprotocol must be a str or None, got {type(subprotocol).__name__}")
        offered = self.scope.get("subprotocols", [])
        if subprotocol not in offered:
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client (it offered {list(offered)!r})"
            )

    @staticmethod
    def _checked_accept_headers(
        headers: Iterable[tuple[bytes, bytes]] | None,
    ) -> list[tuple[bytes, bytes]]:
        checked: list[tuple[bytes, bytes]] = []
        for pair in headers or ():
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise TypeError(f"accept headers must be (name, value) pairs, got {pair!r}")
            name, value = pair
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise TypeError(
                    f"accept header names and values must be bytes, got {pair!r}; "
                    'encode them, e.g. (b"x-name", b"value")'
                )
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}: not an HTTP token")
            if _BAD_VALUE_BYTES.search(value):
                raise ValueError(f"invalid value for header {name!r}: contains CR, LF or NUL")
            why = _RESERVED_ACCEPT_HEADERS.get(name.lower())
            if why is not None:
                raise ValueError(f"accept header {name!r} is not allowed: {why}")
            checked.append((name.lower(), value))
        return checked

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection (before accept: reject it, which hypercorn answers with 403)."""
        await self.send({"type": "websocket.close", "code": code, "reason": reason or ""})

    async def send_denial_response(self, response: ASGIApp) -> None:
        """Reject the handshake with an HTTP response: any ASGI HTTP response callable works."""
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
        if self.application_state is not WebSocketState.CONNECTED:
            raise WebSocketDisconnected(_NOT_ACCEPTED)
        if self.client_state is WebSocketState.DISCONNECTED and self._disconnect is not None:
            raise self._disconnect_error()
        message = await self.receive()
        value = message.get(field)
        if value is None:  # the other kind of frame, or the client left
            if message["type"] == "websocket.disconnect":
                raise self._disconnect_error()
            raise FrameTypeError(*(("text", "binary") if field == "text" else ("binary", "text")))
        return value

    def _disconnect_error(self) -> WebSocketDisconnect:
        message = self._disconnect or {}
        return WebSocketDisconnect(message.get("code", 1005), message.get("reason"))

    async def receive_text(self) -> str:
        """Receive a text frame; a binary frame raises ``FrameTypeError``."""
        return await self._receive_field("text")  # type: ignore[no-any-return]

    async def receive_bytes(self) -> bytes:
        """Receive a binary frame; a text frame raises ``FrameTypeError``."""
        return await self._receive_field("bytes")  # type: ignore[no-any-return]

    async def receive_json(self, mode: str = "text") -> Any:
        """Receive a JSON document from a text frame (or a binary one with ``mode="binary"``).

        A frame that is not JSON raises ``InvalidJSON`` (a ``ValueError``); the frame is consumed.
        """
        _check_mode(mode)
        if mode == "text":
            return _parse_json(await self._receive_field("text"))
        return _parse_json(_decode_utf8(await self._receive_field("bytes")))

    def iter_text(self) -> _MessageIterator[str]:
        """``async for`` over text frames until the client disconnects."""
        return _MessageIterator(self.receive_text)

    def iter_bytes(self) -> _MessageIterator[bytes]:
        """``async for`` over binary frames until the client disconnects."""
        return _MessageIterator(self.receive_bytes)

    def iter_json(self) -> _MessageIterator[Any]:
        """``async for`` over JSON text frames until the client disconnects (``InvalidJSON`` ends it)."""
        return _MessageIterator(self.receive_json)

    async def send_text(self, data: str) -> None:
        """Send a text frame."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, got {type(data).__name__}")
        await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self.send({"type": "websocket.send", "bytes": bytes(data)})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send compact, non-ASCII-escaped JSON in a text frame (or binary with mode="binary")."""
        _check_mode(mode)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "text":
            await self.send({"type": "websocket.send", "text": text})
        else:
            await self.send({"type": "websocket.send", "bytes": text.encode("utf-8")})

    # -- disconnect bookkeeping ---------------------------------------------------------------

    def _record_disconnect(self, message: Message) -> None:
        if self._disconnect is None:
            self._disconnect = message
            self.disconnected.set()

    def _cancel_block(self) -> None:
        if self._block_scope is not None:
            self._block_scope.cancel()

    def _observe_disconnect(self, message: Message) -> None:
        """The handler itself received the disconnect: record it and end the block."""
        self._record_disconnect(message)
        self._cancel_block()

    def _observe_overflow(self) -> None:
        self._overflowed = True
        self._cancel_block()

    # -- structured mode ----------------------------------------------------------------------

    async def __aenter__(self) -> WebSocket:
        if self._pump is not None:
            raise RuntimeError("this WebSocket is already inside an `async with` block")
        if self.client_state is WebSocketState.DISCONNECTED:
            raise WebSocketDisconnected("Cannot enter structured mode after a disconnect.")
        self._pump = ReceivePump(
            self._receive,
            handler_in_receive=lambda: self._receiving,
            on_disconnect=self._record_disconnect,
            on_gone=self._cancel_block,
            on_overflow=self._observe_overflow,
            max_messages=self._max_buffered_messages,
            max_bytes=self._max_buffered_bytes,
            takeover_delay=self._takeover_delay,
            linger=self._close_timeout,
        )
        self._live_pump = self._pump
        self._nursery_manager = trio.open_nursery()
        nursery: trio.Nursery = await self._nursery_manager.__aenter__()
        self._block_scope = nursery.cancel_scope
        nursery.start_soon(self._pump.run, name=f"trio_asgi_ws pump {self.scope.get('path')}")
        if self.application_state is WebSocketState.CONNECTED:
            self._pump.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._block_scope is not None
        self._block_scope.cancel()  # stop the pump; the body has finished
        error: BaseException | None = None
        suppressed = False
        try:
            suppressed = bool(await self._nursery_manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            error = unwrapped(group)
            if error is group:
                raise
        finally:
            self._block_scope = None
            self._nursery_manager = None
            self._live_pump = None
        if self._disconnect is not None:
            self.client_state = WebSocketState.DISCONNECTED
        await self._finish(exc)
        if isinstance(error, WebSocketDisconnect) and self._disconnect is not None:
            return True
        if isinstance(error, WebSocketException):
            return True  # it asked for the close we just sent
        if error is not None:
            raise error
        return suppressed

    def _exit_close(self, error: BaseException | None) -> tuple[int, str]:
        """The close code and reason a block (or routed handler) ending with ``error`` calls for."""
        if self._overflowed:
            return 1008, "receive buffer full"
        if isinstance(error, WebSocketException):
            return error.code, error.reason
        if isinstance(error, InvalidJSON):
            return 1007, "invalid JSON"
        if error is None or isinstance(error, trio.Cancelled | WebSocketDisconnect) or only_cancelled(error):
            return 1000, ""
        return 1011, ""

    async def _finish(self, error: BaseException | None) -> None:
        """Close if still open as ``error`` calls for, and read until the client's close.

        Before accept an unexpected error is answered with HTTP 500 (when the server supports
        denial responses), anything else with a plain close (HTTP 403).  After accept the reading
        runs *while* the close is sent: hypercorn's send path can itself wait for room in its
        full receive queue (it queues the disconnect there when it finds the peer gone), and
        only a reader makes that room.  Bounded by ``close_timeout``; shielded from outside
        cancellation, so cleanup always happens.
        """
        code, reason = self._exit_close(error)
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            if self.application_state is WebSocketState.CONNECTING:
                if code == 1011 and "websocket.http.response" in self.scope.get("extensions", {}):
                    await self.send_denial_response(_internal_error_response)
                else:
                    await self.close(code, reason)
                return
            if self._rejected:  # no WebSocket was opened: nothing to close, no disconnect to wait for
                return
            try:
                async with trio.open_nursery() as nursery:
                    if self.client_state is WebSocketState.CONNECTED and self._disconnect is None:
                        nursery.start_soon(self._discard_until_disconnect)
                    if self.application_state is WebSocketState.CONNECTED:
                        with contextlib.suppress(WebSocketDisconnect):  # gone already
                            await self.close(code, reason)
            except BaseExceptionGroup as group:
                raise_unwrapped(group)

    async def _discard_until_disconnect(self) -> None:
        """Read and drop what the client still sends, until its disconnect arrives."""
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.client_state = WebSocketState.DISCONNECTED
                self._observe_disconnect(message)
                return


async def _internal_error_response(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"Internal Server Error"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "websocket.http.response.start", "status": 500, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _parse_cookies(cookie_headers: list[str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in cookie_headers:
        for chunk in header.split(";"):
            key, _, value = chunk.partition("=") if "=" in chunk else ("", "", chunk)
            key, value = key.strip(), value.strip()
            if key or value:
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                cookies[key] = value
    return cookies
