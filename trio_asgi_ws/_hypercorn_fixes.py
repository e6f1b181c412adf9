"""Corrections to hypercorn's trio worker, applied only while ``serve()`` runs.

Written against hypercorn 0.18.0 with wsproto 1.3.2 (``TESTED_HYPERCORN``); ``applied()`` refuses
to patch any other hypercorn version, so an upgrade is a conscious step: rerun
``tests/integration/test_hostile_clients.py`` against the new version, then add it.

Why patch at all: ``serve()`` and ``python -m trio_asgi_ws`` put hypercorn on the internet, and
as released it lets one client exhaust the server's memory, pin a connection forever, or keep
the process from exiting.  Each correction below reads as a bug report: what hypercorn does, what
it should do, and the test that attacks a real server and fails without it.

1. **Oversized messages are stored whole.**  ``WebsocketBuffer.extend`` writes a fragment before
   it checks the limit, and after ``FrameTooLargeError`` it is never cleared: hypercorn answers
   1009 but keeps appending every later fragment (150 MiB sent, RSS +150 MiB, the connection
   never dropped).  Fix: check before writing, and after the 1009 close frame drop the connection
   without reading another byte of it.  The app sees ``websocket.disconnect`` with code 1009.
   Test: ``test_an_endless_oversized_message_is_refused_and_dropped``.
2. **Compressed messages inflate without a limit.**  The handshake always accepts
   ``permessage-deflate``, and wsproto inflates with no ``max_length``: a 99 KiB frame that
   inflates to 100 MiB took the server from 31 to 268 MiB.  Fix: compression is negotiated only
   when ``compression="deflate"`` is set, and then inflation stops one byte past the message
   size limit and the connection is closed with 1009.  Tests:
   ``test_a_deflate_bomb_is_not_inflated`` (both settings).
3. **A client that stops reading pins its connection.**  ``TCPServer.protocol_send`` shields
   ``send_all`` with no timeout, so a send to a peer that never reads never returns: the app's
   handler, its broadcast ``forward`` task, the socket and SIGTERM all wait forever.  Fix: a send
   that makes no progress for ``send_timeout`` seconds aborts the connection (the socket is
   closed, which wakes the stuck send; the app sees a disconnect).
   Test: ``test_a_client_that_never_reads_is_dropped_after_the_send_timeout``.
4. **A read timeout leaves the socket open.**  On ``read_timeout`` hypercorn tells the app but
   closes the socket only once every task of the connection has ended, which a stuck send (3)
   delays forever when sends have no timeout.  Fix: close the socket at once on a read timeout
   (enforced by the same watchdog as the send timeout, within a quarter of it, at most a second
   late, instead of a trio deadline per read: that saves ~10,000 instructions per message).
   Test: ``test_a_read_timeout_closes_the_socket_even_while_a_send_is_stuck``.
5. **The ping task outlives its connection by up to a whole interval.**  ``_send_pings`` sleeps
   ``websocket_ping_interval`` between checks of ``closed``, and the connection's task group (and
   so its socket) waits for it: 300 clients resetting mid-frame left ~170 sockets open for
   seconds, and ~1,030 in a row exhausted the file descriptors.  Fix: the ping task wakes as soon
   as the stream closes.  Test: ``test_closed_connections_release_their_sockets_at_once``.
6. **Malformed frames are dropped without a close frame.**  wsproto reports a protocol error
   (invalid UTF-8, a bad opcode, a bad inflate) as a ``CloseConnection`` event; hypercorn answers
   a close only in the ``REMOTE_CLOSING`` state, so the client sees the TCP connection drop (1006)
   instead of 1007/1002.  Fix: send the close frame wsproto asked for.
   Test: ``test_invalid_utf8_is_answered_with_1007``.
7. **Stalled connections outlive the shutdown.**  After ``graceful_timeout`` hypercorn cancels its
   connection tasks, but a send stuck inside its shield (3) ignores that, so the process never
   exits.  Fix: ``ConnectionGuard.abort_all`` closes every socket still open when the shutdown's
   last grace ends.  Test: ``test_sigterm_with_a_stalled_reader_exits_0_in_time``.
8. **Reporting a disconnect can block forever.**  When a stream closes, hypercorn sets ``closed``
   and then waits for room in the app's queue to put ``websocket.disconnect``, often from inside
   the app's own ``send`` (the send found the socket closed) or from its final ``send(None)``
   after the app returned.  If the queue is full of messages the app will never read (the
   ``websocket.connect`` of a handler that rejected without reading it, data a handler will not
   read), that wait never ends: the connection's tasks and socket stay until shutdown.  If the
   app cancels the send instead, later closes return early on ``closed`` and the app never learns
   the client left.  Fix: the disconnect is put without waiting when there is room; otherwise a
   task of the connection puts it once the app makes room (shielded: a shutdown's cancellation
   is when a draining app needs it most), and is cancelled when the app returns.  A connection
   cancelled at the end of a shutdown still reports its close, so a handler draining its queue
   on the way out does not wait out its close timeout.
   Tests: ``test_faults.py`` (rejections and resets leave no task behind),
   ``test_sigterm_with_a_stalled_reader_exits_0_in_time``.

9. **(An addition, not a fix.)  Broadcast pays hypercorn's whole send path per socket.**  Each
   ASGI ``send()`` runs wsproto, a lock, a cancel scope and two scheduler passes; a broadcast to
   1,000 sockets does that 1,000 times for one message.  Addition: HTTP/1.1 connections without
   TLS offer the ``trio_asgi_ws.direct_send`` scope extension (``_direct_send.py``), through
   which the hub writes a frame encoded once straight to each socket that can take it at once.
   This module's part: the extension is put in the scope when hypercorn builds it, marked usable
   at accept when no compression was agreed, and the connection keeps a partly written frame's
   tail, which its next write (or ``DirectSend.flush``) sends first, under the send lock.
   Tests: ``tests/integration/test_direct_send.py``.

10. **(An addition, not a fix.)  Counting for metrics and the connection log.**  With
   ``GuardedConfig.counters`` set (``serve()`` does when asked for metrics or a connection log),
   each WebSocket stream keeps a ``_counters.ConnectionTally``: messages and payload bytes each
   way, the first close (code and side) and, through the TCP server, why the guard dropped it.
   Without it the per-message cost is one attribute test.  Tests:
   ``tests/integration/test_metrics.py``, ``tests/test_connection_log.py``.

11. **An HTTP response's end can block its app forever, and with it the keep-alive connection.**
   The HTTP counterpart of 8.  When a response is complete, hypercorn's ``HTTPStream`` puts
   ``http.disconnect`` in the app's queue, waiting for room, from inside the app's own last
   ``send`` (``http.response.body`` -> ``StreamClosed`` -> ``H11Protocol._maybe_recycle``), and
   only after that put does the connection start its next request cycle.  An app that never
   reads its request (most ``GET`` handlers, ``examples/chat.py``'s) leaves ``http.request`` in
   the queue.  hypercorn's default queue of ten has room for the notice; ``serve()``'s queue of
   one (``server._APP_QUEUE_SIZE``, since f18d9bc) is full, so the put never returns: the
   second request on a keep-alive connection, or one pipelined behind the first, is read and
   parked on ``can_read`` and never answered, and the app's handler stays stuck in that
   ``send`` (plain ``hypercorn -k trio`` hangs the same way when its queue is full).  Fix: as
   in 8, the disconnect is put without waiting when there is room, otherwise by a task of the
   connection once the app makes room, cancelled when the app returns.
   Tests: ``test_keep_alive_requests_are_all_answered`` and
   ``test_pipelined_requests_are_all_answered`` (``tests/integration/test_server.py``).

How they are applied: ``applied()`` swaps the classes hypercorn's trio worker instantiates
(``TCPServer`` in ``hypercorn.trio.run``, ``WSStream`` and ``HTTPStream`` in
``hypercorn.protocol.h11``/``h2``) for factories that build the corrected subclasses when the
config is a ``GuardedConfig`` (only ``serve()`` makes one) and hypercorn's own classes otherwise,
and restores them when the last ``serve()`` in the process returns.  Importing this module
changes nothing; plain ``hypercorn -k trio`` never gets these fixes.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from time import time
from typing import Any, Literal

import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.events import Response, StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.protocol.ws_stream import (
    ASGIWebsocketState,
    FrameTooLargeError,
    WebsocketBuffer,
    WSStream,
)
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.handshake import server_extensions_handshake

from ._counters import TALLY_KEY, ConnectionTally, Counters
from ._direct_send import EXTENSION, DirectSend

__all__ = ["TESTED_HYPERCORN", "Compression", "ConnectionGuard", "GuardedConfig", "applied"]

logger = logging.getLogger("trio_asgi_ws.server")

TESTED_HYPERCORN = ("0.18.0",)
"""The hypercorn releases these corrections were written against and tested on."""

_SEND_PIECE = 128 * 1024
"""Bytes written per ``send_all``: the guard sees progress per piece, so a client receiving a
large message must take this much per ``send_timeout`` (12.8 KiB/s at the default 10 s).  Larger
than a 64 KiB message's frame, which then costs a single write as in hypercorn."""

_DISCONNECT_NOTICE_TIMEOUT = 1.0
"""How long a cancelled connection waits for its app to take the disconnect message."""

Compression = Literal["deflate"] | None

_CONNECTED = ASGIWebsocketState.CONNECTED


class GuardedConfig(Config):
    """A hypercorn ``Config`` that opts its server into the corrections, with their settings."""

    send_timeout: float | None = 10.0
    compression: Compression = None
    counters: Counters | None = None
    """The server's figures for metrics and the connection log; None: nothing is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = ConnectionGuard(self)


class ConnectionGuard:
    """The open connections of one ``serve()``: drops stalled peers, aborts leftovers at shutdown.

    ``run()`` is one task for the whole server (not a deadline per read and per send, which
    costs trio about as much as the rest of an echo's bookkeeping): about four times per
    timeout (at most once a second) it aborts the connections whose current send has made no
    progress for ``send_timeout`` seconds, or that have waited ``read_timeout`` seconds for
    data.  Cancelling it stops the watching; connections are unaffected.
    """

    def __init__(self, config: GuardedConfig) -> None:
        self._config = config
        self._live: set[_GuardedTCPServer] = set()
        self._shielded: set[trio.CancelScope] = set()

    @contextmanager
    def shielded_until_abort(self) -> Iterator[trio.CancelScope]:
        """A shielded scope that ``abort_all`` gives a last ``_DISCONNECT_NOTICE_TIMEOUT``."""
        with trio.CancelScope(shield=True) as scope:
            self._shielded.add(scope)
            try:
                yield scope
            finally:
                self._shielded.discard(scope)

    @contextmanager
    def watching(self, connection: _GuardedTCPServer) -> Iterator[None]:
        """Watch ``connection`` while the block runs."""
        self._live.add(connection)
        try:
            yield
        finally:
            self._live.discard(connection)

    async def run(self) -> None:
        send_timeout = self._config.send_timeout or math.inf
        read_timeout = self._config.read_timeout or math.inf
        if send_timeout == read_timeout == math.inf:
            return
        tick = min(1.0, send_timeout / 4, read_timeout / 4)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for connection in list(self._live):
                sending, receiving = connection.send_waiting_since, connection.receive_waiting_since
                if sending is not None and now - sending > send_timeout:
                    connection.abort(f"no send progress for {send_timeout:g} s", "send_timeout")
                elif receiving is not None and now - receiving > read_timeout:
                    connection.abort(f"nothing received for {read_timeout:g} s", "read_timeout")

    def abort_all(self) -> None:
        """Close the socket of every connection still open (their tasks then end at once).

        Disconnect notices still waiting for their app get one more second.
        """
        if self._live:
            logger.warning("Aborting %d connection(s) still open at the end of shutdown", len(self._live))
        for connection in list(self._live):
            connection.abort(None, "shutdown")
        deadline = trio.current_time() + _DISCONNECT_NOTICE_TIMEOUT
        for scope in self._shielded:
            scope.deadline = min(scope.deadline, deadline)


class _GuardedTCPServer(TCPServer):
    """hypercorn's per-connection server with fixes 3, 4, 7 and 8 (see the module docstring).

    Cancelled (at the end of a shutdown's grace), its read loop still tells the protocol that
    the connection closed, shielded and bounded by ``_DISCONNECT_NOTICE_TIMEOUT``.
    """

    config: GuardedConfig
    send_waiting_since: float | None = None
    """When the send now in progress last made progress; None while not sending."""
    receive_waiting_since: float | None = None
    """When the read now waiting for data started; None while not reading the socket (the app's
    queue is full, or the data is being handled)."""
    tail: memoryview | None = None
    """What a direct write (addition 9) left unwritten of its frame: the next write sends it first."""
    dropped_for: str | None = None
    """Why the guard aborted this connection (``send_timeout``, ``read_timeout``, ``shutdown``)."""

    async def run(self) -> None:
        with self.config.guard.watching(self):
            await super().run()

    def abort(self, reason: str | None, kind: str) -> None:
        """Close the socket now: a send or receive blocked on it raises ``ClosedResourceError``.

        ``kind`` names the drop in the metrics (``send_timeout``, ``read_timeout``, ``shutdown``).
        """
        if reason is not None:
            logger.info("Dropping connection from %s: %s", _peer(self.stream), reason)
        sock = _socket(self.stream)
        if self.dropped_for is None and sock.fileno() != -1:
            self.dropped_for = kind
            counters = self.config.counters
            if counters is not None:
                counters.dropped(kind)
        sock.close()

    async def protocol_send(self, event: Any) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        await self._write(memoryview(event.data))

    async def send_tail(self) -> None:
        """Send the tail of a frame that ``DirectSend.write`` left (addition 9), if any."""
        await self._write(memoryview(b""))

    async def _write(self, data: memoryview) -> None:
        """Write ``data`` under the send lock, after a direct write's pending tail."""
        async with self.send_lock:
            tail, self.tail = self.tail, None  # no direct write happens while the lock is held
            try:
                # Shielded as hypercorn does (a cancelled send_all breaks the stream), but sent
                # in pieces so that the guard sees progress, and it can always abort the socket.
                with trio.CancelScope(shield=True):
                    for chunk in (tail, data) if tail is not None else (data,):
                        for start in range(0, len(chunk), _SEND_PIECE):
                            self.send_waiting_since = trio.current_time()
                            await self.stream.send_all(chunk[start : start + _SEND_PIECE])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
            finally:
                self.send_waiting_since = None

    async def _read_data(self) -> None:
        try:
            await self._read_until_closed()
        finally:
            # Also when cancelled at the end of a shutdown: a handler draining its queue on the
            # way out is waiting for this disconnect, and nothing else will send it.
            with trio.CancelScope(shield=True), trio.move_on_after(_DISCONNECT_NOTICE_TIMEOUT):
                await self.protocol.handle(Closed())

    async def _read_until_closed(self) -> None:
        while True:
            self.receive_waiting_since = trio.current_time()  # the guard enforces read_timeout
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            finally:
                self.receive_waiting_since = None
            await self.protocol.handle(RawData(bytes(data)))
            if not data:
                break


def _socket(stream: Any) -> trio.socket.SocketType:
    """The socket under a plain or TLS stream."""
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    sock: trio.socket.SocketType = transport.socket
    return sock


def _peer(stream: Any) -> str:
    try:
        host, port, *_ = _socket(stream).getpeername()
    except OSError:
        return "a closed socket"
    return f"{host}:{port}"


class _BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message past ``max_size`` (fix 2)."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self._max_size = max_size
        self._inflated = 0

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        try:
            out: bytes = self._decompressor.decompress(data, self._max_size - self._inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_complete(proto, fin)
        tail = self._inflate(b"\x00\x00\xff\xff")
        self._inflated = 0
        if isinstance(tail, CloseReason):
            return tail
        if self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return tail


class _DisconnectNotice:
    """Puts a stream's disconnect message in its app's queue, never waiting there (fixes 8, 11).

    hypercorn hands a stream its queue's bound ``send()``, whose channel has ``send_nowait()``.
    With no room, a task of the connection waits for the app to make some; ``app_returned()``
    ends that wait, since nobody will read the message then.
    """

    def __init__(self, guard: ConnectionGuard, task_group: Any) -> None:
        self._guard = guard
        self._task_group = task_group
        self.app_finished = False
        """The app has returned: nobody will read a disconnect now."""
        self._pending_put: trio.CancelScope | None = None

    def put(self, message: dict[str, Any], app_put: Any) -> None:
        queue: trio.MemorySendChannel[Any] = app_put.__self__
        try:
            queue.send_nowait(message)
        except trio.WouldBlock:
            self._task_group.spawn(self._put_when_the_app_reads, message, app_put)

    async def _put_when_the_app_reads(self, message: dict[str, Any], app_put: Any) -> None:
        """Wait for the app to make room; ends when it does, or when the app returns.

        Shielded: when a shutdown cancels the connection, the app is usually draining its queue
        on the way out and waiting for exactly this message.  The guard's ``abort_all`` ends the
        wait a second later, so a shutdown always ends.
        """
        with self._guard.shielded_until_abort() as self._pending_put:
            if self.app_finished:  # it returned before this task started
                return
            await app_put(message)

    def app_returned(self) -> None:
        self.app_finished = True
        if self._pending_put is not None:
            self._pending_put.cancel()


class _GuardedHTTPStream(HTTPStream):
    """hypercorn's HTTP stream with fix 11 (see the module docstring)."""

    config: GuardedConfig

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._notice = _DisconnectNotice(self.config.guard, self.task_group)

    async def handle(self, event: Any) -> None:
        if isinstance(event, StreamClosed):
            await self._report_disconnect()
        else:
            await super().handle(event)

    async def _report_disconnect(self) -> None:
        """hypercorn's ``StreamClosed`` handling, with a put that never waits for room (fix 11)."""
        if self.closed:
            return
        self.closed = True
        if self.state != ASGIHTTPState.CLOSED:
            # No response to log, as hypercorn logs it (its Logger takes None; its hint does not)
            await self.config.log.access(self.scope, None, time() - self.start_time)  # type: ignore[arg-type]
        app_put = getattr(self, "app_put", None)  # not set when the request was refused with 404
        if app_put is not None and not self._notice.app_finished:
            self._notice.put({"type": "http.disconnect"}, app_put)

    async def app_send(self, message: Any) -> None:
        if message is None:  # the app has returned: a disconnect still waiting will never be read
            self._notice.app_returned()
        await super().app_send(message)


class _BoundedBuffer(WebsocketBuffer):
    """hypercorn's message buffer, checking the limit before it stores a fragment (fix 1)."""

    def extend(self, event: Message[Any]) -> None:
        if self.length + len(event.data) > self.max_length:
            raise FrameTooLargeError()
        super().extend(event)


class _GuardedWSStream(WSStream):
    """hypercorn's WebSocket stream with fixes 1, 2, 5, 6 and 8 (see the module docstring).

    It also keeps the connection's ``ConnectionTally`` when the server counts (``_counters``):
    messages and payload bytes each way (a text message counts its UTF-8 bytes), the close code
    and which side closed first (the client's close frame, or the app's close, hypercorn's 1011
    for an app that returned while open, or a refusal here; a connection that ends with neither
    is a 1006, the client's doing unless the guard aborted it).  The tally ends when the stream
    closes, with the close (or the drop) that ended it.
    """

    config: GuardedConfig

    def __init__(self, *args: Any) -> None:
        self.tally: ConnectionTally | None = None
        self._ending: tuple[int, str] | None = None  # the first close: (code, "client"/"server")
        self._closed_event = trio.Event()
        self._refused_with: int | None = None
        self._disconnect_reported = False
        self.direct_send: DirectSend | None = None
        super().__init__(*args)
        self._notice = _DisconnectNotice(self.config.guard, self.task_group)
        self.buffer = _BoundedBuffer(self.config.websocket_max_message_size)

    @property
    def scope(self) -> Any:
        return self._scope

    @scope.setter
    def scope(self, scope: Any) -> None:
        """hypercorn builds the scope on the upgrade request: offer ``direct_send`` in it (9)."""
        server = _plain_http11_server(self.send)
        if server is not None:
            self.direct_send = DirectSend(self, server)
            scope["extensions"][EXTENSION] = self.direct_send
        if self.config.counters is not None:
            self.tally = scope[TALLY_KEY] = ConnectionTally(scope)
        self._scope = scope

    @property
    def open_for_data(self) -> bool:
        """Accepted, open both ways, and no close frame encoded yet (addition 9)."""
        return (
            self.state is ASGIWebsocketState.CONNECTED
            and not self._closed_event.is_set()
            and self.connection.state is ConnectionState.OPEN
        )

    @property
    def closed(self) -> bool:
        return self._closed_event.is_set()

    @closed.setter
    def closed(self, value: bool) -> None:  # hypercorn only ever sets it to False, then True
        if value:
            self._closed_event.set()

    async def handle(self, event: Any) -> None:
        if isinstance(event, StreamClosed):
            await self._report_disconnect()
        else:
            await super().handle(event)

    async def _report_disconnect(self) -> None:
        """Queue ``websocket.disconnect`` for the app once, never waiting for room (fix 8)."""
        if self._disconnect_reported:
            return
        self.closed = True
        self._disconnect_reported = True
        if self.tally is not None:
            self._end_tally(self.tally)
        if self.app_put is None or self._notice.app_finished:  # nobody will read it
            return
        if self._refused_with is not None:
            code = self._refused_with
        elif self.state in {ASGIWebsocketState.HTTPCLOSED, ASGIWebsocketState.CLOSED}:
            code = CloseReason.NORMAL_CLOSURE
        else:
            code = CloseReason.ABNORMAL_CLOSURE
        self._notice.put({"type": "websocket.disconnect", "code": int(code)}, self.app_put)

    async def app_send(self, message: Any) -> None:
        if message is None:  # the app has returned: a disconnect still waiting will never be read
            self._notice.app_returned()
        tally = self.tally
        if tally is not None:
            if message is not None and message["type"] == "websocket.send" and self.state is _CONNECTED:
                # The hot path, inline.  (A send after the stream closed is counted into a tally
                # already handed over, where it changes nothing.)
                data = message.get("bytes")
                if data is None:
                    data = message["text"]
                    size = len(data) if data.isascii() else len(data.encode())
                else:
                    size = len(data)
                tally.sent_messages += 1
                tally.sent_bytes += size
            elif not self.closed:
                self._count_other(tally, message)
        await super().app_send(message)

    # -- counting (only with a tally) ----------------------------------------------------------

    def _count_other(self, tally: ConnectionTally, message: Any) -> None:
        """Note a close, a rejection, or the app's return, before hypercorn handles it (with the
        same state checks as its own)."""
        state = self.state
        if message is None:
            if state is ASGIWebsocketState.HANDSHAKE:  # hypercorn answers HTTP 500
                self._rejected(tally, "error")
            elif state is _CONNECTED and self._ending is None:
                self._ending = (int(CloseReason.INTERNAL_ERROR), "server")
            return
        kind = message["type"]
        if state is _CONNECTED:
            if kind == "websocket.close" and self._ending is None:
                self._ending = (int(message.get("code", CloseReason.NORMAL_CLOSURE)), "server")
        elif state is ASGIWebsocketState.HANDSHAKE and kind in (
            "websocket.close",
            "websocket.http.response.start",
        ):
            self._rejected(tally, "denial")

    def _rejected(self, tally: ConnectionTally, default: str) -> None:
        assert self.config.counters is not None  # a tally exists only then
        self.config.counters.rejected(tally, default)

    def _end_tally(self, tally: ConnectionTally) -> None:
        """The stream closed: hand the tally to the server's counters, with how it ended."""
        assert self.config.counters is not None  # a tally exists only then
        dropped = None
        if self._ending is not None:
            code, side = self._ending
        else:
            server = _guarded_server(self.send)
            dropped = server.dropped_for if server is not None else None
            code, side = int(CloseReason.ABNORMAL_CLOSURE), "client" if dropped is None else "server"
        self.config.counters.ended(tally, code, side, dropped)

    async def _accept(self, message: Any) -> None:
        offers, self.handshake.extensions = self.handshake.extensions, None
        status_code, headers, connection = self.handshake.accept(
            message.get("subprotocol"), message.get("headers", [])
        )
        agreed = None
        if self.config.compression == "deflate" and offers:
            deflate = _BoundedDeflate(self.config.websocket_max_message_size)
            agreed = server_extensions_handshake(offers, [deflate])
            if agreed:
                headers.append((b"sec-websocket-extensions", agreed))
                connection = Connection(ConnectionType.SERVER, [deflate])
        self.state = ASGIWebsocketState.CONNECTED
        self.connection = connection
        if self.tally is not None:
            assert self.config.counters is not None  # a tally exists only then
            self.config.counters.opened(self.tally)
        if self.direct_send is not None:
            self.direct_send.usable = not agreed  # deflate frames differ per socket
        await self.send(Response(stream_id=self.stream_id, status_code=status_code, headers=headers))
        await self.config.log.access(
            self.scope, {"status": status_code, "headers": []}, time() - self.start_time
        )
        if self.config.websocket_ping_interval is not None:
            self.task_group.spawn(self._send_pings)

    async def _handle_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._refuse(CloseReason.MESSAGE_TOO_BIG)
                    return
                if event.message_finished:
                    assert self.app_put is not None  # set before the handshake is accepted
                    message = self.buffer.to_message()
                    tally = self.tally
                    if tally is not None:
                        data = message["bytes"]
                        if data is None:
                            data = message["text"]
                            size = len(data) if data.isascii() else len(data.encode())
                        else:
                            size = len(data)
                        tally.received_messages += 1
                        tally.received_bytes += size
                    await self.app_put(message)
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state is ConnectionState.OPEN:  # a parse error, not a close frame
                    await self._refuse(event.code)
                    return
                if self.connection.state is ConnectionState.REMOTE_CLOSING:
                    if self._ending is None:
                        self._ending = (int(event.code), "client")
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def _refuse(self, code: int) -> None:
        """Send a close frame with ``code`` and drop the connection without reading on."""
        self.buffer.clear()
        self._refused_with = int(code)
        if self.tally is not None and self._ending is None:
            self._ending = (int(code), "server")
        counters = self.config.counters
        if counters is not None:
            counters.dropped("oversize" if code == CloseReason.MESSAGE_TOO_BIG else "protocol_error")
        await self._send_wsproto_event(CloseConnection(code=code))
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_pings(self) -> None:
        interval = self.config.websocket_ping_interval
        assert interval is not None  # hypercorn starts this task only with an interval
        while not self.closed:
            await self._send_wsproto_event(Ping())
            with trio.move_on_after(interval):
                await self._closed_event.wait()


def _plain_http11_server(send: Any) -> _GuardedTCPServer | None:
    """The guarded TCP server under a WebSocket stream's ``send``, for HTTP/1.1 without TLS.

    hypercorn hands a ``WSStream`` its ``H11Protocol.stream_send``, and the protocol the
    ``TCPServer.protocol_send``, both as bound methods.
    """
    protocol = getattr(send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # HTTP/2: frames go through h2's framing
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, _GuardedTCPServer) or not isinstance(server.stream, trio.SocketStream):
        return None  # not ours, or TLS
    return server


def _guarded_server(send: Any) -> _GuardedTCPServer | None:
    """The guarded TCP server under a WebSocket stream's ``send`` (HTTP/1.1 or 2, TLS or not)."""
    protocol = getattr(send, "__self__", None)
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    return server if isinstance(server, _GuardedTCPServer) else None


def _tcp_server(app: Any, config: Any, *args: Any) -> Any:
    server_class = _GuardedTCPServer if isinstance(config, GuardedConfig) else TCPServer
    return server_class(app, config, *args)


def _ws_stream(app: Any, config: Any, *args: Any) -> Any:
    stream_class = _GuardedWSStream if isinstance(config, GuardedConfig) else WSStream
    return stream_class(app, config, *args)


def _http_stream(app: Any, config: Any, *args: Any) -> Any:
    stream_class = _GuardedHTTPStream if isinstance(config, GuardedConfig) else HTTPStream
    return stream_class(app, config, *args)


_PATCHES: list[tuple[Any, str, Any, Any]] = [
    (hypercorn.trio.run, "TCPServer", TCPServer, _tcp_server),
    (hypercorn.protocol.h11, "WSStream", WSStream, _ws_stream),
    (hypercorn.protocol.h2, "WSStream", WSStream, _ws_stream),
    (hypercorn.protocol.h11, "HTTPStream", HTTPStream, _http_stream),
    (hypercorn.protocol.h2, "HTTPStream", HTTPStream, _http_stream),
]
_users = 0


@contextmanager
def applied() -> Iterator[None]:
    """Install the corrections while the block runs (nested and concurrent uses are counted).

    Raises ``RuntimeError`` on a hypercorn release they were not tested on.
    """
    global _users
    installed = version("hypercorn")
    if installed not in TESTED_HYPERCORN:
        raise RuntimeError(
            f"trio_asgi_ws's serving fixes are tested on hypercorn {', '.join(TESTED_HYPERCORN)}, "
            f"not {installed}: install a tested version"
        )
    if _users == 0:
        for module, name, original, replacement in _PATCHES:
            assert getattr(module, name) is original, f"{module.__name__}.{name} was replaced by someone else"
            setattr(module, name, replacement)
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            for module, name, original, _ in _PATCHES:
                setattr(module, name, original)
