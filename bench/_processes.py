"""What the benchmark scripts share about their processes: the pipes between them and the checkout
they measure.

``LineReader`` reads newline-terminated lines from a trio stream (a child's stdout, or a child's
own stdin); ``describe_checkout`` names the checkout whose ``trio_asgi_ws`` a run imports, for a
report's header.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes:
        """One line without its newline; b"" at end of stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            self._buffer += chunk


def describe_checkout(where: Path) -> str:
    """``where`` with its commit, flagging uncommitted changes to ``trio_asgi_ws/``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%h"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    dirty = subprocess.run(
        ["git", "-C", str(where), "status", "--porcelain", "--", "trio_asgi_ws"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{where} at {commit}" + (" (trio_asgi_ws/ has uncommitted changes)" if dirty else "")
