"""The WebSocket state machine, apart from any I/O: one table per side, and every state write.

Two sides move independently (Starlette's ``client_state`` and ``application_state``):

- the *client* side moves with the messages the application receives;
- the *application* side moves with the messages it sends.

``ConnectionState`` checks a message against the tables before anything is sent or returned,
and commits the move only when the caller says the message has crossed (so a send cancelled
while it waits for its turn changes nothing).  It also keeps the one record of how the client
left (the first ``websocket.disconnect`` seen, by whichever task saw it), which turns later
sends into ``WebSocketDisconnect``.  Error messages are Starlette's, word for word.
"""

from __future__ import annotations

import enum
from typing import Final

import trio

from ._types import Message
from .exceptions import WebSocketDisconnect, WebSocketDisconnected

__all__ = ["ConnectionState", "WebSocketState"]


class WebSocketState(enum.Enum):
    """Where one side of the connection is: ``client_state`` and ``application_state``."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2
    RESPONSE = 3

    # Members are singletons compared by identity: hash them so too, in C, instead of Enum's
    # Python-level hash of the name (the state tables are looked up on every send).
    __hash__ = object.__hash__


CONNECTING, CONNECTED, DISCONNECTED, RESPONSE = WebSocketState

# (state, message type the application sends) -> the application's next state.
_SEND: Final = {
    (CONNECTING, "websocket.accept"): CONNECTED,
    (CONNECTING, "websocket.close"): DISCONNECTED,
    (CONNECTING, "websocket.http.response.start"): RESPONSE,
    (CONNECTED, "websocket.send"): CONNECTED,
    (CONNECTED, "websocket.close"): DISCONNECTED,
    (RESPONSE, "websocket.http.response.body"): RESPONSE,  # DISCONNECTED after the last part
}
# (state, message type the application receives) -> the client's next state.
_RECEIVE: Final = {
    (CONNECTING, "websocket.connect"): CONNECTED,
    (CONNECTED, "websocket.receive"): CONNECTED,
    (CONNECTED, "websocket.disconnect"): DISCONNECTED,
}
_EXPECTED_SENDS: Final = {
    CONNECTING: '"websocket.accept", "websocket.close" or "websocket.http.response.start"',
    CONNECTED: '"websocket.send" or "websocket.close"',
    RESPONSE: '"websocket.http.response.body"',
}
_EXPECTED_RECEIVES: Final = {
    CONNECTING: '"websocket.connect"',
    CONNECTED: '"websocket.receive" or "websocket.disconnect"',
}
SEND_AFTER_CLOSE: Final = 'Cannot call "send" once a close message has been sent.'
RECEIVE_AFTER_DISCONNECT: Final = 'Cannot call "receive" once a disconnect message has been received.'
ABNORMAL_CLOSURE: Final = 1006


class ConnectionState:
    """Both sides' states, the client's disconnect, and whether the handshake was refused."""

    __slots__ = ("application", "client", "disconnect", "disconnected", "rejected")

    def __init__(self) -> None:
        self.client = CONNECTING
        self.application = CONNECTING
        self.disconnect: Message | None = None
        """The client's ``websocket.disconnect`` once any task has seen it, else None."""
        self.disconnected = trio.Event()
        self.rejected = False
        """The handshake was answered with a close or an HTTP response: no WebSocket opened."""

    # -- the application's side ---------------------------------------------------------------

    def check_send(self, message: Message) -> WebSocketState:
        """The state sending ``message`` leads to; raises if it may not be sent now.

        ``websocket.send`` after the client is known to have gone raises ``WebSocketDisconnect``
        with its code; a message after our own close raises ``WebSocketDisconnected``.
        """
        state = self.application
        message_type = message["type"]
        after = _SEND.get((state, message_type))
        if after is None:
            if state is DISCONNECTED:
                raise WebSocketDisconnected(SEND_AFTER_CLOSE)
            raise RuntimeError(f"Expected ASGI message {_EXPECTED_SENDS[state]}, but got {message_type!r}")
        if after is CONNECTED and state is CONNECTED and self.disconnect is not None:
            raise self.disconnect_error()
        if after is RESPONSE and not message.get("more_body", False) and state is RESPONSE:
            return DISCONNECTED
        return after

    def sent(self, after: WebSocketState) -> None:
        """The message ``check_send`` allowed has been handed to the server."""
        if self.application is CONNECTING and after is not CONNECTED:
            self.rejected = True
        self.application = after

    def send_failed(self) -> None:
        """The server's ``send()`` raised: the client is gone (ASGI 2.4 ``OSError``, or a race)."""
        self.application = DISCONNECTED
        self.record_disconnect({"type": "websocket.disconnect", "code": ABNORMAL_CLOSURE})

    # -- the client's side --------------------------------------------------------------------

    def check_receive(self) -> None:
        """Raise ``WebSocketDisconnected`` if the client's disconnect was already received."""
        if self.client is DISCONNECTED:
            raise WebSocketDisconnected(RECEIVE_AFTER_DISCONNECT)

    def received(self, message: Message) -> None:
        """Move the client's side for ``message``; a message of the wrong type raises."""
        message_type = message["type"]
        after = _RECEIVE.get((self.client, message_type))
        if after is None:
            expected = _EXPECTED_RECEIVES.get(self.client)
            if expected is None:
                raise WebSocketDisconnected(RECEIVE_AFTER_DISCONNECT)
            raise RuntimeError(f"Expected ASGI message {expected}, but got {message_type!r}")
        self.client = after
        if after is DISCONNECTED:
            self.record_disconnect(message)

    def record_disconnect(self, message: Message) -> None:
        """Keep the first disconnect seen (by a receive, the pump, or a failed send)."""
        if self.disconnect is None:
            self.disconnect = message
            self.disconnected.set()

    def client_gone(self) -> None:
        """The disconnect was recorded and nothing more will be read: a connected client's side ends."""
        if self.disconnect is not None and self.client is CONNECTED:
            self.client = DISCONNECTED

    def disconnect_error(self) -> WebSocketDisconnect:
        """The ``WebSocketDisconnect`` that the recorded disconnect stands for."""
        message = self.disconnect or {}
        return WebSocketDisconnect(message.get("code", 1005), message.get("reason"))
