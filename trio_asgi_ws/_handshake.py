"""Checks on ``accept()``'s arguments, made before anything reaches the server.

A bad subprotocol or header would otherwise reach the client as a malformed handshake (or make
hypercorn fail the connection with a traceback), far from the line that caused it; here it is a
``TypeError`` or ``ValueError`` raised by ``accept()`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ._types import Scope

__all__ = ["check_subprotocol", "checked_accept_headers"]

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_BYTES: Final = re.compile(rb"[\r\n\x00]")
_RESERVED_ACCEPT_HEADERS: Final = {
    b"sec-websocket-protocol": "pass the subprotocol as accept(subprotocol=...) instead",
    b"sec-websocket-accept": "the server computes it from the client's key",
}


def check_subprotocol(scope: Scope, subprotocol: str | None) -> None:
    """Raise unless ``subprotocol`` is None or one the client offered."""
    if subprotocol is None:
        return
    if not isinstance(subprotocol, str):
        raise TypeError(f"subprotocol must be a str or None, got {type(subprotocol).__name__}")
    offered = scope.get("subprotocols", [])
    if subprotocol not in offered:
        raise ValueError(
            f"subprotocol {subprotocol!r} was not offered by the client (it offered {list(offered)!r})"
        )


def checked_accept_headers(headers: Iterable[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
    """``headers`` as lower-cased ``(name, value)`` byte pairs; raise on anything malformed."""
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
