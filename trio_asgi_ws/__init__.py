"""Trio-native, structured-concurrency WebSockets for ASGI applications."""

from .datastructures import URL, Address, Headers, QueryParams, State
from .websockets import (
    FrameTypeError,
    WebSocket,
    WebSocketClose,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketException,
    WebSocketState,
)

__all__ = [
    "URL",
    "Address",
    "FrameTypeError",
    "Headers",
    "QueryParams",
    "State",
    "WebSocket",
    "WebSocketClose",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketException",
    "WebSocketState",
]

__version__ = "0.1.0"
