"""Broadcast benchmark: one room, N real WebSocket clients, M published messages.

    python bench/broadcast.py [--quick] [--clients 100 1000] [--messages 200] [--rounds 2]

Two contenders, served by the same hypercorn trio worker process (``--serve``):

- ``hub``: ``trio_asgi_ws.broadcast`` (memory backend); each socket has a ``forward`` task with a
  bounded buffer (100 messages, drop_oldest), so publishing never waits for a client;
- ``naive``: what Starlette tutorials show: a list of sockets and
  ``for ws in sockets: await ws.send_text(message)`` in the publisher's handler.

Each scenario runs with every client reading, and again with 5% of the clients stalled (they stop
reading after connecting; their TCP receive buffers are small, and so are the server's send
buffers, so a stalled socket's ``send()`` blocks within a few dozen messages, as it would for a
real dead-slow client after a few megabytes).  A publisher connection sends M timestamped
messages on a fixed schedule; each reading client records when each arrives (CLOCK_MONOTONIC is
shared by processes on one machine).  Latency counts from when a message was *due*: a server
that pushes back on the publisher is charged for the delay it causes.

Reported per scenario (medians over rounds, contenders alternated within a round):
``all p50/p99``: for each message, the time until every reading client had it; ``msgs/s``:
deliveries to reading clients per second; ``delivered``: fraction of the expected deliveries that
arrived before the deadline; ``RSS``: the server's peak resident memory (it is restarted for each
run).  A run that does not finish by its deadline is reported as such, not averaged away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMALL_BUFFER = 16 * 1024
PAYLOAD = "x" * 512
STALLED_SHARE = 0.05


# -- the server ---------------------------------------------------------------------------------


def build_app() -> Any:
    from contextlib import asynccontextmanager

    from trio_asgi_ws import WebSocket, WebSocketDisconnect
    from trio_asgi_ws.broadcast import open_broadcast
    from trio_asgi_ws.routing import Router

    naive_sockets: list[WebSocket] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with open_broadcast() as hub:
            yield {"hub": hub}

    app = Router(lifespan=lifespan)

    @app.websocket("/hub")
    async def hub_member(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            await nursery.start(_forward, ws.state.hub, ws)
            await ws.send_text("ready")
            async for _ in ws.iter_text():
                pass
            nursery.cancel_scope.cancel()

    @app.websocket("/naive")
    async def naive_member(ws: WebSocket) -> None:
        await ws.accept()
        naive_sockets.append(ws)
        try:
            await ws.send_text("ready")
            async for _ in ws.iter_text():
                pass
        finally:
            naive_sockets.remove(ws)

    @app.websocket("/publish/{mode}", structured=False)
    async def publisher(ws: WebSocket) -> None:
        await ws.accept()
        hub = ws.state.hub
        async for text in ws.iter_text():
            if ws.path_params["mode"] == "hub":
                await hub.publish("room", text)
            else:
                for member in list(naive_sockets):  # the tutorial pattern
                    with contextlib.suppress(WebSocketDisconnect):
                        await member.send_text(text)
            await ws.send_text("published")

    return app


async def _forward(hub: Any, ws: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await hub.forward("room", ws, max_buffer=100, overflow="drop_oldest", task_status=task_status)


def serve_forever(port: int) -> None:
    from trio_asgi_ws.server import serve

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)  # inherited by accepted sockets
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    trio.run(
        lambda: serve(build_app(), "127.0.0.1", port, sockets=sock, ping_interval=None, read_timeout=None)
    )


# -- the clients ----------------------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    clients: int
    stalled: int
    messages: int
    latencies_all: list[float] = field(default_factory=list)
    deliveries: int = 0
    expected: int = 0
    seconds: float = 0.0
    rss_mib: float = 0.0
    finished: bool = True


async def connect(port: int, *, small_buffer: bool) -> Any:
    """A trio-websocket client; a stalled one gets a small receive buffer so it stalls quickly."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if small_buffer:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, SMALL_BUFFER)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def run_once(
    port: int, contender: str, clients: int, messages: int, rate: float, stalled_share: float, deadline: float
) -> Run:
    stalled = int(clients * stalled_share)
    run = Run(contender, clients, stalled, messages)
    readers = clients - stalled
    arrivals: list[list[float]] = [[0.0] * messages for _ in range(readers)]
    sent_at = [0.0] * messages
    counts = [0] * readers
    done = trio.Event()
    remaining = readers

    async with trio.open_nursery() as nursery:
        streams = []
        sockets = []
        for index in range(clients):
            stream = await connect(port, small_buffer=index >= readers)
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"127.0.0.1:{port}",
                f"/{contender}",
                message_queue_size=1,
                max_message_size=1 << 20,
            )
            assert await ws.get_message() == "ready"
            streams.append(stream)
            sockets.append(ws)

        async def read(index: int, ws: Any) -> None:
            nonlocal remaining
            mine = arrivals[index]
            while counts[index] < messages:
                data = json.loads(await ws.get_message())
                mine[data["i"]] = time.monotonic()
                counts[index] += 1
            remaining -= 1
            if remaining == 0:
                done.set()

        for index in range(readers):
            nursery.start_soon(read, index, sockets[index])

        publisher_stream = await connect(port, small_buffer=False)
        publisher = await trio_websocket.wrap_client_stream(
            nursery, publisher_stream, f"127.0.0.1:{port}", f"/publish/{contender}"
        )

        async def publish() -> None:
            start = time.monotonic()
            for i in range(messages):
                due = start + i / rate
                await trio.sleep_until(trio.current_time() + max(0.0, due - time.monotonic()))
                # Latency counts from when the message was due, so a server that pushes back on
                # the publisher (the naive loop does) is charged for the wait it causes.
                sent_at[i] = due
                await publisher.send_message(json.dumps({"i": i, "t": sent_at[i], "pad": PAYLOAD}))
            for _ in range(messages):
                await publisher.get_message()

        first = time.monotonic()
        with trio.move_on_after(deadline) as timer:
            nursery.start_soon(publish)
            await done.wait()
        run.finished = not timer.cancelled_caught
        run.seconds = time.monotonic() - first
        run.deliveries = sum(counts)
        run.expected = readers * messages
        for i in range(messages):
            if all(arrivals[r][i] for r in range(readers)):
                run.latencies_all.append(max(arrivals[r][i] for r in range(readers)) - sent_at[i])
        nursery.cancel_scope.cancel()
        for stream in streams:
            stream.socket.close()
    return run


# -- orchestration --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("benchmark server did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def measure(
    contender: str, clients: int, messages: int, rate: float, stalled_share: float, deadline: float
) -> Run:
    process, port = start_server()
    try:
        run = trio.run(run_once, port, contender, clients, messages, rate, stalled_share, deadline)
        run.rss_mib = peak_rss_mib(process.pid)
        return run
    finally:
        stop(process)


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer clients, messages and rounds")
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="published messages per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds before a run is given up")
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.serve)
        return
    if args.quick:
        args.clients, args.messages, args.rounds = [100], 100, 1
    results: dict[tuple[int, float, str], list[Run]] = {}
    for _ in range(args.rounds):
        for clients in args.clients:
            for stalled_share in (0.0, STALLED_SHARE):
                for contender in ("hub", "naive"):
                    run = measure(contender, clients, args.messages, args.rate, stalled_share, args.deadline)
                    results.setdefault((clients, stalled_share, contender), []).append(run)
                    print(
                        f"  {contender:5} N={clients:4} stalled={run.stalled:3}: "
                        f"{'done' if run.finished else 'DEADLINE'} in {run.seconds:.1f} s",
                        file=sys.stderr,
                    )
    print(
        f"\nOne room, {args.messages} messages of ~{len(PAYLOAD) + 30} B at {args.rate:g}/s, "
        f"medians of {args.rounds} round(s); stalled = 5% of clients stop reading.\n"
    )
    print(
        "| clients | stalled | contender | finished | all p50 ms | all p99 ms | msgs/s | delivered "
        "| RSS MiB |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for (clients, _, contender), runs in results.items():
        p50 = statistics.median(percentile(r.latencies_all, 0.50) * 1000 for r in runs)
        p99 = statistics.median(percentile(r.latencies_all, 0.99) * 1000 for r in runs)
        rate = statistics.median(r.deliveries / r.seconds for r in runs)
        share = statistics.median(r.deliveries / r.expected for r in runs)
        rss = statistics.median(r.rss_mib for r in runs)
        finished = f"{sum(r.finished for r in runs)}/{len(runs)}"
        print(
            f"| {clients} | {runs[0].stalled} | {contender} | {finished} | {p50:.1f} | {p99:.1f} "
            f"| {rate:,.0f} | {share:.0%} | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
