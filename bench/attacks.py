"""Hostile clients against a real ``python -m trio_asgi_ws`` server: the rows of issue 7's table.

Run ``python bench/attacks.py`` (under 2 minutes; longer if a signalled server hangs).  Each row
starts its own server, ``python -m trio_asgi_ws examples.echo:app --port P`` (``examples.chat:app``
for the chat row) on 127.0.0.1 with P in 18000-18999, in a session of its own, waits for
"Running on http://" on its stderr, runs one attack with the clients of
``tests/integration/attacks.py`` and kills the whole process group afterwards, whatever happened.
Progress goes to stderr, the table to stdout.

Rows (``--only a,c2`` selects rows by letter or key):

- a: a deflate bomb, one frame inflating to 100 MiB (and 500 MiB), against the echo;
- b: one 50 MiB frame; a fragmented message going on for 150 MiB after the 1009;
- c: clients that never read while the echo floods them (1 MiB messages), and a never-reading
  member of a chat room that another member floods;
- d: the same stalled echo client plus one idle reading client, then SIGTERM to the server;
- e: 300 clients that reset the connection mid-frame: the server's open files, then a new client;
- f: ``--workers 2`` and SIGINT to the whole process group (Ctrl-C) with 10 reading clients,
  and the same with the signal shortly after start-up.

"RSS" is the serving process's VmRSS before the attack and after it; "peak" is VmHWM, reset
(``/proc/PID/clear_refs``) just before the attack.  Times are from the end of the attacker's
handshake.  Attackers never answer a close frame: "connection" says whether the server dropped
TCP anyway.

Extra server options go after ``--`` (or in ``--server-args='...'``), e.g.
``python bench/attacks.py -- --compression deflate --send-timeout 5``.  ``--cwd DIR`` runs the
server in another checkout (``--pythonpath`` defaults to it, ahead of the venv's own install).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import _target  # noqa: E402

from tests.integration.attacks import (  # noqa: E402
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    AttackResult,
    CloseResult,
    Frame,
    KiB,
    MiB,
    RawConnection,
    StalledClient,
    deflate_bomb,
    deflate_bomb_attack,
    endless_fragments_attack,
    frame,
    handshake,
    held_connections,
    never_read_client,
    open_fds,
    oversized_message_attack,
    peak_rss_kib,
    read_close,
    reset_mid_frame,
    reset_peak_rss,
    rss_kib,
    tcp_queues,
)

PORTS = range(18000, 19000)
STARTUP_DEADLINE = 20.0
ROW_DEADLINE = 300.0
"""No row may take longer than this; its servers are killed and the row reports it."""
ECHO = "examples.echo:app"
CHAT = "examples.chat:app"


@dataclass
class Settings:
    python: str
    cwd: Path
    pythonpath: str
    server_args: list[str]
    graceful: float
    linger: float
    bomb_sizes: list[int]
    stalled_clients: int
    stall_wait: float
    resets: int
    runs: int
    early_delay: float
    show_server_log: bool
    only: set[str] | None = None

    def wants(self, key: str) -> bool:
        """Whether row ``key`` (or a group of rows, "a") was selected with ``--only``."""
        return self.only is None or any(key.startswith(c) or c.startswith(key) for c in self.only)

    @property
    def exit_limit(self) -> float:
        """How long a signalled server gets before it is reported as "did not exit" and killed."""
        return self.graceful + 20.0


@dataclass
class Row:
    key: str
    attack: str
    rss: str = ""
    peak: str = ""
    connection: str = ""
    close: str = ""
    notes: str = ""


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def peak_text(peak: int, before: int) -> str:
    """The "peak" column: VmHWM and how far above the RSS before the attack."""
    return f"{mib(peak)} (+{mib(peak - before)})"


# The server under attack

free_port = _target.port_picker(PORTS)
"""The next port of 18000-18999 that can be bound now (each row gets a fresh one)."""


@dataclass
class Server:
    process: trio.Process
    port: int
    show_log: bool
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=trio.current_time)
    _changed: trio.Event = field(default_factory=trio.Event)
    _eof: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def drain(self) -> None:
        """Read its stderr into ``lines`` until EOF (an unread pipe would block its logging)."""
        assert self.process.stderr is not None
        try:
            await _target.drain_lines(self.process.stderr, self.show_log, self._take)
        finally:
            self._eof = True
            self._changed.set()

    def _take(self, lines: list[str]) -> None:
        self.lines += lines
        self._changed.set()
        self._changed = trio.Event()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def wait_for(self, text: str, count: int = 1) -> None:
        """Wait until ``count`` stderr lines contain ``text`` (bounded by the caller)."""
        while self.count(text) < count:
            if self._eof:
                tail = "\n".join(self.lines[-10:])
                raise RuntimeError(f"server exited before logging {text!r}:\n{tail}")
            await self._changed.wait()

    def signal_group(self, signum: int) -> None:
        _target.signal_group(self.process.pid, signum)

    async def kill(self) -> None:
        """SIGKILL the whole process group (workers included) and reap the server."""
        await _target.kill_group(self.process)

    async def interrupt(
        self, signum: int, limit: float, *, group: bool = True, kill: bool = True
    ) -> tuple[int | None, float, float]:
        """Send ``signum`` to the process group (``group=False``: to the server alone), wait for it.

        The server gets ``limit`` seconds to exit; then, with ``kill``, the group is killed.
        Returns the exit code (``None``: it did not exit), when the signal went and how long the
        server took.
        """
        if group:
            self.signal_group(signum)
        else:
            os.kill(self.pid, signum)
        signalled = trio.current_time()
        with trio.move_on_after(limit):
            await self.process.wait()
        took = trio.current_time() - signalled
        code = self.process.returncode
        if code is None and kill:
            await self.kill()
        return code, signalled, took

    def tracebacks(self) -> int:
        return self.count("Traceback")


@asynccontextmanager
async def running(settings: Settings, app: str, *extra: str, ready: int = 1) -> AsyncIterator[Server]:
    """Start the server for ``app`` and yield it once ``ready`` "Running on" lines appeared."""
    port = free_port()
    command = [
        settings.python, "-m", "trio_asgi_ws", app, "--port", str(port), *settings.server_args, *extra,
    ]  # fmt: skip
    process = await _target.open_server(command, cwd=settings.cwd, pythonpath=settings.pythonpath)
    server = Server(process, port, settings.show_server_log)
    async with _target.supervised(
        process, server.drain, partial(server.wait_for, "Running on http://", ready), STARTUP_DEADLINE
    ):
        yield server


async def settled_rss(server: Server) -> tuple[int, bool]:
    """Let start-up allocations settle; the RSS then, and whether VmHWM could be reset after it."""
    await trio.sleep(0.2)
    before = rss_kib(server.pid)
    return before, reset_peak_rss(server.pid)


def peak_and_rss(server: Server) -> tuple[int, int]:
    """VmHWM and VmRSS now, after an attack."""
    return peak_rss_kib(server.pid), rss_kib(server.pid)


# Small clients


async def still_serves(port: int) -> str:
    """Whether a new client gets an echo (any text message) within 5 s."""
    return await _target.still_serves(
        port, "/", expect=b"", served="serves new clients", describe=lambda error: type(error).__name__
    )


async def _echo_round_trip(conn: RawConnection) -> bool:
    """Send a message and read up to its echo (5 s at most); whether the echo came."""
    with trio.move_on_after(5):
        try:
            await conn.send(frame(OP_BINARY, b"hello"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            return False
        while (received := await conn.receive_frame(within=None)) is not None:
            if received.opcode == OP_BINARY:
                return True
            if received.opcode == OP_CLOSE:  # keep it for read_close
                conn.buffer[:0] = _reencode(received)
                return False
    return False


def _reencode(received: Frame) -> bytes:
    return frame(received.opcode, received.payload, fin=received.fin, rsv1=received.rsv1, mask=False)


def exit_status(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def codes_summary(codes: Sequence[int | str | None]) -> str:
    counts = Counter("none" if code is None else str(code) for code in codes)
    return ", ".join(f"{code} x{count}" for code, count in sorted(counts.items()))


def dropped_text(seconds: float | None, ended: str | None, waited: float) -> str:
    if seconds is None:
        return f"open after {waited:g} s"
    return f"dropped at {seconds:.2f} s ({ended})"


async def attack_row(
    settings: Settings, key: str, title: str, run: Callable[[int], Awaitable[object]], app: str = ECHO
) -> tuple[Row, object]:
    """Run ``run(port)`` against a fresh server; fill the memory columns and the still-serves note."""
    async with running(settings, app) as server:
        before, reset_ok = await settled_rss(server)
        result = await run(server.port)
        peak, after = peak_and_rss(server)
        serves = await still_serves(server.port)
    row = Row(key, title, rss=f"{mib(before)} → {mib(after)}", peak=peak_text(peak, before))
    row.notes = serves + ("" if reset_ok else "; VmHWM could not be reset: peak since start")
    return row, result


# Rows


async def rows_a(settings: Settings) -> list[Row]:
    rows = []
    for index, size in enumerate(settings.bomb_sizes, 1):
        if not settings.wants(f"a{index}"):
            continue
        payload = len(deflate_bomb(size * MiB))
        title = f"deflate bomb: a {payload / KiB:.0f} KiB frame inflating to {size} MiB"
        row, result = await attack_row(
            settings, f"a{index}", title, partial(_bomb, size * MiB, settings.linger)
        )
        assert isinstance(result, _Attacked)
        row.connection = dropped_text(result.dropped, result.ended, settings.linger)
        row.close = "none" if result.code is None else str(result.code)
        negotiated = f"negotiated: {result.negotiated}" if result.negotiated else "compression not negotiated"
        row.notes = f"{negotiated}; {result.description}; {row.notes}"
        rows.append(row)
    return rows


@dataclass
class _Attacked:
    code: int | None
    dropped: float | None
    ended: str | None
    negotiated: str | None
    description: str


async def _bomb(size: int, linger: float, port: int) -> _Attacked:
    result = await deflate_bomb_attack(port, size, linger=linger)
    close = result.close
    return _Attacked(close.code, close.tcp_closed_after, close.ended, result.negotiated, _sending(result))


async def _oversized(size: int, linger: float, port: int) -> _Attacked:
    result = await oversized_message_attack(port, size, linger=linger)
    close = result.close
    return _Attacked(close.code, close.tcp_closed_after, close.ended, None, _sending(result))


async def _fragments(size: int, linger: float, port: int) -> _Attacked:
    result = await endless_fragments_attack(port, size, linger=linger)
    close = result.close
    return _Attacked(close.code, close.tcp_closed_after, close.ended, None, _sending(result))


def _sending(result: AttackResult) -> str:
    how = "; its writes stalled" if result.stalled else "; a write failed" if result.write_failed else ""
    close = f", the close frame at {result.close.close_after:.2f} s" if result.close.close_after else ""
    amount = f"{result.sent / MiB:.0f} MiB" if result.sent >= MiB else f"{result.sent / KiB:.0f} KiB"
    return f"sent {amount} in {result.sending_took:.2f} s{how}{close}"


async def rows_b(settings: Settings) -> list[Row]:
    cases = [
        ("b1", "one 50 MiB frame", partial(_oversized, 50 * MiB, settings.linger)),
        (
            "b2",
            "a fragmented message: 150 MiB of continuations",
            partial(_fragments, 150 * MiB, settings.linger),
        ),
    ]
    rows = []
    for key, title, run in cases:
        if not settings.wants(key):
            continue
        row, result = await attack_row(settings, key, title, run)
        assert isinstance(result, _Attacked)
        row.connection = dropped_text(result.dropped, result.ended, settings.linger)
        row.close = "none" if result.code is None else str(result.code)
        row.notes = f"{result.description}; {row.notes}"
        rows.append(row)
    return rows


async def _watch_drops(
    pid: int, port: int, clients: Sequence[StalledClient], wait: float
) -> dict[int, float]:
    """Poll which clients' connections the server still holds; when each one was dropped."""
    dropped: dict[int, float] = {}
    start = trio.current_time()
    with trio.move_on_after(wait):
        while len(dropped) < len(clients):
            held = held_connections(pid, port)
            for client in clients:
                if client.local_port not in held and client.local_port not in dropped:
                    dropped[client.local_port] = trio.current_time() - start
            await trio.sleep(0.25)
    return dropped


def _socket_queues(pid: int, port: int, clients: Sequence[StalledClient]) -> str:
    """The server's kernel send and receive queues for each client's connection, in KiB."""
    queues = tcp_queues(pid, port)
    return ", ".join(
        f"{queues[client.local_port][0] / KiB:.0f}/{queues[client.local_port][1] / KiB:.0f}"
        if client.local_port in queues
        else "gone"
        for client in clients
    )


def _drops_text(dropped: dict[int, float], total: int, wait: float) -> str:
    if not dropped:
        return f"held {total}/{total} for {wait:g} s"
    times = ", ".join(f"{seconds:.1f}" for seconds in sorted(dropped.values()))
    held = total - len(dropped)
    return f"dropped after {times} s" + (f"; {held} held for {wait:g} s" if held else "")


async def row_c1(settings: Settings) -> list[Row]:
    count = settings.stalled_clients
    title = f"{count} clients that never read while the echo floods them (1 MiB messages)"
    async with running(settings, ECHO) as server:
        before, _ = await settled_rss(server)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            clients: list[StalledClient] = []
            for _ in range(count):
                clients.append(
                    await nursery.start(
                        partial(never_read_client, server.port, stop=stop, hold=settings.stall_wait + 60)
                    )
                )
            await trio.sleep(0.5)
            stalled = rss_kib(server.pid)
            queued = _socket_queues(server.pid, server.port, clients)
            dropped = await _watch_drops(server.pid, server.port, clients, settings.stall_wait)
            peak, after = peak_and_rss(server)
            serves = await still_serves(server.port)
            stop.set()
    sent = ", ".join(f"{client.sent / MiB:.0f}" for client in clients)
    per_client = (stalled - before) / count / 1024
    return [
        Row(
            "c1",
            title,
            rss=f"{mib(before)} → {mib(stalled)} → {mib(after)}",
            peak=peak_text(peak, before),
            connection=_drops_text(dropped, count, settings.stall_wait),
            notes=f"+{per_client:.1f} MiB per client once stalled; each sent {sent} MiB before its writes "
            f"stalled; server socket send/receive queues {queued} KiB; {serves}",
        )
    ]


async def _talker(port: int, room: str, messages: int, size: int) -> str:
    """A chat member that sends ``messages`` messages while reading everything the room sends."""
    conn = await handshake(port, f"/ws/{room}?name=talker")
    received = 0
    async with conn:

        async def read() -> None:
            nonlocal received
            while received < messages:
                incoming = await conn.receive_frame(within=None)
                if incoming is None:
                    return
                if incoming.opcode == OP_TEXT and b'"talker"' in incoming.payload:
                    received += 1

        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                data = frame(OP_TEXT, b"x" * size)
                for _ in range(messages):
                    await conn.send(data)
    return f"the talker got {received}/{messages} of its messages back"


async def row_c2(settings: Settings) -> list[Row]:
    messages, size = 8000, 1000
    title = f"a chat member that never reads (16 KiB SO_RCVBUF); another sends {messages} x {size} B"
    async with running(settings, CHAT) as server:
        before, _ = await settled_rss(server)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            stalled: StalledClient = await nursery.start(
                partial(
                    never_read_client,
                    server.port,
                    "/ws/attack?name=stalled",
                    messages=0,
                    rcvbuf=16 * KiB,
                    stop=stop,
                    hold=settings.stall_wait + 90,
                )
            )
            flowed = await _talker(server.port, "attack", messages, size)
            queued = _socket_queues(server.pid, server.port, [stalled])
            dropped = await _watch_drops(server.pid, server.port, [stalled], settings.stall_wait)
            peak, after = peak_and_rss(server)
            stop.set()
    return [
        Row(
            "c2",
            title,
            rss=f"{mib(before)} → {mib(after)}",
            peak=peak_text(peak, before),
            connection=_drops_text(dropped, 1, settings.stall_wait),
            notes=f"{flowed}; server socket send/receive queues for the stalled member {queued} KiB",
        )
    ]


async def row_d(settings: Settings) -> list[Row]:
    title = "a stalled echo client (as c1) and an idle reading client, then SIGTERM"
    limit = settings.exit_limit
    async with running(settings, ECHO) as server:
        stop = trio.Event()
        closes: list[CloseResult] = []
        read_ended: list[float] = []
        async with trio.open_nursery() as nursery:
            stalled: StalledClient = await nursery.start(
                partial(never_read_client, server.port, stop=stop, hold=limit + 30)
            )
            reader = await handshake(server.port, "/")

            async def read(conn: RawConnection = reader) -> None:
                async with conn:
                    closes.append(await read_close(conn, limit + 5))
                    read_ended.append(trio.current_time())

            nursery.start_soon(read)
            await trio.sleep(0.5)
            code, signalled, took = await server.interrupt(signal.SIGTERM, limit, group=False)
            stop.set()
        reader_saw = ""
        if closes:
            close = closes[0]
            when = (
                f"TCP {close.ended} {read_ended[0] - signalled:.2f} s after the signal"
                if close.ended
                else "TCP open"
            )
            reader_saw = f"reader: {close.code or 'no close frame'}, {when}"
    exited = f"{exit_status(code)} after {took:.1f} s" if code is not None else f"did not exit in {limit:g} s"
    return [
        Row(
            "d",
            title,
            connection=exited,
            close=reader_saw,
            notes=f"the stalled client had sent {stalled.sent / MiB:.0f} MiB; "
            f"graceful timeout {settings.graceful:g} s",
        )
    ]


async def row_e(settings: Settings) -> list[Row]:
    count = settings.resets
    title = f"{count} clients that reset the connection mid-frame (1 MiB announced, 1000 B sent)"
    async with running(settings, ECHO) as server:
        await trio.sleep(0.2)
        before = open_fds(server.pid)
        failures: Counter[str] = Counter()
        limiter = trio.CapacityLimiter(10)

        async def one() -> None:
            async with limiter:
                try:
                    await reset_mid_frame(server.port)
                except Exception as error:
                    failures[type(error).__name__] += 1

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        done = trio.current_time()
        counts = [open_fds(server.pid)]
        for delay in (1.0, 3.0):
            await trio.sleep_until(done + delay)
            counts.append(open_fds(server.pid))
        serves = await still_serves(server.port)
    failed = f"; failed: {dict(failures)}" if failures else ""
    return [
        Row(
            "e",
            title,
            connection=f"open fds: {before} before; {counts[0]} / {counts[1]} / {counts[2]} "
            "at 0 / 1 / 3 s after",
            notes=f"resets took {done - start:.1f} s (10 at a time){failed}; {serves}",
        )
    ]


async def _supervised_run(
    settings: Settings, clients: int, delay: float | None
) -> tuple[int | None, float, list[int | str | None]]:
    """One ``--workers 2`` server, SIGINT to its group; return exit code, seconds to exit, close codes.

    ``delay=None``: wait for both workers, connect ``clients`` (each gets an echo), then signal.
    Otherwise signal ``delay`` seconds after the first "Running on" line while the clients connect.
    """
    limit = settings.exit_limit
    codes: list[int | str | None] = []
    ready = 2 if delay is None else 1
    async with (
        running(settings, ECHO, "--workers", "2", ready=ready) as server,
        trio.open_nursery() as nursery,
    ):
        connected = 0
        all_connected = trio.Event()

        async def client() -> None:
            nonlocal connected
            try:
                conn = await handshake(server.port, "/")
            except Exception as error:
                codes.append(f"no connection ({type(error).__name__})")
                return
            async with conn:
                echoed = await _echo_round_trip(conn)
                connected += 1
                if connected == clients:
                    all_connected.set()
                result = await read_close(conn, limit + 5)
                codes.append(result.code if echoed else f"{result.code} (before its echo)")

        for _ in range(clients):
            nursery.start_soon(client)
        if delay is None:
            with trio.move_on_after(10):
                await all_connected.wait()
            await trio.sleep(0.3)
        else:
            await trio.sleep(delay)
        code, _, took = await server.interrupt(signal.SIGINT, limit)
    return code, took, codes


async def _signal_during_startup(settings: Settings, delay: float) -> tuple[int | None, float, int]:
    async with running(settings, ECHO, "--workers", "2", ready=0) as server:
        await trio.sleep_until(server.started + delay)
        code, _, took = await server.interrupt(signal.SIGINT, settings.exit_limit, kill=False)
        await trio.sleep(0.2)  # let the last log lines arrive
        tracebacks = server.tracebacks()
    return code, took, tracebacks


async def rows_f(settings: Settings) -> list[Row]:
    rows = []
    variants: list[tuple[str, str, float | None]] = [
        ("f1", "--workers 2, 10 reading clients, SIGINT to the process group", None),
        (
            "f2",
            f"the same, SIGINT {settings.early_delay:g} s after the first worker is up",
            settings.early_delay,
        ),
    ]
    for key, title, delay in variants:
        if not settings.wants(key):
            continue
        statuses, times, codes = [], [], []
        for _ in range(settings.runs):
            code, took, run_codes = await _supervised_run(settings, 10, delay)
            statuses.append(exit_status(code))
            times.append(took)
            codes += run_codes
        rows.append(
            Row(
                key,
                f"{title} ({settings.runs} runs)",
                connection=f"{codes_summary(statuses)}; exit after {', '.join(f'{t:.1f}' for t in times)} s",
                close=codes_summary(codes),
            )
        )
    if not settings.wants("f3"):
        return rows
    statuses, times, tracebacks = [], [], 0
    for _ in range(settings.runs):
        code, took, logged = await _signal_during_startup(settings, settings.early_delay)
        statuses.append(exit_status(code))
        times.append(took)
        tracebacks += logged
    rows.append(
        Row(
            "f3",
            f"--workers 2, SIGINT to the group {settings.early_delay:g} s after spawning "
            f"({settings.runs} runs)",
            connection=f"{codes_summary(statuses)}; exit after {', '.join(f'{t:.1f}' for t in times)} s",
            notes=f"{tracebacks} traceback(s) logged",
        )
    )
    return rows


ROWS: list[tuple[str, Callable[[Settings], Awaitable[list[Row]]]]] = [
    ("a", rows_a),
    ("b", rows_b),
    ("c1", row_c1),
    ("c2", row_c2),
    ("d", row_d),
    ("e", row_e),
    ("f", rows_f),
]


# Main


def _describe_target(settings: Settings) -> list[str]:
    commit, imports = _target.probe_target(settings.python, settings.cwd, settings.pythonpath)
    return [
        f"server: {settings.python} -m trio_asgi_ws APP --port P {shlex.join(settings.server_args)}".rstrip(),
        f"cwd: {settings.cwd} (git {commit}), PYTHONPATH={settings.pythonpath}",
        f"imports: {imports}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]


def print_table(rows: Sequence[Row]) -> None:
    header = ["row", "attack", "RSS MiB", "peak MiB", "connection / exit", "close code", "notes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [row.key, row.attack, row.rss, row.peak, row.connection, row.close, row.notes]
        print("| " + " | ".join(cell.replace("|", "/") or "—" for cell in cells) + " |")


def describe_error(error: BaseException) -> str:
    """The innermost errors of ``error`` (exception groups flattened), on one line."""
    inner: Sequence[BaseException] | None = getattr(error, "exceptions", None)
    if inner:
        return "; ".join(describe_error(each) for each in inner)
    text = " / ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text[-300:]}"


async def run(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    for key, function in ROWS:
        if not settings.wants(key):
            continue
        print(f"row {key}...", file=sys.stderr, flush=True)
        started = time.monotonic()
        produced: list[Row] = []
        with trio.move_on_after(ROW_DEADLINE) as budget:
            try:
                produced = await function(settings)
            except Exception as error:  # one broken row must not hide the others
                produced = [Row(key, "(failed)", notes=describe_error(error))]
        if budget.cancelled_caught:
            produced = [Row(key, "(timed out)", notes=f"row took more than {ROW_DEADLINE:g} s")]
        produced = [row for row in produced if settings.wants(row.key)] or produced
        for row in produced:
            print(f"  {row}", file=sys.stderr, flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        rows += produced
    return rows


def _graceful_from(args: Sequence[str]) -> float:
    value = 10.0  # the CLI's default
    for index, arg in enumerate(args):
        if arg == "--graceful-timeout" and index + 1 < len(args):
            value = float(args[index + 1])
        elif arg.startswith("--graceful-timeout="):
            value = float(arg.partition("=")[2])
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server-args", default="", help="extra server CLI options, one string (use =)")
    parser.add_argument("--only", default="", help="comma-separated rows or row letters (default: all)")
    parser.add_argument("--cwd", type=Path, default=REPO, help="checkout to run the server in")
    parser.add_argument("--pythonpath", default=None, help="PYTHONPATH for the server (default: --cwd)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    parser.add_argument(
        "--linger", type=float, default=5.0, help="seconds to wait for a drop after an attack"
    )
    parser.add_argument("--bomb-sizes", default="100,500", help="deflate bomb sizes in MiB (row a)")
    parser.add_argument("--stalled-clients", type=int, default=2, help="never-reading echo clients (row c1)")
    parser.add_argument("--stall-wait", type=float, default=15.0, help="seconds to watch for a drop (row c)")
    parser.add_argument("--resets", type=int, default=300, help="clients that reset mid-frame (row e)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each row f variant")
    parser.add_argument(
        "--early-delay", type=float, default=0.2, help="seconds before the early SIGINT (f2/f3)"
    )
    parser.add_argument("--show-server-log", action="store_true", help="copy the servers' stderr to ours")
    args = parser.parse_args(argv)
    server_args = shlex.split(args.server_args) + extra
    cwd = args.cwd.resolve()
    settings = Settings(
        python=args.python,
        cwd=cwd,
        pythonpath=args.pythonpath or str(cwd),
        server_args=server_args,
        graceful=_graceful_from(server_args),
        linger=args.linger,
        bomb_sizes=[int(size) for size in args.bomb_sizes.split(",") if size],
        stalled_clients=args.stalled_clients,
        stall_wait=args.stall_wait,
        resets=args.resets,
        runs=args.runs,
        early_delay=args.early_delay,
        show_server_log=args.show_server_log,
    )
    settings.only = {choice.strip() for choice in args.only.split(",") if choice.strip()} or None
    description = _describe_target(settings)
    for line in description:
        print(line, file=sys.stderr)
    started = time.monotonic()
    rows = trio.run(run, settings)
    for line in description:
        print(line)
    print(f"took: {time.monotonic() - started:.0f} s")
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
