"""Memory per idle WebSocket connection in the server process, with and without compression.

    python bench/memory.py [--quick] [--connections 1000] [--rounds 3] [--contenders A,B,...]
                           [--repo DIR]

Contenders, each with compression off (``/none``) and on (``/deflate``):

- ``raw``, ``plain``, ``structured``: the echo apps of ``bench/_apps.py`` (raw ASGI;
  ``trio_asgi_ws.WebSocket`` without and with ``async with websocket:``) under
  ``trio_asgi_ws.server.serve()`` with its defaults, ``compression=None`` or ``"deflate"``;
- ``websockets-trio``: websockets' trio server with the same echo (``async for message in
  connection: await connection.send(message)``), ``compression=None`` or its default
  permessage-deflate.

The client is websockets' asyncio client in a process of its own; it offers permessage-deflate
(``client_max_window_bits``), as browsers do, and the table says whether the server took it.

One measurement: a fresh server process; W warm-up connections (``--warmup``, 20) each exchange one
~1 KiB chat-like JSON text and stay open; the server is asked (over its stdin) to run
``gc.collect()``, then VmRSS (/proc/PID/status) and the open fds (/proc/PID/fd) are read; N more
connections (``--connections``, 1,000) are opened and each exchanges one message (deflate allocates
its zlib contexts on first use), then left idle for ``--settle`` seconds (1); gc again, VmRSS and
fds again.  KiB per connection = ΔVmRSS / N; fds and trio tasks (counted by the server walking its
task tree) per connection likewise.  Pings are at each server's default (20 s), longer than a
measurement, so none is sent.

Contenders alternate within each round (the first rotates from round to round); the table gives
medians over rounds, and "Δ vs raw" as the median of per-round differences to ``raw`` with the same
compression.  Progress goes to stderr, the table to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))

from _processes import describe_checkout  # noqa: E402

APPS = ("raw", "plain", "structured", "websockets-trio")
COMPRESSIONS = ("none", "deflate")
CONTENDERS = tuple(f"{app}/{compression}" for app in APPS for compression in COMPRESSIONS)

_WORDS = (
    "the",
    "a",
    "to",
    "and",
    "of",
    "is",
    "in",
    "it",
    "you",
    "that",
    "for",
    "on",
    "with",
    "this",
    "be",
    "are",
    "have",
    "not",
    "but",
    "just",
    "so",
    "what",
    "can",
    "was",
    "we",
    "do",
    "if",
    "at",
    "about",
    "my",
    "your",
    "they",
    "all",
    "like",
    "get",
    "no",
    "one",
    "know",
    "think",
    "will",
    "up",
    "out",
    "there",
    "how",
    "now",
    "yes",
    "deploy",
    "build",
    "release",
    "meeting",
    "tomorrow",
    "today",
    "review",
    "merge",
    "branch",
    "ticket",
    "bug",
    "fix",
    "test",
    "server",
    "client",
    "latency",
    "dashboard",
    "coffee",
    "lunch",
    "weekend",
    "thanks",
    "sure",
    "maybe",
    "later",
    "agreed",
    "sounds",
    "great",
)


def chat_message(seed: int, size: int = 1024) -> str:
    """A chat-like JSON text of about ``size`` bytes, different for every ``seed``."""
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < size - 80:
        words.append(rng.choice(_WORDS))
    return json.dumps(
        {"type": "message", "room": "general", "user": f"user{seed}", "id": seed, "text": " ".join(words)}
    )


# -- the server process (``--serve APP --compression X``) -----------------------------------------


def count_trio_tasks() -> int:
    import trio

    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def control(stdin_fd: int) -> None:
    """Answer each line from the parent with a gc.collect() and the number of trio tasks."""
    import trio

    stream = trio.lowlevel.FdStream(stdin_fd)
    buffer = b""
    while chunk := await stream.receive_some(4096):
        buffer += chunk
        while b"\n" in buffer:
            _, buffer = buffer.split(b"\n", 1)
            gc.collect()
            reply({"tasks": count_trio_tasks()})
    os._exit(0)  # the parent has gone


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve_ours(app_name: str, compression: str) -> None:
    import trio
    from _apps import SERVED  # the repo's (or --repo's) trio_asgi_ws is first on sys.path

    from trio_asgi_ws.server import serve

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(
                serve,
                SERVED[app_name],
                "127.0.0.1",
                0,
                handle_signals=False,
                compression=None if compression == "none" else compression,
            )
        )
        port = int(binds[0].rsplit(":", 1)[1])
        reply({"port": port, "pid": os.getpid()})
        nursery.start_soon(control, os.dup(sys.stdin.fileno()))


async def serve_websockets_trio(compression: str) -> None:
    import trio
    from websockets.trio.server import ServerConnection, serve

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve, echo, 0, host="127.0.0.1", compression=None if compression == "none" else compression
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        reply({"port": port, "pid": os.getpid()})
        nursery.start_soon(control, os.dup(sys.stdin.fileno()))


def run_server(contender: str) -> None:
    import logging

    import trio

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app_name, compression = contender.split("/")
    if app_name == "websockets-trio":
        trio.run(serve_websockets_trio, compression)
    else:
        trio.run(serve_ours, app_name, compression)


# -- the client process (``--client``): websockets' asyncio client --------------------------------


async def client_main() -> None:
    from websockets.asyncio.client import ClientConnection, connect

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connections: list[ClientConnection] = []
    seed = 0

    async def open_one(port: int, limit: asyncio.Semaphore) -> ClientConnection:
        nonlocal seed
        seed += 1
        message = chat_message(seed)
        async with limit:
            # Offers permessage-deflate (client_max_window_bits) by default, as browsers do.
            connection = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None, open_timeout=60)
            await connection.send(message)
            if await connection.recv() != message:
                raise RuntimeError("the echo did not match")
        return connection

    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "open":
            limit = asyncio.Semaphore(50)
            opened = await asyncio.gather(
                *(open_one(command["port"], limit) for _ in range(command["count"]))
            )
            connections.extend(opened)
            extensions = [type(ext).__name__ for ext in opened[0].protocol.extensions] if opened else []
            reply({"extensions": extensions})
        elif command["cmd"] == "close":
            for connection in connections:
                connection.transport.abort()
            connections.clear()
            reply({"ok": True})
        else:
            raise ValueError(f"unknown command {command!r}")


# -- the parent -----------------------------------------------------------------------------------


class Child:
    """A subprocess of this script in its own session, spoken to in JSON lines."""

    def __init__(self, *args: str, quiet: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None,
            start_new_session=True,
            text=True,
        )

    def request(self, command: dict[str, Any] | None = None) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None and stdout is not None
        if command is not None:
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args} exited ({self.process.poll()}) without answering")
        return json.loads(line)  # type: ignore[no-any-return]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(contender: str, client: Child, args: argparse.Namespace) -> dict[str, Any]:
    server_args = ["--serve", contender] + (["--repo", str(args.repo)] if args.repo else [])
    server = Child(*server_args, quiet=not args.server_stderr)
    try:
        hello = server.request()
        port, pid = hello["port"], hello["pid"]
        client.request({"cmd": "open", "port": port, "count": args.warmup})
        time.sleep(args.settle / 2)
        tasks_before = server.request({"cmd": "stats"})["tasks"]
        rss_before, fds_before = vm_rss_kib(pid), open_fds(pid)
        opened = client.request({"cmd": "open", "port": port, "count": args.connections})
        time.sleep(args.settle)
        tasks_after = server.request({"cmd": "stats"})["tasks"]
        rss_after, fds_after = vm_rss_kib(pid), open_fds(pid)
    finally:
        server.kill()
        client.request({"cmd": "close"})
    n = args.connections
    return {
        "kib": (rss_after - rss_before) / n,
        "fds": (fds_after - fds_before) / n,
        "tasks": (tasks_after - tasks_before) / n,
        "rss_before_mib": rss_before / 1024,
        "rss_after_mib": rss_after / 1024,
        "deflate": "PerMessageDeflate" in opened["extensions"],
    }


def parse_contenders(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        expanded = [name] if "/" in name else [f"{name}/{compression}" for compression in COMPRESSIONS]
        names.extend(expanded)
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names from {', '.join(CONTENDERS)} (or an app name for both); got {text!r}"
        )
    return tuple(names)


def print_table(
    contenders: tuple[str, ...], samples: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> None:
    print(
        f"\nIdle connections: KiB of server RSS per connection (ΔVmRSS over {args.connections} connections "
        f"after {args.warmup} warm-up ones, one ~1 KiB message exchanged on each); "
        f"medians of {args.rounds} round(s).\n"
    )
    print(
        "| server / app | compression | deflate negotiated | KiB per connection | Δ vs raw KiB "
        "| fds per connection | trio tasks per connection | RSS before → after MiB |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for contender in contenders:
        runs = samples[contender]
        app_name, compression = contender.split("/")
        base = samples.get(f"raw/{compression}")
        delta = (
            f"{statistics.median(r['kib'] - b['kib'] for r, b in zip(runs, base, strict=True)):+.1f}"
            if base is not None and app_name != "raw"
            else ("0" if app_name == "raw" else "—")
        )
        negotiated = sum(r["deflate"] for r in runs)
        took = "yes" if negotiated == len(runs) else "no" if not negotiated else "sometimes"
        print(
            f"| {app_name} | {compression} | {took} "
            f"| {statistics.median(r['kib'] for r in runs):.1f} | {delta} "
            f"| {statistics.median(r['fds'] for r in runs):.2f} "
            f"| {statistics.median(r['tasks'] for r in runs):.2f} "
            f"| {statistics.median(r['rss_before_mib'] for r in runs):.1f} → "
            f"{statistics.median(r['rss_after_mib'] for r in runs):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 connections, 1 round")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="connections open before the first reading")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--contenders",
        type=parse_contenders,
        default=CONTENDERS,
        metavar="A,B,...",
        help=f"from {', '.join(CONTENDERS)}; an app name alone means both compressions",
    )
    parser.add_argument("--repo", type=Path, help="import trio_asgi_ws from this checkout in the servers")
    parser.add_argument("--server-stderr", action="store_true", help="let the servers' stderr through")
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.repo = args.repo.resolve() if args.repo else None
    sys.path.insert(0, str(args.repo or REPO))
    sys.path.insert(1, str(SCRIPT.parent))  # _apps
    if args.serve:
        run_server(args.serve)
        return
    if args.client:
        asyncio.run(client_main())
        return
    if args.quick:
        args.connections, args.rounds = 200, 1
    print(f"trio_asgi_ws from {describe_checkout(args.repo or REPO)}; {os.cpu_count()} CPUs.")
    contenders: tuple[str, ...] = args.contenders
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    client = Child("--client")
    started = time.monotonic()
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                sample = measure(contender, client, args)
                samples[contender].append(sample)
                print(
                    f"[{time.monotonic() - started:6.1f}s] round {round_index + 1}/{args.rounds} "
                    f"{contender:<24} {sample['kib']:6.1f} KiB/conn  {sample['fds']:.2f} fds/conn  "
                    f"{sample['tasks']:.2f} tasks/conn  deflate={sample['deflate']}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        client.kill()
    print_table(contenders, samples, args)


if __name__ == "__main__":
    main()
