"""Soak: many chat clients against ``python -m trio_asgi_ws examples.chat:app``, nothing lost.

Run ``python bench/soak.py`` (about 100 s: the 60 s soak, the drain, 25 s watching the server
after everyone left).  Defaults: ``--clients 1000 --duration 60 --rooms 200`` (rooms of ~5, as
in the run quoted in issue 8: 1,000 clients posting once a second make ~4,500 deliveries/s;
``--rooms 50`` makes rooms of ~20 and ~18,000/s, more than one server process delivers on a
2-vCPU VM, so the hub drops by design, see below).  Extra server options go after ``--``
(``python bench/soak.py -- --compression deflate``) or in ``--server-args='...'``.  Progress goes
to stderr, the report (a timeline and a table) to stdout.

The server is a subprocess in a session of its own on 127.0.0.1, port 20000-20999, killed (its
whole process group) at the end whatever happened.  By default it is started as
``python -c WRAPPER examples.chat:app --port P ...``: the wrapper runs the module
``trio_asgi_ws`` as ``__main__`` (what ``python -m`` does) with, for measuring only, a trio
instrument counting live tasks, a wrapper around ``Broadcast.forward`` counting what the hub
dropped for each socket (by client port), and two signal handlers: SIGUSR1 writes the live tasks,
the drops and the gc-tracked object count to a file and ``sys._debugmallocstats()`` to stderr;
SIGUSR2 (at the very end) runs glibc's ``malloc_trim(0)``, to tell allocator retention from live
memory.  ``--plain-server`` runs the command itself (RSS, files and delivery only).

The clients are raw WebSocket clients on trio sockets (``tests/integration/attacks.py``'s
handshake, frames parsed here; they offer permessage-deflate as browsers do, ``--no-deflate-offer``
not), spread over ``--client-procs`` processes (2; each in its own session, with the soft
open-file limit raised, killed at the end too).  Every client gets a room, ``/ws/room-K?name=...``,
round-robin over a shuffled list (``--seed``).  Three kinds:

- readers (the rest, 90% by default): join, post ``"c<id> <seq> <µs> <room> xxx..."`` about
  once a second (``--rate``) from their own join until the end of the soak, read everything,
  answer pings, and after the soak keep reading until their client process has received no chat
  message for ``--quiet`` seconds (at most ``--drain-max``), then close with 1000;
- never-readers (``--never-read``, 5%): join and never read a byte again (the server must drop
  them by its send or read timeout, or hold them at a bounded cost); reset (RST) at the end;
- resetters (``--resetters``, 5%): join, read for 0.2-3 s, post one message half-way (not
  checked), close with SO_LINGER 0 (a TCP reset), wait up to 0.3 s, reconnect, until the end.

What "should have arrived" means.  A reader records when it receives its own "joined" system
message (``joined_at``; CLOCK_MONOTONIC, shared by all processes): the chat handler subscribes
before it publishes that message, so anything published after ``joined_at`` reaches the
subscription.  Senders record the time just before each post's write.  For every pair of
readers (receiver R, sender S, S = R included) in the same room, both well-behaved (no error,
not dropped), R must have received every post of S written after R's ``joined_at`` (R reads
until the room is quiet after the last post), exactly once, in order; posts written before may
have arrived too, and then they must be in the same contiguous run.  R tracks per sender the
first and last number and the gaps as messages arrive: ``duplicates`` are numbers seen twice,
``reordered`` numbers that arrived after a higher one, ``lost`` expected numbers never received.
``drop_oldest`` with 100 buffered (examples/chat.py) means that a reader the server falls more
than 100 messages behind loses the oldest: that shows as lost, as it would for a browser, and
the report compares each reader's losses with what the hub dropped for its socket (losses
beyond those would be a bug).  Duplicates and reordering are bugs in any case.

Measured on the server (``/proc``): connections held on the port each second (target: every
client's), RSS at start (before any client), peak (VmHWM, reset before the clients start), at
the end of the soak and 0 / 5 / 10 / ``--linger`` seconds after all clients left; open files,
live trio tasks and gc-tracked objects at start and at the end; CPU of the server, the clients
and every other process on the machine (a shared VM's neighbours slow the server down); whether
a new client is served afterwards.  The clients' own lag (how late posts were written against
their schedule) says whether they kept up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shlex
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
for _path in (REPO, SCRIPT.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import _target  # noqa: E402

from tests.integration.attacks import (  # noqa: E402
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    HandshakeError,
    RawConnection,
    frame,
    handshake,
    open_fds,
    peak_rss_kib,
    reset_peak_rss,
    rss_kib,
    tcp_queues,
)

PORTS = range(20000, 21000)
APP = "examples.chat:app"
STARTUP_DEADLINE = 20.0
SHARD_START_DELAY = 3.0
"""Seconds between spawning the client processes and the soak's start (their imports)."""
CLOSE_WAIT = 5.0
HANDSHAKE_WITHIN = 10.0
SEND_WITHIN = 10.0
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"

# Runs the module trio_asgi_ws as __main__ with a task-counting instrument; SIGUSR1 writes the
# live tasks (count and the commonest names) to $SOAK_TASKS_FILE.
SERVER_WRAPPER = r"""
import collections, json, os, runpy, signal, sys, trio

class _LiveTasks(trio.abc.Instrument):
    def __init__(self):
        self.live = {}
    def task_spawned(self, task):
        self.live[id(task)] = task.name
    def task_exited(self, task):
        self.live.pop(id(task), None)

_tasks = _LiveTasks()

def _dump(signum, frame):
    import gc
    names = collections.Counter(_tasks.live.values())
    print("SOAK-MALLOCSTATS-BEGIN", file=sys.stderr, flush=True)
    sys._debugmallocstats()  # pymalloc's arenas and live blocks, on stderr
    print("SOAK-MALLOCSTATS-END", file=sys.stderr, flush=True)
    path = os.environ["SOAK_TASKS_FILE"]
    with open(path + ".tmp", "w") as out:
        json.dump({"live": len(_tasks.live), "names": names.most_common(12), "drops": _drops,
                   "objects": len(gc.get_objects())}, out)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR1, _dump)


def _trim(signum, frame):
    # Diagnostic, at the very end: live Python objects after a collection, then glibc's
    # malloc_trim(0) (returns free heap pages to the kernel): what RSS is allocator retention.
    import ctypes, gc
    gc.collect()
    objects = len(gc.get_objects())
    try:
        trimmed = ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        trimmed = None
    path = os.environ["SOAK_TASKS_FILE"] + ".trim"
    with open(path + ".tmp", "w") as out:
        json.dump({"objects": objects, "trimmed": trimmed}, out)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR2, _trim)

# Messages the hub dropped for each socket's forward (drop_oldest), by the client's port.
import trio_asgi_ws.broadcast as _broadcast
_drops = {}
_forward = _broadcast.Broadcast.forward

async def _counted_forward(self, topic, websocket, *, task_status=trio.TASK_STATUS_IGNORED, **options):
    port = str((websocket.scope.get("client") or ("?", 0))[1])
    subscriptions = []

    class _Status:
        def started(self, value=None):
            subscriptions.append(value)
            task_status.started(value)

    try:
        await _forward(self, topic, websocket, task_status=_Status(), **options)
    finally:
        if subscriptions and subscriptions[0].dropped:
            _drops[port] = _drops.get(port, 0) + subscriptions[0].dropped

_broadcast.Broadcast.forward = _counted_forward
_run = trio.run

def _instrumented_run(*args, **kwargs):
    kwargs["instruments"] = [*kwargs.get("instruments", ()), _tasks]
    return _run(*args, **kwargs)

trio.run = _instrumented_run
sys.argv = ["trio_asgi_ws", *sys.argv[1:]]
runpy.run_module("trio_asgi_ws", run_name="__main__", alter_sys=True)
"""


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` if there is no such file (yet)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft open-file limit towards ``wanted`` (up to the hard limit); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (``/proc/PID/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def spread(histogram: dict[int, int]) -> str:
    p50, p99 = histogram_percentile(histogram, 0.5), histogram_percentile(histogram, 0.99)
    return f"p50 {p50:.0f}, p99 {p99:.0f}, max {max(histogram, default=0)}"


def histogram_percentile(histogram: dict[int, int], share: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= share * total:
            return value
    return max(histogram)


# ---------------------------------------------------------------------------------------------
# The client processes ("shards")
# ---------------------------------------------------------------------------------------------


def parse_frames(buffer: bytearray) -> list[tuple[int, bool, bool, bytes]]:
    """Every whole frame at the start of ``buffer`` (removed from it): (opcode, fin, rsv1, payload)."""
    frames = []
    position = 0
    size = len(buffer)
    while size - position >= 2:
        first, second = buffer[position], buffer[position + 1]
        length = second & 0x7F
        head = position + 2
        if length == 126:
            if size - head < 2:
                break
            length = struct.unpack_from("!H", buffer, head)[0]
            head += 2
        elif length == 127:
            if size - head < 8:
                break
            length = struct.unpack_from("!Q", buffer, head)[0]
            head += 8
        key = None
        if second & 0x80:  # a server must not mask; unmask anyway
            if size - head < 4:
                break
            key = bytes(buffer[head : head + 4])
            head += 4
        end = head + length
        if end > size:
            break
        payload = bytes(buffer[head:end])
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((first & 0x0F, bool(first & 0x80), bool(first & 0x40), payload))
        position = end
    if position:
        del buffer[:position]
    return frames


@dataclass
class ShardState:
    spec: dict[str, Any]
    offset: float = 0.0
    """trio.current_time() - time.monotonic(), to sleep until a monotonic instant."""
    errors: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    latency_ms: Counter[int] = field(default_factory=Counter)
    lateness_ms: Counter[int] = field(default_factory=Counter)
    last_chat_at: float = 0.0
    stop: trio.Event = field(default_factory=trio.Event)
    limiter: trio.CapacityLimiter | None = None
    close_codes: Counter[str] = field(default_factory=Counter)

    def until(self, instant: float) -> float:
        return instant + self.offset

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def anomaly(self, text: str) -> None:
        self.errors["anomaly"] += 1
        if len(self.anomalies) < 50:
            self.anomalies.append(text)


def describe(error: BaseException) -> str:
    inner = getattr(error, "exceptions", None)
    if inner:
        return "+".join(sorted({describe(each) for each in inner}))
    if isinstance(error, HandshakeError):
        text = str(error)
        match = re.search(r"got '(HTTP/1.1 \d+[^']*)'", text)
        return f"HandshakeError({match.group(1)})" if match else "HandshakeError"
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__}({os.strerror(error.errno)})"
    return type(error).__name__


class Client:
    """One connection's state with per-message deflate (if negotiated) and a send lock."""

    def __init__(self, shard: ShardState, cid: int, kind: str, room: str) -> None:
        self.shard = shard
        self.cid = cid
        self.kind = kind
        self.room = room
        self.name = f"{kind[0]}{cid}"
        self.conn: RawConnection | None = None
        self.local_port: int | None = None
        self.send_lock = trio.Lock()
        self.deflate = False
        self.client_no_context = False
        self.compressor: Any = None
        self.decompressor: Any = None
        self.fragments: list[bytes] = []
        self.fragment_rsv1 = False
        self.close_code: str | None = None
        self.ended: str | None = None

    async def connect(self, *, rcvbuf: int | None = None) -> None:
        offer = DEFLATE_OFFER if self.shard.spec["offer_deflate"] else None
        self.conn = await handshake(
            self.shard.spec["port"],
            f"/ws/{self.room}?name={self.name}",
            extensions=offer,
            rcvbuf=rcvbuf,
            within=HANDSHAKE_WITHIN,
        )
        self.local_port = self.conn.local_port
        negotiated = self.conn.extensions or ""
        self.deflate = "permessage-deflate" in negotiated
        self.client_no_context = "client_no_context_takeover" in negotiated
        if self.deflate:
            # A small window is always acceptable to the server's (larger) one; 15 decodes anything.
            self.compressor = zlib.compressobj(1, zlib.DEFLATED, -9, 1)
            self.decompressor = zlib.decompressobj(-15)
        self.fragments = []
        self.close_code = None
        self.ended = None

    async def send_text(self, text: str) -> None:
        data = text.encode()
        rsv1 = False
        if self.deflate:
            if self.client_no_context:
                self.compressor = zlib.compressobj(1, zlib.DEFLATED, -9, 1)
            data = (self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
            rsv1 = True
        await self.send_raw(frame(OP_TEXT, data, rsv1=rsv1))

    async def send_raw(self, data: bytes) -> None:
        assert self.conn is not None
        async with self.send_lock:
            with trio.fail_after(SEND_WITHIN):
                await self.conn.stream.send_all(data)

    def messages(self, frames: list[tuple[int, bool, bool, bytes]]) -> list[str]:
        """Text messages in ``frames`` (reassembled, inflated); answers nothing, records closes."""
        texts = []
        for opcode, fin, rsv1, payload in frames:
            if opcode in (OP_TEXT, OP_CONTINUATION) or opcode == 0x2:
                if opcode != OP_CONTINUATION:
                    self.fragments = []
                    self.fragment_rsv1 = rsv1
                self.fragments.append(payload)
                if not fin:
                    continue
                data = b"".join(self.fragments)
                self.fragments = []
                if self.fragment_rsv1:
                    data = self.decompressor.decompress(data + b"\x00\x00\xff\xff")
                if opcode == OP_TEXT or (opcode == OP_CONTINUATION and data):
                    texts.append(data.decode())
            elif opcode == OP_CLOSE and self.close_code is None:
                self.close_code = str(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else "none"
        return texts

    async def abort(self) -> None:
        if self.conn is not None:
            await self.conn.abort()


class Reader(Client):
    def __init__(self, shard: ShardState, cid: int, room: str) -> None:
        super().__init__(shard, cid, "c", room)
        self.joined_at: float | None = None
        self.joined = trio.Event()
        self.pump_done = trio.Event()
        self.done = trio.Event()
        self.stopped_at: float | None = None
        self.dropped: str | None = None
        self.posts: list[float] = []
        """Monotonic time just before each post's write; post n has sequence number n + 1."""
        self.recv: dict[int, list[Any]] = {}
        """Per sender: [first, last, distinct count, duplicates, reordered, missing set or None]."""
        self.noise = 0
        self.system = 0
        self.join_text = f"{self.name} joined {room}"

    def on_text(self, text: str, now: float) -> None:
        shard = self.shard
        try:
            message = json.loads(text)
        except ValueError:
            shard.anomaly(f"{self.name}: not JSON: {text[:80]!r}")
            return
        body = message.get("text")
        if body is None:
            if message.get("system") == self.join_text and self.joined_at is None:
                self.joined_at = now
                self.joined.set()
            self.system += 1
            return
        if self.joined_at is None:  # the room's history, shown before our own join notice
            self.noise += 1
            return
        shard.last_chat_at = now
        parts = body.split(" ", 4)
        sender_name = parts[0]
        if sender_name.startswith("c") and len(parts) >= 4:
            try:
                sender = int(sender_name[1:])
                seq = int(parts[1])
                sent_us = int(parts[2])
            except ValueError:
                shard.anomaly(f"{self.name}: unparsable chat text {body[:60]!r}")
                return
            if parts[3] != self.room or message.get("from") != sender_name:
                shard.anomaly(f"{self.name} in {self.room} got {body[:60]!r} from {message.get('from')!r}")
                return
            shard.latency_ms[int((now - sent_us / 1e6) * 1000)] += 1
            self.record(sender, seq, now)
        else:
            self.noise += 1

    def record(self, sender: int, seq: int, now: float) -> None:
        entry = self.recv.get(sender)
        if entry is None:
            self.recv[sender] = [seq, seq, 1, 0, 0, None]
            return
        last = entry[1]
        if seq == last + 1:
            entry[1] = seq
            entry[2] += 1
        elif seq > last:
            missing = entry[5] if entry[5] is not None else set()
            missing.update(range(last + 1, seq))
            entry[5] = missing
            entry[1] = seq
            entry[2] += 1
        elif seq < entry[0]:
            missing = entry[5] if entry[5] is not None else set()
            missing.update(range(seq + 1, entry[0]))
            entry[5] = missing
            entry[0] = seq
            entry[2] += 1
            entry[4] += 1
            self.shard.anomaly(
                f"{self.name} got c{sender} #{seq} after #{last} (reordered, before the first)"
            )
        elif entry[5] and seq in entry[5]:
            entry[5].discard(seq)
            entry[2] += 1
            entry[4] += 1
            self.shard.anomaly(f"{self.name} got c{sender} #{seq} after #{last} (reordered)")
        else:
            entry[3] += 1
            self.shard.anomaly(f"{self.name} got c{sender} #{seq} again (duplicate; last #{last})")

    async def pump(self) -> None:
        """Read and handle frames until EOF, a reset, or cancellation."""
        try:
            await self._pump()
        finally:
            self.pump_done.set()

    async def _pump(self) -> None:
        assert self.conn is not None
        stream = self.conn.stream
        buffer = self.conn.buffer
        while True:
            frames = parse_frames(buffer)
            if frames:
                now = time.monotonic()
                for opcode, _, _, payload in frames:
                    if opcode == OP_PING and self.close_code is None:
                        await self.send_raw(frame(OP_PONG, payload))
                for text in self.messages(frames):
                    self.on_text(text, now)
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                self.ended = "reset"
                return
            except trio.ClosedResourceError:
                self.ended = "closed"
                return
            if not data:
                self.ended = "eof"
                return
            buffer += data

    async def post(self) -> None:
        shard = self.shard
        spec = shard.spec
        interval = 1.0 / spec["rate"]
        end = spec["t_end"]
        rng = random.Random(spec["seed"] * 100_003 + self.cid)
        assert self.joined_at is not None
        due = self.joined_at + rng.random() * interval
        pad = "x" * max(0, spec["size"] - 40)
        while due < end:
            await trio.sleep_until(shard.until(due))
            now = time.monotonic()
            if now >= end:
                break
            shard.lateness_ms[int((now - due) * 1000)] += 1
            seq = len(self.posts) + 1
            self.posts.append(now)
            await self.send_text(f"{self.name} {seq} {int(now * 1e6)} {self.room} {pad}")
            due = max(due + interval, time.monotonic())

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.done.set()

    async def _run(self) -> None:
        shard = self.shard
        spec = shard.spec
        try:
            async with trio.open_nursery() as nursery:
                assert shard.limiter is not None
                async with shard.limiter:
                    for attempt in range(3):
                        try:
                            await self.connect()
                            break
                        except (
                            OSError,
                            HandshakeError,
                            trio.TooSlowError,
                            trio.BrokenResourceError,
                        ) as error:
                            shard.error(f"reader handshake: {describe(error)}")
                            if attempt == 2 or time.monotonic() > spec["t_end"]:
                                raise
                    nursery.start_soon(self.pump)
                    with trio.fail_after(HANDSHAKE_WITHIN):
                        await self.joined.wait()
                await self.post()
                await shard.stop.wait()
                self.stopped_at = time.monotonic()
                await self.send_raw(frame(OP_CLOSE, struct.pack("!H", 1000)))
                with trio.move_on_after(CLOSE_WAIT):
                    await self.pump_done.wait()
                shard.close_codes[f"{self.close_code or 'no close frame'}, {self.ended or 'TCP open'}"] += 1
                nursery.cancel_scope.cancel()
        except Exception as error:
            self.dropped = describe(error)
            shard.error(f"reader failed: {self.dropped}")
        finally:
            if self.ended is None and self.conn is not None:
                with trio.CancelScope(shield=True):
                    await self.conn.aclose()
        if self.ended in ("reset", "eof") and self.stopped_at is None and not self.dropped:
            self.dropped = f"server ended the connection ({self.ended})"
            shard.error(f"reader dropped: {self.ended}")

    def result(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "joined_at": self.joined_at,
            "stopped_at": self.stopped_at,
            "dropped": self.dropped,
            "posts": self.posts,
            "recv": {
                str(sender): [*entry[:5], sorted(entry[5]) if entry[5] else []]
                for sender, entry in self.recv.items()
            },
            "noise": self.noise,
            "system": self.system,
            "deflate": self.deflate,
            "local_port": self.local_port,
        }


async def never_reader(client: Client, out: dict[str, Any]) -> None:
    shard = client.shard
    try:
        assert shard.limiter is not None
        async with shard.limiter:
            await client.connect(rcvbuf=shard.spec["never_read_rcvbuf"])
        assert client.conn is not None
        out.update(local_port=client.conn.local_port, connected_at=time.monotonic())
        await shard.stop.wait()
    except Exception as error:
        out["error"] = describe(error)
        shard.error(f"never-reader: {describe(error)}")
    finally:
        with trio.CancelScope(shield=True):
            await client.abort()  # unread data: the kernel resets anyway


async def resetter(client: Client, out: dict[str, Any]) -> None:
    shard = client.shard
    spec = shard.spec
    rng = random.Random(spec["seed"] * 7_919 + client.cid)
    cycles = posted = received = 0
    first = True
    with trio.CancelScope() as scope:

        async def stop_at_stop() -> None:
            await shard.stop.wait()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_at_stop)
            while time.monotonic() < spec["t_end"]:
                try:
                    if first:
                        assert shard.limiter is not None
                        async with shard.limiter:
                            await client.connect()
                        first = False
                    else:
                        await client.connect()
                except (OSError, HandshakeError, trio.TooSlowError, trio.BrokenResourceError) as error:
                    shard.error(f"resetter handshake: {describe(error)}")
                    await trio.sleep(0.5)
                    continue
                assert client.conn is not None
                hold = rng.uniform(0.2, 3.0)
                try:
                    with trio.move_on_after(hold):
                        with trio.move_on_after(hold / 2):
                            while data := await client.conn.stream.receive_some(65536):
                                received += len(data)
                        await client.send_text(f"{client.name} {cycles} noise {client.room}")
                        posted += 1
                        while data := await client.conn.stream.receive_some(65536):
                            received += len(data)
                        shard.error("resetter: server closed the connection")
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as error:
                    shard.error(f"resetter: {describe(error)}")
                finally:
                    with trio.CancelScope(shield=True):
                        await client.abort()
                cycles += 1
                await trio.sleep(rng.uniform(0.0, 0.3))
            nursery.cancel_scope.cancel()
    out.update(cycles=cycles, posted=posted, received_bytes=received)


async def shard_main(spec: dict[str, Any]) -> dict[str, Any]:
    shard = ShardState(spec)
    shard.offset = trio.current_time() - time.monotonic()
    shard.limiter = trio.CapacityLimiter(spec["concurrency"])
    readers: list[Reader] = []
    nevers: dict[str, dict[str, Any]] = {}
    resets: dict[str, dict[str, Any]] = {}
    await trio.sleep_until(shard.until(spec["t0"]))
    started = time.monotonic()
    shard.last_chat_at = started
    async with trio.open_nursery() as nursery:
        for cid, kind, room in spec["clients"]:
            if kind == "reader":
                reader = Reader(shard, cid, room)
                readers.append(reader)
                nursery.start_soon(reader.run)
            elif kind == "never":
                nevers[str(cid)] = {"room": room}
                nursery.start_soon(never_reader, Client(shard, cid, "never", room), nevers[str(cid)])
            else:
                resets[str(cid)] = {"room": room}
                nursery.start_soon(resetter, Client(shard, cid, "reset", room), resets[str(cid)])
        # The drain: after the last post, wait until this process has had no chat message for
        # `quiet` seconds (bounded by drain_max), then every client stops.
        await trio.sleep_until(shard.until(spec["t_end"]))
        limit = spec["t_end"] + spec["drain_max"]
        while True:
            now = time.monotonic()
            if now - max(shard.last_chat_at, spec["t_end"]) >= spec["quiet"]:
                break
            if now >= limit:
                shard.error("drain: still receiving at --drain-max")
                break
            await trio.sleep(0.25)
        drained_at = time.monotonic()
        shard.stop.set()
        with trio.move_on_after(CLOSE_WAIT + 5):
            for reader in readers:
                await reader.done.wait()
        nursery.cancel_scope.deadline = trio.current_time() + CLOSE_WAIT + 5
    return {
        "readers": {str(r.cid): r.result() for r in readers},
        "never": nevers,
        "resetters": resets,
        "errors": dict(shard.errors),
        "anomalies": shard.anomalies,
        "latency_ms": dict(shard.latency_ms),
        "lateness_ms": dict(shard.lateness_ms),
        "close_codes": dict(shard.close_codes),
        "drained_at": drained_at,
        "connect_started": started,
        "cpu": cpu_seconds(os.getpid()),
    }


def run_shard(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    raise_nofile(len(spec["clients"]) + 200)
    result = trio.run(shard_main, spec)
    tmp = spec["out"] + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, spec["out"])
    return 0


# ---------------------------------------------------------------------------------------------
# The coordinator: server, client processes, measurements, report
# ---------------------------------------------------------------------------------------------


@dataclass
class Settings:
    python: str
    cwd: Path
    pythonpath: str
    server_args: list[str]
    clients: int
    duration: float
    rooms: int
    never_read: float
    resetters: float
    client_procs: int
    rate: float
    size: int
    quiet: float
    drain_max: float
    linger: float
    seed: int
    concurrency: int
    offer_deflate: bool
    never_read_rcvbuf: int | None
    plain_server: bool
    show_server_log: bool
    every: float
    workdir: Path
    server_env: dict[str, str] = field(default_factory=dict)


free_port = _target.port_picker(PORTS)


_LOG_LINE = re.compile(
    r"^\S+ \S+ (?P<name>\S+) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<message>.*)$"
)


@dataclass
class Server:
    process: trio.Process
    port: int
    show_log: bool
    tasks_file: Path | None
    levels: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    tracebacks: list[list[str]] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    running: trio.Event = field(default_factory=trio.Event)
    mallocstats: dict[str, int] = field(default_factory=dict)
    _in_traceback: bool = False
    _in_mallocstats: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def take(self, line: str) -> None:
        if line.startswith("SOAK-MALLOCSTATS-"):
            self._in_mallocstats = line.endswith("BEGIN")
            return
        if self._in_mallocstats:
            name, equals, value = line.rpartition("=")
            if equals and name.startswith("#") and value.strip().replace(",", "").isdigit():
                self.mallocstats[name.strip("# ").strip()] = int(value.strip().replace(",", ""))
            return
        self.tail = [*self.tail[-19:], line]
        if "Running on http://" in line:
            self.running.set()
        if line.startswith("Traceback"):
            self._in_traceback = True
            self.tracebacks.append([])
            self.kinds["Traceback"] += 1
        if self._in_traceback:
            if len(self.tracebacks) <= 3 and len(self.tracebacks[-1]) < 60:
                self.tracebacks[-1].append(line)
            if line and not line.startswith((" ", "Traceback")):
                self._in_traceback = False
            return
        match = _LOG_LINE.match(line)
        if match is None:
            return
        self.levels[match["level"]] += 1
        if match["level"] in ("WARNING", "ERROR", "CRITICAL"):
            message = re.sub(r"\d+", "N", match["message"])[:100]
            if len(self.kinds) < 100 or message in self.kinds:
                self.kinds[f"{match['level']} {match['name']}: {message}"] += 1

    async def drain(self) -> None:
        assert self.process.stderr is not None
        await _target.drain_lines(self.process.stderr, self.show_log, self._take_all)

    def _take_all(self, lines: list[str]) -> None:
        for line in lines:
            self.take(line)

    async def live_tasks(self) -> dict[str, Any] | None:
        """The wrapper's live tasks and the hub's drops by client port (SIGUSR1)."""
        return await self._ask(signal.SIGUSR1, "")

    async def trim(self) -> dict[str, Any] | None:
        """Live Python objects, then glibc ``malloc_trim(0)`` in the server (SIGUSR2)."""
        return await self._ask(signal.SIGUSR2, ".trim")

    async def _ask(self, signum: int, suffix: str) -> dict[str, Any] | None:
        """Signal the wrapper and read the file it writes (waiting up to 3 s)."""
        if self.tasks_file is None or self.process.returncode is not None:
            return None
        path = Path(f"{self.tasks_file}{suffix}")
        remove(path)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)
        with trio.move_on_after(3):
            while (result := read_json(path)) is None:  # noqa: ASYNC110 - another process writes it
                await trio.sleep(0.05)
            answer: dict[str, Any] = result
            return answer
        return None

    def kill(self) -> None:
        _target.signal_group(self.pid)


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[Server]:
    port = free_port()
    tasks_file = None if settings.plain_server else settings.workdir / "tasks.json"
    env = dict(settings.server_env)
    if tasks_file is not None:
        env["SOAK_TASKS_FILE"] = str(tasks_file)
    entry = ["-m", "trio_asgi_ws"] if settings.plain_server else ["-c", SERVER_WRAPPER]
    command = [settings.python, *entry, APP, "--port", str(port), *settings.server_args]
    process = await _target.open_server(command, cwd=settings.cwd, pythonpath=settings.pythonpath, env=env)
    server = Server(process, port, settings.show_server_log, tasks_file)
    async with _target.supervised(process, server.drain, server.running.wait, STARTUP_DEADLINE):
        yield server


def plan(settings: Settings) -> list[tuple[int, str, str]]:
    """(client id, kind, room) for every client: kinds shuffled, rooms round-robin."""
    count = settings.clients
    never = round(count * settings.never_read)
    resets = round(count * settings.resetters)
    kinds = ["never"] * never + ["reset"] * resets + ["reader"] * (count - never - resets)
    random.Random(settings.seed).shuffle(kinds)
    return [(cid, kind, f"room-{cid % settings.rooms}") for cid, kind in enumerate(kinds)]


@dataclass
class Sample:
    t: float
    held: int
    held_ports: set[int]
    send_queue: dict[int, int]
    """Server side, by client port: bytes written, not acknowledged (the peer's window is full)."""
    receive_queue: dict[int, int]
    """Client side, by client port: bytes arrived that the client has not read."""
    rss_kib: int
    server_cpu: float
    client_cpu: list[float]
    machine_cpu: float
    """CPU seconds used by every process on the machine (/proc/stat), to see competing load."""


def sample(server: Server, shards: Sequence[trio.Process], t: float) -> Sample | None:
    try:
        queues = tcp_queues(server.pid, server.port)
        rss = rss_kib(server.pid)
        cpu = cpu_seconds(server.pid)
    except (OSError, LookupError):
        return None
    client_cpu = []
    for shard in shards:
        try:
            client_cpu.append(cpu_seconds(shard.pid))
        except (OSError, IndexError):
            client_cpu.append(float("nan"))
    return Sample(
        t,
        len(queues),
        set(queues),
        {port: q[0] for port, q in queues.items()},
        client_receive_queues(server.port),
        rss,
        cpu,
        client_cpu,
        machine_cpu_seconds(),
    )


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def client_receive_queues(server_port: int) -> dict[int, int]:
    """Receive queues (bytes arrived, not read) of the client sockets connected to ``server_port``."""
    queues: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if int(remote.rsplit(":", 1)[1], 16) == server_port:
                queues[int(local.rsplit(":", 1)[1], 16)] = int(fields[4].partition(":")[2], 16)
    return queues


@dataclass
class Outcome:
    settings: Settings
    port: int = 0
    nofile: tuple[int, int] = (0, 0)
    t0: float = 0.0
    t_end: float = 0.0
    left_at: float = 0.0
    rss_start: int = 0
    fds_start: int = 0
    tasks_start: dict[str, Any] | None = None
    peak_kib: int = 0
    peak_reset: bool = False
    samples: list[Sample] = field(default_factory=list)
    after_left: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(seconds after everyone left, RSS KiB, open files, connections held)."""
    tasks_end: dict[str, Any] | None = None
    trim: dict[str, Any] | None = None
    mallocstats: dict[str, int] = field(default_factory=dict)
    mallocstats_start: dict[str, int] = field(default_factory=dict)
    rss_trimmed: int = 0
    fds_end_of_soak: int = 0
    still_serves: str = ""
    shard_results: list[dict[str, Any]] = field(default_factory=list)
    shard_failures: list[str] = field(default_factory=list)
    server_levels: Counter[str] = field(default_factory=Counter)
    server_kinds: Counter[str] = field(default_factory=Counter)
    server_tracebacks: list[list[str]] = field(default_factory=list)
    server_exit: str = "running"
    server_cpu: float = 0.0
    took: float = 0.0


async def still_serves(port: int) -> str:
    """A new chat client joins, posts, and gets its own message back within 5 s."""
    return await _target.still_serves(
        port,
        "/ws/soak-check?name=probe",
        expect=b"still there?",
        served="a new client is served (joined, posted, got its message back)",
        describe=describe,
    )


def prepare_shard(workdir: Path, index: int, spec: dict[str, Any]) -> tuple[Path, Any]:
    """Write client process ``index``'s spec; return its path and the open log file."""
    remove(Path(spec["out"]))
    spec_path = workdir / f"shard-{index}.spec.json"
    spec_path.write_text(json.dumps(spec))
    return spec_path, open(workdir / f"shard-{index}.log", "wb")  # closed by the caller


def read_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except OSError as error:
        return f"(no log: {error})"


async def coordinate(settings: Settings) -> Outcome:
    outcome = Outcome(settings)
    outcome.nofile = raise_nofile(settings.clients * 2 + 500)
    started = time.monotonic()
    clients = plan(settings)
    async with running_server(settings) as server:
        outcome.port = server.port
        await trio.sleep(1.0)
        outcome.rss_start = rss_kib(server.pid)
        outcome.fds_start = open_fds(server.pid)
        outcome.tasks_start = await server.live_tasks()
        await trio.sleep(0.2)  # the malloc stats arrive on stderr
        outcome.mallocstats_start = dict(server.mallocstats)
        outcome.peak_reset = reset_peak_rss(server.pid)
        print(
            f"server pid {server.pid} on port {server.port}: RSS {outcome.rss_start / 1024:.1f} MiB, "
            f"{outcome.fds_start} open files, tasks {(outcome.tasks_start or {}).get('live', '?')}",
            file=sys.stderr,
        )
        outcome.t0 = time.monotonic() + SHARD_START_DELAY
        outcome.t_end = outcome.t0 + settings.duration
        procs = max(1, settings.client_procs)
        shards: list[trio.Process] = []
        outputs: list[Path] = []
        logs = []
        try:
            for index in range(procs):
                out = settings.workdir / f"shard-{index}.json"
                spec = {
                    "port": server.port,
                    "clients": [c for c in clients if c[0] % procs == index],
                    "t0": outcome.t0,
                    "t_end": outcome.t_end,
                    "rate": settings.rate,
                    "size": settings.size,
                    "quiet": settings.quiet,
                    "drain_max": settings.drain_max,
                    "offer_deflate": settings.offer_deflate,
                    "never_read_rcvbuf": settings.never_read_rcvbuf,
                    "concurrency": settings.concurrency,
                    "seed": settings.seed,
                    "out": str(out),
                }
                spec_path, log = prepare_shard(settings.workdir, index, spec)
                logs.append(log)
                shards.append(
                    await trio.lowlevel.open_process(
                        [sys.executable, str(SCRIPT), "--shard", str(spec_path)],
                        cwd=REPO,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
                outputs.append(out)
            # Watch until every client process has exited (bounded).
            deadline = outcome.t_end + settings.drain_max + CLOSE_WAIT + 30
            next_print = outcome.t0
            while any(shard.returncode is None for shard in shards) and time.monotonic() < deadline:
                now = time.monotonic()
                taken = sample(server, shards, now - outcome.t0)
                if taken is None:
                    break
                outcome.samples.append(taken)
                if now >= next_print:
                    print(
                        f"  t={now - outcome.t0:5.1f} s held {taken.held:5d} RSS "
                        f"{taken.rss_kib / 1024:6.1f} MiB",
                        file=sys.stderr,
                    )
                    next_print += 5
                if outcome.t_end <= now and not outcome.fds_end_of_soak:
                    with contextlib.suppress(OSError):
                        outcome.fds_end_of_soak = open_fds(server.pid)
                await trio.sleep_until(trio.current_time() + 1.0 - (time.monotonic() - now))
        finally:
            for shard in shards:
                if shard.returncode is None:
                    outcome.shard_failures.append(f"client process {shard.pid} did not exit: killed")
                with trio.CancelScope(shield=True):
                    await _target.kill_group(shard)
            for log in logs:
                log.close()
        outcome.left_at = time.monotonic()
        for index, (shard, out) in enumerate(zip(shards, outputs, strict=True)):
            result = read_json(out)
            if result is not None:
                outcome.shard_results.append(result)
            else:
                tail = read_tail(settings.workdir / f"shard-{index}.log")
                outcome.shard_failures.append(f"client process {index} exit {shard.returncode}: {tail}")
        # After everyone left: the server's memory and files settle (or not).
        points = sorted({0.0, 5.0, 10.0, settings.linger})
        for delay in points:
            if delay > settings.linger:
                continue
            await trio.sleep_until(trio.current_time() + max(0.0, outcome.left_at + delay - time.monotonic()))
            try:
                outcome.after_left.append(
                    (
                        delay,
                        rss_kib(server.pid),
                        open_fds(server.pid),
                        len(tcp_queues(server.pid, server.port)),
                    )
                )
            except (OSError, LookupError):
                break
            print(
                f"  {delay:g} s after all clients left: RSS {outcome.after_left[-1][1] / 1024:.1f} MiB",
                file=sys.stderr,
            )
        with contextlib.suppress(OSError, LookupError):
            outcome.peak_kib = peak_rss_kib(server.pid)
            outcome.server_cpu = cpu_seconds(server.pid)
        outcome.tasks_end = await server.live_tasks()
        await trio.sleep(0.2)
        outcome.mallocstats = dict(server.mallocstats)
        outcome.trim = await server.trim()
        if outcome.trim is not None:
            await trio.sleep(0.5)
            with contextlib.suppress(OSError, LookupError):
                outcome.rss_trimmed = rss_kib(server.pid)
        outcome.still_serves = await still_serves(server.port)
        code = server.process.returncode
        outcome.server_exit = (
            "running at the end (killed)" if code is None else f"exited {code} during the soak"
        )
        await trio.sleep(0.2)
        outcome.server_levels = server.levels
        outcome.server_kinds = server.kinds
        outcome.server_tracebacks = server.tracebacks
    outcome.took = time.monotonic() - started
    return outcome


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    readers: int = 0
    excluded: list[str] = field(default_factory=list)
    posts: int = 0
    expected: int = 0
    delivered: int = 0
    early: int = 0
    """Received posts written before the receiver's joined_at (allowed, not required)."""
    duplicates: int = 0
    reordered: int = 0
    lost_pairs: list[str] = field(default_factory=list)
    lost: int = 0
    beyond: int = 0
    per_reader: list[tuple[int, int, int, int | None]] = field(default_factory=list)
    """(reader id, expected, delivered, its local port)."""


def check_delivery(results: Sequence[dict[str, Any]]) -> Delivery:
    readers: dict[int, dict[str, Any]] = {}
    for result in results:
        for cid, record in result["readers"].items():
            readers[int(cid)] = record
    check = Delivery(readers=len(readers))
    good = {}
    for cid, record in readers.items():
        if record["dropped"] or record["joined_at"] is None:
            check.excluded.append(f"c{cid}: {record['dropped'] or 'never joined'}")
        else:
            good[cid] = record
    by_room: dict[str, list[int]] = {}
    for cid, record in good.items():
        by_room.setdefault(record["room"], []).append(cid)
    check.posts = sum(len(record["posts"]) for record in good.values())
    for receiver, record in good.items():
        reader_expected = reader_delivered = 0
        received = record["recv"]
        for sender in by_room[record["room"]]:
            posts = good[sender]["posts"]
            total = len(posts)
            first_expected = bisect_right(posts, record["joined_at"]) + 1  # seq numbers from 1
            expected = max(0, total - first_expected + 1)
            entry = received.get(str(sender))
            got = 0
            if entry is not None:
                first, last, _distinct, duplicates, reordered, missing = entry
                check.duplicates += duplicates
                check.reordered += reordered
                low, high = max(first_expected, first), min(total, last)
                got = max(0, high - low + 1) - sum(1 for m in missing if low <= m <= high)
                check.early += max(0, min(last, first_expected - 1) - first + 1) - sum(
                    1 for m in missing if m < first_expected
                )
                if last > total:
                    check.beyond += last - total
            reader_expected += expected
            reader_delivered += got
            if got < expected:
                check.lost += expected - got
                if len(check.lost_pairs) < 20:
                    detail = (
                        f"c{receiver} from c{sender}: {got} of {expected} "
                        f"(expected #{first_expected}-#{total}; received "
                        + (
                            f"#{entry[0]}-#{entry[1]}, {len(entry[5])} missing in between {entry[5][:8]}"
                            if entry
                            else "nothing"
                        )
                        + f"; joined_at {record['joined_at']:.3f}, sender's last post at "
                        f"{posts[-1] if posts else float('nan'):.3f})"
                    )
                    check.lost_pairs.append(detail)
        check.expected += reader_expected
        check.delivered += reader_delivered
        check.per_reader.append((receiver, reader_expected, reader_delivered, record.get("local_port")))
    return check


def merge_counters(results: Sequence[dict[str, Any]], key: str) -> Counter[Any]:
    total: Counter[Any] = Counter()
    for result in results:
        for name, count in result[key].items():
            total[int(name) if key.endswith("_ms") else name] += count
    return total


def pymalloc_text(stats: dict[str, int]) -> str:
    """The arenas pymalloc holds from the OS (1 MiB each on 64-bit CPython 3.10+)."""
    arenas = stats.get("arenas allocated current")
    if arenas is None:
        return "?"
    return f"{arenas} (peak {stats.get('arenas highwater mark', '?')})"


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def report(outcome: Outcome, description: Sequence[str]) -> None:
    settings = outcome.settings
    results = outcome.shard_results
    kinds = Counter(kind for _, kind, _ in plan(settings))
    for line in description:
        print(line)
    print(
        f"soak: {settings.clients} clients ({kinds['reader']} readers posting every "
        f"{1 / settings.rate:g} s, {kinds['never']} never reading, {kinds['reset']} resetting), "
        f"{settings.rooms} rooms (~{settings.clients / settings.rooms:.0f} each), "
        f"{settings.duration:g} s, {settings.client_procs} client process(es), text ~{settings.size} B, "
        f"client deflate offer: {'yes' if settings.offer_deflate else 'no'}"
    )
    print(
        f"open-file limit (soft/hard) for the clients and server: {outcome.nofile[0]}/{outcome.nofile[1]}; "
        f"took {outcome.took:.0f} s"
    )
    print()

    # Timeline
    print(
        f"| t (s) | connections held (target {settings.clients}) | server RSS MiB | server CPU % | "
        + " | ".join(f"client {i} CPU %" for i in range(settings.client_procs))
        + " | others CPU % |"
    )
    print("|---:|---:|---:|---:|" + "---:|" * settings.client_procs + "---:|")
    samples = outcome.samples
    shown = -1e9
    for index, point in enumerate(samples):
        is_last = index == len(samples) - 1
        if point.t - shown < settings.every - 0.01 and not is_last:
            continue
        previous = samples[index - 1] if index else point
        span = max(1e-6, point.t - previous.t)
        server_pct = (point.server_cpu - previous.server_cpu) / span * 100 if index else 0.0
        client_pct = [
            (now - before) / span * 100 if index else 0.0
            for now, before in zip(point.client_cpu, previous.client_cpu, strict=False)
        ]
        machine_pct = (point.machine_cpu - previous.machine_cpu) / span * 100 if index else 0.0
        others_pct = max(0.0, machine_pct - server_pct - sum(client_pct))
        print(
            f"| {point.t:.0f} | {point.held} | {fmt_mib(point.rss_kib)} | {server_pct:.0f} | "
            + " | ".join(f"{pct:.0f}" for pct in client_pct)
            + f" | {others_pct:.0f} |"
        )
        shown = point.t
    print()

    rows: list[tuple[str, str]] = []
    steady = [p.held for p in samples if settings.duration * 0.25 <= p.t <= settings.duration]
    if steady:
        rows.append(
            (
                "connections held, soak t = 25%..100%",
                f"target {settings.clients}; min {min(steady)}, median {statistics.median(steady):.0f}, "
                f"max {max(steady)} (resetters are between connections part of the time)",
            )
        )
    ramp = next((p.t for p in samples if p.held >= settings.clients - kinds["reset"]), None)
    rows.append(
        (
            "ramp",
            f"{settings.clients - kinds['reset']} held after {ramp:.0f} s"
            if ramp is not None
            else "never reached",
        )
    )

    check = check_delivery(results) if results else None
    if check is not None:
        equal = sum(1 for _, expected, delivered, _ in check.per_reader if expected == delivered)
        expected_each = [expected for _, expected, _, _ in check.per_reader]
        rows += [
            ("posts by well-behaved readers", f"{check.posts:,}"),
            (
                "published while subscribed (expected deliveries) vs delivered",
                f"{check.expected:,} vs {check.delivered:,} "
                f"({100 * check.delivered / max(1, check.expected):.3f}%); plus {check.early:,} "
                f"posted before the receiver saw its own join, delivered too",
            ),
            (
                "readers with delivered == published",
                f"{equal} of {len(check.per_reader)} "
                f"(expected per reader: min {min(expected_each, default=0):,}, "
                f"median {statistics.median(expected_each) if expected_each else 0:,.0f}, "
                f"max {max(expected_each, default=0):,})",
            ),
            ("lost (expected, never received)", f"{check.lost:,}"),
            ("duplicates", f"{check.duplicates:,}"),
            ("reordered", f"{check.reordered:,}"),
            ("numbers beyond the sender's last post", f"{check.beyond:,}"),
            (
                "readers excluded (dropped or never joined)",
                f"{len(check.excluded)}" + (f": {'; '.join(check.excluded[:5])}" if check.excluded else ""),
            ),
        ]
        if outcome.tasks_end is not None:
            drops = {int(port): count for port, count in outcome.tasks_end.get("drops", {}).items()}
            reader_ports = {port for *_, port in check.per_reader}
            never_ports = {info.get("local_port") for result in results for info in result["never"].values()}
            short = [
                (expected - delivered, drops.get(port or -1, 0))
                for _, expected, delivered, port in check.per_reader
            ]
            losing = [(lost, dropped) for lost, dropped in short if lost]
            unexplained = sum(lost - dropped for lost, dropped in losing if lost > dropped)
            for_readers = sum(n for p, n in drops.items() if p in reader_ports)
            readers_dropped = sum(1 for p in reader_ports if drops.get(p or -1))
            for_nevers = sum(n for p, n in drops.items() if p in never_ports)
            for_others = sum(drops.values()) - for_readers - for_nevers
            rows.append(
                (
                    "dropped by the hub (drop_oldest, the subscriber >100 behind), server-side count",
                    f"{sum(drops.values()):,} in all: {for_readers:,} for the checked readers "
                    f"({readers_dropped} readers), {for_nevers:,} for never-readers, {for_others:,} "
                    "for others (resetters, excluded readers)",
                )
            )
            rows.append(
                (
                    "lost messages explained by those drops",
                    f"{len(losing) - sum(1 for lost, dropped in losing if lost > dropped)} of {len(losing)} "
                    f"readers that lost some; lost beyond the hub's drops: {unexplained:,}",
                )
            )
        latency = merge_counters(results, "latency_ms")
        lateness = merge_counters(results, "lateness_ms")
        rows.append(("latency write → read, ms", spread(latency)))
        rows.append(("post lateness against schedule, ms (client lag)", spread(lateness)))
        closes: Counter[str] = merge_counters(results, "close_codes")
        rows.append(("readers' close (code, TCP)", ", ".join(f"{k}: {v}" for k, v in closes.most_common())))

        # Never-readers: how long the server held them, what it had queued for them.
        nevers = {int(cid): info for result in results for cid, info in result["never"].items()}
        ports = {info["local_port"]: cid for cid, info in nevers.items() if "local_port" in info}
        last_seen: dict[int, float] = {}
        queued: dict[int, int] = {}
        for point in samples:
            for port in ports.keys() & point.held_ports:
                last_seen[port] = point.t
                queued[port] = point.send_queue.get(port, 0) + point.receive_queue.get(port, 0)
        # Until the first client process stopped its clients (after the drain).
        cutoff = min(result["drained_at"] for result in results) - outcome.t0
        end_point = max((p for p in samples if p.t < cutoff), key=lambda p: p.t, default=None)
        held_at_end = len(ports.keys() & end_point.held_ports) if end_point else 0
        dropped_times = sorted(
            t - (nevers[cid]["connected_at"] - outcome.t0)
            for port, cid in ports.items()
            if end_point and port not in end_point.held_ports and (t := last_seen.get(port)) is not None
        )
        never_text = (
            f"{len(ports)} joined; still held by the server when the clients stopped (t = {cutoff:.0f} s): "
            f"{held_at_end}"
            + (
                f"; dropped by the server: {len(dropped_times)}, after {dropped_times[0]:.0f}-"
                f"{dropped_times[-1]:.0f} s held (±1 s)"
                if dropped_times
                else ""
            )
            + (
                f"; unread in the kernel (server send queue + client receive queue) when last held: "
                f"max {max(queued.values()) / 1024:.0f} KiB, total {sum(queued.values()) / 1024:.0f} KiB"
                if queued
                else ""
            )
        )
        rows.append(("never-readers", never_text))
        resets = [info for result in results for info in result["resetters"].values()]
        rows.append(
            (
                "resetters",
                f"{len(resets)}: {sum(r.get('cycles', 0) for r in resets):,} connections reset (RST), "
                f"{sum(r.get('posted', 0) for r in resets):,} messages posted",
            )
        )
        errors = merge_counters(results, "errors")
        rows.append(
            ("client errors by kind", ", ".join(f"{k}: {v}" for k, v in errors.most_common()) or "none")
        )
    for failure in outcome.shard_failures:
        rows.append(("client process failure", failure.replace("\n", " / ")[-600:]))

    levels = outcome.server_levels
    rows.append(
        (
            "server log",
            f"{levels['INFO']:,} INFO, {levels['WARNING']:,} WARNING, {levels['ERROR']:,} ERROR, "
            f"{len(outcome.server_tracebacks)} tracebacks",
        )
    )
    for kind, count in outcome.server_kinds.most_common(8):
        rows.append(("server log kind", f"{count} x {kind}"))
    after = outcome.after_left
    last = after[-1] if after else None
    end_rss = max((p for p in samples if p.t <= settings.duration), key=lambda p: p.t, default=None)
    rows.append(
        (
            "server RSS MiB",
            f"start {fmt_mib(outcome.rss_start)}, peak {fmt_mib(outcome.peak_kib)}"
            + ("" if outcome.peak_reset else " (VmHWM not reset)")
            + (f", end of soak {fmt_mib(end_rss.rss_kib)}" if end_rss else "")
            + "".join(f", {delay:g} s after all left {fmt_mib(rss)}" for delay, rss, _, _ in after)
            + (f" (= {last[1] / outcome.rss_start:.2f}x start)" if last else ""),
        )
    )
    if outcome.trim is not None and outcome.rss_trimmed:
        rows.append(
            (
                "diagnostic, at the very end: gc-tracked objects; pymalloc's 1 MiB arenas; RSS after "
                "glibc malloc_trim(0)",
                f"objects {(outcome.tasks_start or {}).get('objects', 0):,} at start, "
                f"{outcome.trim['objects']:,} at the end; arenas {pymalloc_text(outcome.mallocstats_start)} "
                f"at start, {pymalloc_text(outcome.mallocstats)} at the end"
                + f"; RSS after the trim {fmt_mib(outcome.rss_trimmed)} MiB "
                f"(= {outcome.rss_trimmed / outcome.rss_start:.2f}x start)",
            )
        )
    rows.append(
        (
            "server open files",
            f"start {outcome.fds_start}, end of soak {outcome.fds_end_of_soak}"
            + "".join(f", {delay:g} s after all left {fds}" for delay, _, fds, _ in after),
        )
    )
    rows.append(
        (
            "connections held after all left",
            ", ".join(f"{delay:g} s: {held}" for delay, _, _, held in after),
        )
    )

    def tasks_text(tasks: dict[str, Any] | None) -> str:
        if tasks is None:
            return "?"
        return f"{tasks['live']}"

    task_note = ""
    if outcome.tasks_end and outcome.tasks_start and outcome.tasks_end["live"] != outcome.tasks_start["live"]:
        task_note = (
            " (by name at the end: " + ", ".join(f"{n} {c}" for n, c in outcome.tasks_end["names"]) + ")"
        )
    rows.append(
        (
            "server live trio tasks",
            "not counted (--plain-server)"
            if settings.plain_server
            else f"start {tasks_text(outcome.tasks_start)}, {settings.linger:g} s after all left "
            f"{tasks_text(outcome.tasks_end)}{task_note}",
        )
    )
    soak_samples = [p for p in samples if p.t >= 0]
    if len(soak_samples) >= 2:
        span = soak_samples[-1].t - soak_samples[0].t
        server_pct = (soak_samples[-1].server_cpu - soak_samples[0].server_cpu) / span * 100
        client_pcts = [
            (b - a) / span * 100
            for a, b in zip(soak_samples[0].client_cpu, soak_samples[-1].client_cpu, strict=False)
        ]
        machine_pct = (soak_samples[-1].machine_cpu - soak_samples[0].machine_cpu) / span * 100
        others = machine_pct - server_pct - sum(client_pcts)
        rows.append(
            (
                "CPU % of one core, average from start to the clients' exit",
                f"server {server_pct:.0f}; client processes "
                + ", ".join(f"{pct:.0f}" for pct in client_pcts)
                + f"; other processes on the machine {max(0.0, others):.0f} "
                f"(of {100 * (os.cpu_count() or 1)})",
            )
        )
    rows.append(("after the soak", outcome.still_serves))
    rows.append(("server process", outcome.server_exit))

    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value.replace('|', '/')} |")
    if check is not None and check.lost_pairs:
        print()
        print("Lost (first 20 receiver/sender pairs):")
        for line in check.lost_pairs:
            print(f"- {line}")
    anomalies = [a for result in results for a in result["anomalies"]]
    if anomalies:
        print()
        print(f"Anomalies (first {min(20, len(anomalies))}):")
        for line in anomalies[:20]:
            print(f"- {line}")
    for traceback in outcome.server_tracebacks[:3]:
        print()
        print("Server traceback:")
        for line in traceback:
            print(f"    {line}")


def describe_target(settings: Settings) -> list[str]:
    commit, imports = _target.probe_target(settings.python, settings.cwd, settings.pythonpath)
    how = (
        "python -m trio_asgi_ws" if settings.plain_server else "python -m trio_asgi_ws (runpy, task counter)"
    )
    environment = " ".join(f"{key}={value}" for key, value in settings.server_env.items())
    return [
        f"server: {environment + ' ' if environment else ''}{how} {APP} --port P "
        f"{shlex.join(settings.server_args)}".rstrip(),
        f"cwd: {settings.cwd} (git {commit}), imports: {imports}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--shard"]:
        return run_shard(argv[1])
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000, help="concurrent connections (default 1000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of posting (default 60)")
    parser.add_argument("--rooms", type=int, default=None, help="rooms (default: clients / 5)")
    parser.add_argument("--never-read", type=float, default=0.05, help="share that never reads (0.05)")
    parser.add_argument(
        "--resetters", type=float, default=0.05, help="share that resets and reconnects (0.05)"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--rate", type=float, default=1.0, help="posts per second per reader (default 1)")
    parser.add_argument("--size", type=int, default=100, help="approximate bytes per chat text (default 100)")
    parser.add_argument(
        "--quiet", type=float, default=3.0, help="drain ends after this long without a message"
    )
    parser.add_argument("--drain-max", type=float, default=30.0, help="longest drain after the soak (s)")
    parser.add_argument("--linger", type=float, default=25.0, help="seconds to watch after all left (25)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes at once per client process")
    parser.add_argument(
        "--no-deflate-offer",
        dest="offer_deflate",
        action="store_false",
        help="clients don't offer permessage-deflate (by default they do, as browsers do)",
    )
    parser.add_argument(
        "--never-read-rcvbuf",
        type=int,
        default=None,
        help="SO_RCVBUF of never-readers (default: the kernel's)",
    )
    parser.add_argument("--plain-server", action="store_true", help="run `python -m trio_asgi_ws` itself")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between timeline rows (5)")
    parser.add_argument("--server-args", default="", help="extra server CLI options, one string (use =)")
    parser.add_argument("--cwd", type=Path, default=REPO, help="checkout to run the server in")
    parser.add_argument("--pythonpath", default=None, help="PYTHONPATH for the server (default: --cwd)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)"
    )
    parser.add_argument("--show-server-log", action="store_true", help="copy the server's stderr to ours")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the server only (repeatable), e.g. PYTHONMALLOC=malloc",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    if args.clients < 1 or args.duration <= 0 or args.rate <= 0:
        parser.error("--clients, --duration and --rate must be positive")
    cwd = args.cwd.resolve()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            python=args.python,
            cwd=cwd,
            pythonpath=args.pythonpath or str(cwd),
            server_args=shlex.split(args.server_args) + extra,
            clients=args.clients,
            duration=args.duration,
            rooms=max(1, args.rooms if args.rooms is not None else round(args.clients / 5)),
            never_read=args.never_read,
            resetters=args.resetters,
            client_procs=max(1, args.client_procs),
            rate=args.rate,
            size=args.size,
            quiet=args.quiet,
            drain_max=args.drain_max,
            linger=args.linger,
            seed=args.seed,
            concurrency=args.concurrency,
            offer_deflate=args.offer_deflate,
            never_read_rcvbuf=args.never_read_rcvbuf,
            plain_server=args.plain_server,
            show_server_log=args.show_server_log,
            every=args.every,
            workdir=workdir,
            server_env=dict(item.split("=", 1) for item in args.server_env),
        )
        description = describe_target(settings)
        for line in description:
            print(line, file=sys.stderr)
        outcome = trio.run(coordinate, settings)
        report(outcome, description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
