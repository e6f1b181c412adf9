"""The ``trio_asgi_ws.direct_send`` ASGI extension: write one pre-encoded frame to a socket, now.

Why: a broadcast delivers the same message to many sockets.  Through ASGI ``send()``,
hypercorn's trio worker runs wsproto, a lock, a cancel scope and two scheduler passes per socket
per message (about 47 µs of server CPU per delivery measured here, 14x websockets' asyncio
``broadcast()``).  A server frame is not masked, so without compression its bytes are the same
for every socket: encode it once (``encode_frame``) and write it to each socket with one
non-blocking system call, in the publisher's task, without a task switch.

What the server offers: ``scope["extensions"]["trio_asgi_ws.direct_send"]`` holds a
``DirectSend`` for connections served by ``trio_asgi_ws.server.serve()`` (or
``python -m trio_asgi_ws``) over plain HTTP/1.1 (not TLS, not HTTP/2).  Plain
``hypercorn -k trio`` does not offer it, and an app must work without it: the broadcast hub
falls back to ``send()``.  The server side of it lives in ``_hypercorn_fixes`` (the hooks into
hypercorn 0.18's connection classes); this module holds only what the app side uses.

``DirectSend.write(frame)`` writes only when every one of these holds, at the moment of the
call (it never awaits, so nothing can change in between):

- the connection agreed no extension (``permessage-deflate`` frames differ per socket);
- hypercorn's WebSocket is open both ways: accepted, not closing, no close frame encoded yet,
  so nothing is ever written after a close;
- no other write is in progress or waiting (hypercorn's send lock is free) and no earlier
  direct write left a tail, so frames never interleave with hypercorn's own (pings, close);
- the socket's send buffer takes at least one byte now.

A frame the socket takes only in part leaves its *tail* with the connection: hypercorn's next
write on that socket sends the tail first (under its lock), and ``flush()`` sends it if nothing
else comes.  So at most one frame per socket waits outside the app's own bounded buffers.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Final

from ._types import Message

if TYPE_CHECKING:
    from ._hypercorn_fixes import _GuardedTCPServer, _GuardedWSStream

__all__ = ["EXTENSION", "PARTIAL", "REFUSED", "WHOLE", "DirectSend", "encode_frame"]

EXTENSION: Final = "trio_asgi_ws.direct_send"
"""The scope extension's key."""

REFUSED: Final = 0
"""``DirectSend.write``: nothing was written."""
WHOLE: Final = 1
"""``DirectSend.write``: the whole frame was written."""
PARTIAL: Final = 2
"""``DirectSend.write``: part of the frame was written, its tail waits for ``flush()``."""

_TEXT: Final = 0x81  # FIN + opcode 1
_BINARY: Final = 0x82  # FIN + opcode 2


def encode_frame(message: Message) -> bytes:
    """The unmasked, unfragmented RFC 6455 frame a server sends for a ``websocket.send`` message.

    Raises ``TypeError`` for a message with neither ``text`` (str) nor ``bytes``.
    """
    text = message.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"'text' must be str, got {type(text).__name__}")
        payload, first = text.encode(), _TEXT
    else:
        data = message.get("bytes")
        if data is None:
            raise TypeError("a websocket.send message needs 'text' or 'bytes'")
        payload, first = bytes(data), _BINARY
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def _header_size(frame: bytes) -> int:
    """The length of an ``encode_frame`` frame's header (2, 4 or 10 bytes)."""
    length = frame[1]
    return 2 if length < 126 else 4 if length == 126 else 10


class DirectSend:
    """One connection's direct writer (see the module docstring); made by the server."""

    __slots__ = ("_server", "_stream", "usable")

    def __init__(self, stream: _GuardedWSStream, server: _GuardedTCPServer) -> None:
        self._stream = stream
        self._server = server
        self.usable = False
        """Set by the server once the handshake is accepted with no extension agreed."""

    def write(self, frame: bytes) -> int:
        """Write ``frame`` now if the connection can take it (module docstring); never waits.

        ``WHOLE`` or ``PARTIAL``: the frame is the socket's (``PARTIAL``: its tail waits for
        ``flush()`` or the connection's next write).  ``REFUSED`` (0, false): nothing was written
        (closing, busy, full, compressed or gone): send the message the ASGI way, which also
        reports a closed connection.
        """
        server = self._server
        if not self.usable or server.tail is not None or server.send_lock.locked():
            return REFUSED
        if not self._stream.open_for_data:
            return REFUSED
        try:
            # fileno() is -1 once the socket is closed, so a reused descriptor is never written.
            written = os.write(server.stream.socket.fileno(), frame)
        except OSError:  # full (BlockingIOError), closed or reset: the ASGI path will tell
            return REFUSED
        tally = self._stream.tally  # the metrics and connection log count it as a sent message
        if tally is not None:
            tally.sent_messages += 1
            tally.sent_bytes += len(frame) - _header_size(frame)
        if written < len(frame):
            server.tail = memoryview(frame)[written:]
            return PARTIAL
        return WHOLE

    @property
    def pending(self) -> bool:
        """Whether part of a frame written by ``write`` still waits for ``flush``."""
        return self._server.tail is not None

    async def flush(self) -> None:
        """Send the pending tail, if any (after any write already waiting for the socket).

        Waits for the socket as hypercorn's own writes do (shielded; the server's send timeout
        aborts a connection that stops reading); cancelling the wait for the lock is safe.
        """
        await self._server.send_tail()
