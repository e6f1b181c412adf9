"""The exceptions of the WebSocket API, one type per situation::

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

A second task calling ``receive()`` while another is waiting in it gets ``trio.BusyResourceError``;
a message of the wrong type for the connection's state gets ``RuntimeError`` with Starlette's
wording.  All of these are importable from ``trio_asgi_ws.websockets`` and ``trio_asgi_ws``.
"""

from __future__ import annotations

import json

__all__ = [
    "FrameTypeError",
    "InvalidJSON",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketException",
]


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


class WebSocketException(Exception):
    """Raise in a handler to close with ``code`` and ``reason`` (before accept: reject)."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


