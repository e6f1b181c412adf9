"""Trio-native, structured-concurrency WebSockets for ASGI applications."""

from .datastructures import URL, Address, Headers, QueryParams, State, URLPath
from .websockets import (
    FrameTypeError,
    InvalidJSON,
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
    "InvalidJSON",
    "QueryParams",
    "State",
    "URLPath",
    "WebSocket",
    "WebSocketClose",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketException",
    "WebSocketState",
]

__version__ = "0.1.0"
"""The one place the version is written: setup.cfg reads it (``version = attr: ...``)."""
