"""Broadcast benchmark: one room of N real WebSocket clients, six servers side by side.

    python bench/broadcast.py [--quick] [--clients 1000 100] [--rounds 3] [--contenders A,B,...]
                              [--messages M] [--repo DIR]

Contenders (each a fresh server process per run; compression and pings off everywhere):

- ``hub-serve``: ``trio_asgi_ws.broadcast`` (memory backend), each socket a ``forward`` task with a
  bounded buffer (100 messages, drop_oldest), under ``trio_asgi_ws.server.serve()`` (pings and
  ``read_timeout`` off, otherwise its defaults: ``send_timeout`` 10 s);
- ``naive-serve``: the tutorial loop ``for ws in sockets: await ws.send_text(m)`` in the
  publisher's handler, under ``serve()``;
- ``hub-hypercorn``, ``naive-hypercorn``: the same two apps under plain ``hypercorn.trio.serve``
  (none of ``serve()``'s fixes to hypercorn's trio worker, none of our ASGI extensions);
- ``websockets-trio``: websockets' trio server, ``await broadcast(room, m)`` (its trio
  ``broadcast`` sends to every connection in a task each and returns when all sends are done);
- ``websockets-asyncio``: websockets' asyncio server, the synchronous ``broadcast(room, m)``
  (writes into every connection's transport buffer, with no backpressure).

Every server listens on a socket made here with a small ``SO_SNDBUF`` (16 KiB, inherited by the
accepted sockets) and ``TCP_NODELAY``.  ``--repo DIR`` imports ``trio_asgi_ws`` from another
checkout (e.g. a ``git worktree`` of an older commit) in the server processes.

One run = one server process, one room.  Clients are trio-websocket connections spread over
``--client-procs`` client processes (2 by default: with 1,000 clients one process is slower than
the servers); the publisher is one more connection, in this process.  In a run:

1. "stalled" runs first connect the stalled clients (5% of N, ``SO_RCVBUF`` 16 KiB, never read
   after the handshake) and publish ``--fill`` messages (150) to the room while they are its only
   members, so their TCP buffers are full before anyone else joins, as a dead-slow client's would
   be after a while;
2. the reading clients connect (and get a "ready" from the server once in the room);
3. **unsaturated** phase: ``--unsaturated-messages`` (20) at 5 per second, each timed from when it
   was due (a server that holds up the publisher is charged for the wait);
4. **saturated** phase: ``--messages`` (default 30,000 / N, between 30 and 100: the hub's buffers
   hold 100, so it never needs to drop one) as fast as the server acknowledges them, with at most
   ``--window`` (8) publishes unacknowledged; each timed from when it was sent.

A phase ends when every reading client has every message, or when no reading client has received
anything for ``--stall-timeout`` seconds (the room has *stopped*), or after ``--deadline``.
Messages are ~540 B JSON text.  Per phase: deliveries/s to reading clients (first publish to last
arrival); server CPU µs per delivery (the server's user+sys time just before and just after the
phase, divided by the deliveries to reading clients; read from /proc/PID/task/*/schedstat, which
counts nanoseconds, where /proc/PID/stat counts 10 ms ticks); for each message the time until every
reading client had it, p50/p99; the delivered share; the server's peak RSS in the phase (VmHWM,
reset through /proc/PID/clear_refs when the phase starts); and which side was the bottleneck: the
share of the phase the server, and the busiest client process, was *runnable* (on a CPU or waiting
in the run queue, from schedstat).  A process runnable ~100% of the time is what everything waits
for; CPU time alone cannot tell, since other processes share the two cores.

Contenders alternate within each round (the first rotates from round to round); tables give
medians over rounds, and CPU ratios as the median of per-round ratios.  These machines are noisy:
read ratios, not absolute numbers.  Progress goes to stderr, tables to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))

from _processes import LineReader, describe_checkout  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

SMALL_BUFFER = 16 * 1024
PAD = "x" * 500
STALLED_SHARE = 0.05
HUB_BUFFER = 100
CONTENDERS = (
    "hub-serve",
    "naive-serve",
    "hub-hypercorn",
    "naive-hypercorn",
    "websockets-trio",
    "websockets-asyncio",
)
PHASES = ("unsaturated", "saturated")
RATIO_BASES = ("naive-serve", "websockets-asyncio")
RUNNABLE_BOUND = 0.9


def message_text(phase: int, index: int, count: int) -> str:
    """A ~540 B JSON text message: which phase, which message of how many, and padding."""
    return json.dumps({"p": phase, "i": index, "n": count, "t": time.monotonic(), "pad": PAD})


# -- the servers (one process per run: ``--serve CONTENDER``) ------------------------------------


def listening_socket() -> socket.socket:
    """127.0.0.1, an OS-chosen port, a small send buffer (inherited by accepted sockets)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def say_hello(sock: socket.socket) -> None:
    """Tell the parent the port and pid, and which trio_asgi_ws this process runs (if any)."""
    module = sys.modules.get("trio_asgi_ws")
    hello = {
        "port": sock.getsockname()[1],
        "pid": os.getpid(),
        "trio_asgi_ws": getattr(module, "__file__", None),
    }
    sys.stdout.write(json.dumps(hello) + "\n")
    sys.stdout.flush()


def build_app(mode: str) -> Any:
    """The trio_asgi_ws app: ``/room`` joins the room, ``/publish`` publishes what it receives.

    ``mode`` "hub": a ``forward`` task per member; "naive": the tutorial loop over a list.
    Only the library's public API is used (the hub's internals are being changed).
    """
    from trio_asgi_ws import WebSocket, WebSocketDisconnect
    from trio_asgi_ws.broadcast import open_broadcast
    from trio_asgi_ws.routing import Router

    members: list[WebSocket] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with open_broadcast() as hub:
            yield {"hub": hub}

    app = Router(lifespan=lifespan)

    @app.websocket("/room")
    async def member(ws: WebSocket) -> None:
        await ws.accept()
        if mode == "hub":
            async with trio.open_nursery() as nursery:
                await nursery.start(_forward, ws.state.hub, ws)
                await ws.send_text("ready")
                async for _ in ws.iter_text():
                    pass
                nursery.cancel_scope.cancel()
        else:
            members.append(ws)
            try:
                await ws.send_text("ready")
                async for _ in ws.iter_text():
                    pass
            finally:
                members.remove(ws)

    @app.websocket("/publish", structured=False)
    async def publisher(ws: WebSocket) -> None:
        await ws.accept()
        hub = ws.state.hub
        async for text in ws.iter_text():
            if mode == "hub":
                await hub.publish("room", text)
            else:
                for other in list(members):  # the tutorial pattern
                    with contextlib.suppress(WebSocketDisconnect):
                        await other.send_text(text)
            await ws.send_text("published")

    return app


async def _forward(hub: Any, ws: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await hub.forward("room", ws, max_buffer=HUB_BUFFER, overflow="drop_oldest", task_status=task_status)


async def serve_ours(mode: str, sock: socket.socket) -> None:
    from trio_asgi_ws.server import serve

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                serve,
                build_app(mode),
                "127.0.0.1",
                0,
                sockets=sock,
                handle_signals=False,
                ping_interval=None,
                read_timeout=None,
            )
        )
        say_hello(sock)


async def serve_hypercorn(mode: str, sock: socket.socket) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = 4096
    config.accesslog = None
    config.loglevel = "WARNING"
    config.websocket_ping_interval = None
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve, build_app(mode), config))
        say_hello(sock)


async def serve_websockets_trio(sock: socket.socket) -> None:
    from websockets.trio.connection import broadcast
    from websockets.trio.server import ServerConnection, serve

    room: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == "/room":
            room.add(connection)
            try:
                await connection.send("ready")
                async for _ in connection:
                    pass
            finally:
                room.discard(connection)
        else:
            async for text in connection:
                await broadcast(room, text)
                await connection.send("published")

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(serve, handler, listeners=[listener], compression=None, ping_interval=None)
        )
        say_hello(sock)


async def serve_websockets_asyncio(sock: socket.socket) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    room: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == "/room":
            room.add(connection)
            try:
                await connection.send("ready")
                await connection.wait_closed()
            finally:
                room.discard(connection)
        else:
            async for text in connection:
                broadcast(room, text)
                await connection.send("published")

    async with serve(handler, sock=sock, compression=None, ping_interval=None):
        say_hello(sock)
        await asyncio.get_running_loop().create_future()


def run_server(contender: str) -> None:
    logging.basicConfig(level=logging.CRITICAL)  # websockets warns on every skipped send
    sock = listening_socket()
    if contender.endswith("-serve"):
        trio.run(serve_ours, contender.removesuffix("-serve"), sock)
    elif contender.endswith("-hypercorn"):
        trio.run(serve_hypercorn, contender.removesuffix("-hypercorn"), sock)
    elif contender == "websockets-trio":
        trio.run(serve_websockets_trio, sock)
    elif contender == "websockets-asyncio":
        asyncio.run(serve_websockets_asyncio(sock))
    else:
        raise ValueError(contender)


# -- client processes (``--client``): reading and stalled room members ---------------------------


@dataclass
class PhaseLog:
    """Arrival times of one phase's messages at each reader of this process (0.0: not yet)."""

    count: int
    readers: int
    arrivals: list[list[float]] = field(default_factory=list)
    received: int = 0
    last: float = 0.0

    def __post_init__(self) -> None:
        self.arrivals = [[0.0] * self.count for _ in range(self.readers)]


class ClientSession:
    """The room members of one run in this process; ``close()`` drops them all."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.readers = 0
        self.streams: list[trio.SocketStream] = []
        self.phases: dict[int, PhaseLog] = {}

    async def join(self, port: int, index: int, stalled: bool) -> None:
        import trio_websocket

        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if stalled:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, SMALL_BUFFER)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        self.streams.append(stream)
        # message_queue_size=1: a member that is not read stops reading its socket at once.
        ws = await trio_websocket.wrap_client_stream(
            self.nursery,
            stream,
            f"127.0.0.1:{port}",
            "/room",
            message_queue_size=1,
            max_message_size=1 << 20,
        )
        if await ws.get_message() != "ready":
            raise RuntimeError("expected 'ready' from the server")
        if not stalled:
            self.nursery.start_soon(self.read, index, ws)

    async def read(self, index: int, ws: Any) -> None:
        import trio_websocket

        phases = self.phases
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                text = await ws.get_message()
                now = time.monotonic()
                data = json.loads(text)
                log = phases.get(data["p"])
                if log is None:
                    log = phases[data["p"]] = PhaseLog(data["n"], self.readers)
                row = log.arrivals[index]
                if not row[data["i"]]:
                    row[data["i"]] = now
                    log.received += 1
                    log.last = now

    async def connect(self, port: int, count: int, stalled: bool, parallel: int = 32) -> None:
        limit = trio.Semaphore(parallel)
        first = self.readers
        if not stalled:
            self.readers += count

        async def one(index: int) -> None:
            async with limit:
                await self.join(port, index, stalled)

        async with trio.open_nursery() as nursery:
            for offset in range(count):
                nursery.start_soon(one, first + offset)

    async def wait_phase(
        self, phase: int, count: int, stall_timeout: float, deadline: float
    ) -> dict[str, Any]:
        start = time.monotonic()
        expected = count * self.readers
        status = "done"
        while True:
            log = self.phases.get(phase)
            received = log.received if log else 0
            if received >= expected:
                break
            now = time.monotonic()
            if now - max(start, log.last if log else 0.0) > stall_timeout:
                status = "stopped"
                break
            if now - start > deadline:
                status = "deadline"
                break
            await trio.sleep(0.02)
        log = self.phases.setdefault(phase, PhaseLog(count, self.readers))
        everyone = []  # per message: when the last of this process's readers had it (0: not all did)
        for i in range(count):
            times = [row[i] for row in log.arrivals]
            everyone.append(max(times) if times and all(times) else 0.0)
        return {
            "received": log.received,
            "expected": expected,
            "last": log.last,
            "status": status,
            "everyone": everyone,
        }

    def close(self) -> None:
        self.nursery.cancel_scope.cancel()
        for stream in self.streams:
            stream.socket.close()


async def client_main() -> None:
    lines = LineReader(trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))
    session: ClientSession | None = None

    async def hold(task_status: trio.TaskStatus[ClientSession]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(ClientSession(nursery))
            await trio.sleep_forever()

    async with trio.open_nursery() as top:
        while line := await lines.readline():
            command = json.loads(line)
            reply: dict[str, Any] = {"ok": True}
            if command["cmd"] == "connect":
                if session is None:
                    session = await top.start(hold)
                await session.connect(command["port"], command["count"], command["stalled"])
            elif command["cmd"] == "phase":
                assert session is not None
                reply = await session.wait_phase(
                    command["phase"], command["count"], command["stall_timeout"], command["deadline"]
                )
            elif command["cmd"] == "close":
                if session is not None:
                    session.close()
                    session = None
            else:
                raise ValueError(f"unknown command {command!r}")
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
        top.cancel_scope.cancel()


# -- the parent: processes, publisher, phases, tables ---------------------------------------------


class Child:
    """A subprocess of this script in its own session, spoken to in JSON lines."""

    def __init__(self, process: trio.Process, name: str) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.name = name
        self._stdin = process.stdin
        self._lines = LineReader(process.stdout)

    @classmethod
    async def start(cls, name: str, *args: str, quiet: bool = True) -> Child:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None,
            start_new_session=True,
        )
        return cls(process, name)

    async def request(self, command: dict[str, Any] | None = None) -> dict[str, Any]:
        if command is not None:
            await self._stdin.send_all((json.dumps(command) + "\n").encode())
        line = await self._lines.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self.process.poll()}) without answering")
        return json.loads(line)  # type: ignore[no-any-return]

    async def kill(self) -> None:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


def cpu_sample(pid: int) -> tuple[float, float]:
    """Seconds a process (all its threads) has spent on a CPU, and waiting for one while runnable.

    From /proc/PID/task/*/schedstat (nanoseconds; user + system time on CPU, then run-queue wait)
    where the kernel has it.  Otherwise utime + stime from /proc/PID/stat, in clock ticks (10 ms,
    too coarse for a phase that costs the server a few dozen milliseconds), and no wait time.
    """
    try:
        on_cpu = waiting = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "schedstat").read_text().split()
            on_cpu += int(fields[0])
            waiting += int(fields[1])
        return on_cpu / 1e9, waiting / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK, 0.0


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


@dataclass
class Settings:
    clients: int
    stalled: int
    unsaturated_messages: int
    saturated_messages: int
    rate: float
    window: int
    fill: int
    stall_timeout: float
    deadline: float


@dataclass
class PhaseResult:
    contender: str
    phase: str
    status: str
    received: int
    expected: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    server_busy: float
    server_runnable: float
    client_busy: float
    client_runnable: float
    peak_rss_mib: float
    fill_acked: int | None = None

    @property
    def cpu_per_delivery_us(self) -> float:
        return self.server_cpu / self.received * 1e6 if self.received else math.nan

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


class Publisher:
    """The publishing connection: counts acknowledgements, keeps send times per message."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sent = 0
        self.acked = 0
        self._ack = trio.Event()

    async def read_acks(self) -> None:
        import trio_websocket

        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                await self.ws.get_message()
                self.acked += 1
                self._ack.set()
                self._ack = trio.Event()

    async def wait_for_window(self, window: int) -> None:
        while self.sent - self.acked >= window:
            await self._ack.wait()

    async def send(self, text: str) -> None:
        self.sent += 1
        await self.ws.send_message(text)

    async def saturate(self, phase: int, count: int, window: int, sent_at: list[float]) -> None:
        for i in range(count):
            await self.wait_for_window(window)
            sent_at[i] = time.monotonic()
            await self.send(message_text(phase, i, count))

    async def pace(self, phase: int, count: int, rate: float, sent_at: list[float]) -> None:
        start = time.monotonic()
        for i in range(count):
            due = start + i / rate
            await trio.sleep(max(0.0, due - time.monotonic()))
            sent_at[i] = due  # from when it was due: holding up the publisher counts
            await self.send(message_text(phase, i, count))

    async def fill(self, count: int, window: int, idle: float = 1.0) -> int:
        """Publish ``count`` messages no one reads; return how many were acknowledged."""
        sent_at = [0.0] * count
        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.saturate, 0, count, window, sent_at)
                target = self.sent + count
                while self.acked < target:
                    before = self.acked
                    await trio.sleep(idle)
                    if self.acked == before:
                        break
                nursery.cancel_scope.cancel()
        return self.acked


async def run_once(
    contender: str, settings: Settings, workers: list[Child], repo: Path | None, quiet: bool
) -> dict[str, PhaseResult]:
    """One fresh server, one room: connect, (fill), the unsaturated then the saturated phase."""
    import trio_websocket

    args = ["--serve", contender] + (["--repo", str(repo)] if repo else [])
    server = await Child.start(f"server {contender}", *args, quiet=quiet)
    results: dict[str, PhaseResult] = {}
    acked: int | None = None
    try:
        hello = await server.request()
        port, pid = hello["port"], hello["pid"]
        imported = hello["trio_asgi_ws"]
        if imported is not None and not Path(imported).is_relative_to(repo or REPO):
            raise RuntimeError(f"the server imported trio_asgi_ws from {imported}, not {repo or REPO}")
        async with trio.open_nursery() as nursery:
            publisher = Publisher(
                await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/publish", use_ssl=False)
            )
            nursery.start_soon(publisher.read_acks)
            if settings.stalled:
                await workers[0].request(
                    {"cmd": "connect", "port": port, "count": settings.stalled, "stalled": True}
                )
                acked = await publisher.fill(settings.fill, settings.window)
                log(
                    f"    fill: {acked}/{settings.fill} publishes acknowledged with only the stalled "
                    "clients in the room"
                )
            readers = settings.clients - settings.stalled
            shares = [
                readers // len(workers) + (1 if k < readers % len(workers) else 0)
                for k in range(len(workers))
            ]
            async with trio.open_nursery() as connecting:
                for worker, share in zip(workers, shares, strict=True):
                    connecting.start_soon(
                        worker.request, {"cmd": "connect", "port": port, "count": share, "stalled": False}
                    )
            for phase_number, phase in enumerate(PHASES, start=1):
                results[phase] = await run_phase(
                    contender, phase, phase_number, settings, publisher, workers, pid
                )
                results[phase].fill_acked = acked
            nursery.cancel_scope.cancel()
    finally:
        await server.kill()
        for worker in workers:
            await worker.request({"cmd": "close"})
    return results


async def run_phase(
    contender: str,
    phase: str,
    number: int,
    settings: Settings,
    publisher: Publisher,
    workers: list[Child],
    pid: int,
) -> PhaseResult:
    count = settings.saturated_messages if phase == "saturated" else settings.unsaturated_messages
    sent_at = [0.0] * count
    replies: list[dict[str, Any]] = [{} for _ in workers]
    worker_pids = [worker.process.pid for worker in workers]
    await trio.sleep(0.2)  # let the previous phase's traffic settle
    reset_peak_rss(pid)
    server_before = cpu_sample(pid)
    clients_before = [cpu_sample(p) for p in worker_pids]
    start = time.monotonic()

    async def ask(k: int) -> None:
        replies[k] = await workers[k].request(
            {
                "cmd": "phase",
                "phase": number,
                "count": count,
                "stall_timeout": settings.stall_timeout,
                "deadline": settings.deadline,
            }
        )

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as waiting:
            for k in range(len(workers)):
                waiting.start_soon(ask, k)
            if phase == "saturated":
                nursery.start_soon(publisher.saturate, number, count, settings.window, sent_at)
            else:
                nursery.start_soon(publisher.pace, number, count, settings.rate, sent_at)
        nursery.cancel_scope.cancel()  # a publisher the server holds up is abandoned
    wall = time.monotonic() - start
    server_after = cpu_sample(pid)
    clients_after = [cpu_sample(p) for p in worker_pids]
    rss = peak_rss_mib(pid)

    received = sum(reply["received"] for reply in replies)
    expected = sum(reply["expected"] for reply in replies)
    last = max(reply["last"] for reply in replies)
    statuses = {reply["status"] for reply in replies}
    status = "done" if statuses == {"done"} else ("deadline" if "deadline" in statuses else "stopped")
    latencies = []
    for i in range(count):
        times = [reply["everyone"][i] for reply in replies]
        if all(times) and sent_at[i]:
            latencies.append(max(times) - sent_at[i])
    return PhaseResult(
        contender=contender,
        phase=phase,
        status=status,
        received=received,
        expected=expected,
        seconds=max(0.0, last - start),
        latencies=latencies,
        server_cpu=server_after[0] - server_before[0],
        server_busy=(server_after[0] - server_before[0]) / wall,
        server_runnable=(sum(server_after) - sum(server_before)) / wall,
        client_busy=max(a[0] - b[0] for a, b in zip(clients_after, clients_before, strict=True)) / wall,
        client_runnable=max(sum(a) - sum(b) for a, b in zip(clients_after, clients_before, strict=True))
        / wall,
        peak_rss_mib=rss,
    )


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


Key = tuple[int, str, str]  # (stalled, phase, contender)


async def orchestrate(args: argparse.Namespace, clients: int) -> dict[Key, list[PhaseResult]]:
    stalled_counts = (0, int(clients * STALLED_SHARE))
    results: dict[Key, list[PhaseResult]] = {}
    workers = [await Child.start(f"client {k}", "--client") for k in range(args.client_procs)]
    started = time.monotonic()
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(args.contenders)
            order = args.contenders[shift:] + args.contenders[:shift]
            for stalled in stalled_counts:
                settings = Settings(
                    clients=clients,
                    stalled=stalled,
                    unsaturated_messages=args.unsaturated_messages,
                    saturated_messages=args.messages or min(HUB_BUFFER, max(30, 30000 // clients)),
                    rate=args.rate,
                    window=args.window,
                    fill=args.fill,
                    stall_timeout=args.stall_timeout,
                    deadline=args.deadline,
                )
                for contender in order:
                    log(
                        f"[{time.monotonic() - started:6.1f}s] round {round_index + 1}/{args.rounds} "
                        f"N={clients} stalled={stalled} {contender}"
                    )
                    run = await run_once(contender, settings, workers, args.repo, not args.server_stderr)
                    for phase, result in run.items():
                        results.setdefault((stalled, phase, contender), []).append(result)
                        log(
                            f"    {phase:11} {result.status:8} {result.rate:8.0f} deliveries/s "
                            f"{result.cpu_per_delivery_us:6.1f} us/delivery "
                            f"p50 {percentile(result.latencies, 0.5) * 1e3:7.1f} ms "
                            f"delivered {result.received / max(1, result.expected):5.1%} "
                            f"on CPU/runnable: server {result.server_busy:4.0%}/"
                            f"{result.server_runnable:4.0%} "
                            f"client {result.client_busy:4.0%}/{result.client_runnable:4.0%} "
                            f"RSS {result.peak_rss_mib:5.1f} MiB"
                        )
    finally:
        for worker in workers:
            await worker.kill()
    log(f"[{time.monotonic() - started:6.1f}s] N={clients} finished")
    return results


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def median(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def per_round_ratio(runs: list[PhaseResult], bases: list[PhaseResult] | None) -> float:
    if not bases:
        return math.nan
    return median([r.cpu_per_delivery_us / b.cpu_per_delivery_us for r, b in zip(runs, bases, strict=True)])


def fmt(value: float, spec: str) -> str:
    return "—" if math.isnan(value) else format(value, spec)


def print_tables(args: argparse.Namespace, clients: int, results: dict[Key, list[PhaseResult]]) -> None:
    contenders: tuple[str, ...] = args.contenders
    bases = [b for b in RATIO_BASES if b in contenders]
    saturated = args.messages or min(HUB_BUFFER, max(30, 30000 // clients))
    for stalled in (0, int(clients * STALLED_SHARE)):
        for phase in PHASES:
            if phase == "saturated":
                what = (
                    f"saturated: {saturated} messages as fast as acknowledged "
                    f"(at most {args.window} unacknowledged)"
                )
            else:
                what = f"unsaturated: {args.unsaturated_messages} messages at {args.rate:g}/s"
            stall = (
                f", {stalled} stalled (filled with {args.fill} messages first)"
                if stalled
                else ", all reading"
            )
            print(f"\n**{clients} clients{stall}; {what}**; medians of {args.rounds} round(s)\n")
            ratio_head = "".join(f" CPU vs {b} |" for b in bases)
            print(
                "| contender | done | deliveries/s | server CPU µs/delivery |"
                + ratio_head
                + " all-have-it p50 ms | p99 ms | delivered | peak RSS MiB | runnable server / client |"
            )
            print("|---|---|---:|---:|" + "---:|" * len(bases) + "---:|---:|---:|---:|---:|")
            for contender in contenders:
                runs = results[(stalled, phase, contender)]
                print(table_row(contender, runs, [results.get((stalled, phase, b)) for b in bases]))
            if stalled:
                fills = ", ".join(
                    f"{c} {median([float(r.fill_acked or 0) for r in results[(stalled, phase, c)]]):.0f}"
                    for c in contenders
                )
                print(f"\nFill publishes acknowledged (of {args.fill}; median): {fills}.")
            if phase == "saturated":
                print()
                print(bottleneck_note(contenders, [results[(stalled, phase, c)] for c in contenders]))


def table_row(contender: str, runs: list[PhaseResult], bases: list[list[PhaseResult] | None]) -> str:
    done = sum(r.status == "done" for r in runs)
    stopped = sum(r.status == "stopped" for r in runs)
    status = f"{done}/{len(runs)}" + (f" ({stopped} stopped)" if stopped else "")
    ratios = "".join(f" {fmt(per_round_ratio(runs, base), '.2f')} |" for base in bases)
    p50 = median([percentile(r.latencies, 0.5) * 1e3 for r in runs])
    p99 = median([percentile(r.latencies, 0.99) * 1e3 for r in runs])
    runnable_server = median([r.server_runnable for r in runs])
    runnable_client = median([r.client_runnable for r in runs])
    return (
        f"| {contender} | {status} | {median([r.rate for r in runs]):,.0f} "
        f"| {fmt(median([r.cpu_per_delivery_us for r in runs]), '.1f')} |{ratios}"
        f" {fmt(p50, ',.1f')} | {fmt(p99, ',.1f')} "
        f"| {median([r.received / r.expected for r in runs]):.1%} "
        f"| {median([r.peak_rss_mib for r in runs]):.0f} "
        f"| {runnable_server:.0%} / {runnable_client:.0%} |"
    )


def bottleneck_note(contenders: Sequence[str], runs: Sequence[list[PhaseResult]]) -> str:
    """Which side limited each finished saturated run: the one that was runnable nearly all along."""
    notes = []
    for contender, results in zip(contenders, runs, strict=True):
        done = [r for r in results if r.status == "done"]
        if not done:
            notes.append(f"{contender}: stopped")
            continue
        server = median([r.server_runnable for r in done])
        client = median([r.client_runnable for r in done])
        if server >= RUNNABLE_BOUND and server >= client:
            side = "server"
        elif client >= RUNNABLE_BOUND:
            side = "clients"
        else:
            side = "neither"
        notes.append(f"{contender}: {side}")
    return (
        f"Bottleneck (runnable, i.e. on a CPU or waiting for one, ≥ {RUNNABLE_BOUND:.0%} of the phase): "
        + "; ".join(notes)
        + "."
    )


def parse_contenders(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names from {', '.join(CONTENDERS)}; got {text!r}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 clients, 1 round, fewer messages")
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1000, 100],
        help="room sizes, each a table set of its own (default 1000 100)",
    )
    parser.add_argument("--messages", type=int, help="saturated phase messages (default 30000/N in 30..100)")
    parser.add_argument("--unsaturated-messages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="unsaturated publishes per second")
    parser.add_argument("--window", type=int, default=8, help="unacknowledged publishes when saturated")
    parser.add_argument("--fill", type=int, default=150, help="messages that stall the stalled clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", type=parse_contenders, default=CONTENDERS, metavar="A,B,...")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes sharing the readers")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=2.0,
        help="seconds without a delivery after which the room counts as stopped",
    )
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before a phase is given up")
    parser.add_argument("--repo", type=Path, help="import trio_asgi_ws from this checkout in the servers")
    parser.add_argument("--server-stderr", action="store_true", help="let the servers' stderr through")
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repo: Path | None = args.repo.resolve() if args.repo else None
    sys.path.insert(0, str(repo or REPO))
    if args.serve:
        run_server(args.serve)
        return
    if args.client:
        trio.run(client_main)
        return
    if args.quick:
        args.clients, args.rounds, args.unsaturated_messages = [100], 1, 10
    args.repo = repo
    print(
        f"trio_asgi_ws from {describe_checkout(repo or REPO)}; {args.client_procs} client process(es); "
        f"{os.cpu_count()} CPUs."
    )
    for clients in args.clients:
        results = trio.run(orchestrate, args, clients)
        print_tables(args, clients, results)


if __name__ == "__main__":
    main()
