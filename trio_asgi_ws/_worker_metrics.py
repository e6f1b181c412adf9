"""Metrics with ``--workers N``: the supervisor asks each worker for its figures at scrape time.

Theory of operation
-------------------
The supervisor (``_supervisor.py``) gives each worker one end of a Unix socket pair
(``--metrics-fd``) and keeps the other.  On a scrape of its ``/metrics`` port it writes one line
(``?``) to every worker at once; each worker's ``answer_snapshots`` task (in ``serve()``'s
nursery) answers with one line of JSON, its ``Counters.snapshot()``; the supervisor adds them
(``_counters.merge``) and serves the sum.  Pull, not push: the figures are those of the moment of
the scrape, and an idle server does no metrics work at all.  No files, no shared memory.

Bounds and failures: a worker that does not answer within ``ANSWER_TIMEOUT`` (busy, or
starting) is counted with its last answer.  When a worker exits (a crash, or ``--reload``
restarting them all), its last answer's counters are kept in ``retired`` and added to every
later sum, so counters never go down; its ``open`` gauge is not kept.  What it counted after its
last answer is lost: counters of a restarted worker can lag by what happened between the last
scrape and its exit (Prometheus's ``rate()`` copes with such gaps).
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Final

import trio

from ._counters import Counters, Snapshot, merge

__all__ = ["ANSWER_TIMEOUT", "Aggregate", "WorkerLink", "answer_snapshots"]

logger = logging.getLogger("trio_asgi_ws")

ANSWER_TIMEOUT: Final = 2.0
"""Seconds the supervisor waits for a worker's figures before using its previous ones."""
_MAX_LINE: Final = 1024 * 1024


async def _read_line(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """One ``\\n``-ended line from ``stream`` (``buffer`` keeps what follows it); None at EOF."""
    while b"\n" not in buffer:
        if len(buffer) > _MAX_LINE:
            raise ValueError("metrics line too long")
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def answer_snapshots(sock: socket.socket, counters: Counters) -> None:
    """In a worker: answer each request line on ``sock`` with the figures; return at EOF.

    Cancelled (the worker stops), it closes its end; the supervisor then retires this worker.
    """
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    buffer = bytearray()
    async with stream:
        while await _read_line(stream, buffer) is not None:
            await stream.send_all(json.dumps(counters.snapshot()).encode() + b"\n")


class WorkerLink:
    """The supervisor's end of one worker's socket pair, with that worker's last answer."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = bytearray()
        self._lock = trio.Lock()
        self.last: Snapshot | None = None

    async def ask(self) -> None:
        """Ask for the worker's figures and keep them in ``last``; keep the old ones on failure.

        Bounded by ``ANSWER_TIMEOUT``; a late answer is read (and used) by the next ask.
        """
        with trio.move_on_after(ANSWER_TIMEOUT):
            try:
                async with self._lock:
                    await self._stream.send_all(b"?\n")
                    line = await _read_line(self._stream, self._buffer)
                    if line is not None:
                        self.last = json.loads(line)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as error:
                logger.debug("worker metrics not read: %r", error)

    async def aclose(self) -> None:
        await self._stream.aclose()


class Aggregate:
    """The figures of all workers, past and present, for the supervisor's ``/metrics``."""

    def __init__(self) -> None:
        self.links: set[WorkerLink] = set()
        self.retired: Snapshot = merge([])

    async def snapshot(self) -> Snapshot:
        """Ask every live worker at once (see ``WorkerLink.ask``), then add everything up."""
        links = list(self.links)
        async with trio.open_nursery() as nursery:
            for link in links:
                nursery.start_soon(link.ask)
        return merge([self.retired, *(link.last for link in links if link.last is not None)])

    async def retire(self, link: WorkerLink) -> None:
        """The worker has exited: keep its last counters (not its open connections)."""
        if link in self.links:
            self.links.discard(link)
            if link.last is not None:
                self.retired = merge([self.retired, link.last], gauges=False)
            await link.aclose()
