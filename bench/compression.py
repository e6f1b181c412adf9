"""Cost of permessage-deflate: the server's ``--compression none`` against ``--compression deflate``.

Run ``python bench/compression.py`` (about 45 s on 2 cores; ``--quick`` about 20 s).
``python bench/compression.py --chromium`` instead asks the installed headless Chromium what it
offers in ``Sec-WebSocket-Extensions`` and prints that header.

Each measurement starts a fresh ``python -m trio_asgi_ws examples.echo:app --port P
--compression X`` (ports 19000-19499) and drives it from this process with a small client built on
wsproto's ``Connection`` over trio TCP streams.  The client does its own upgrade request and offers
compression exactly as Chrome does (``Sec-WebSocket-Extensions: permessage-deflate;
client_max_window_bits``); when the 101 agrees to it, the client really compresses what it sends
and inflates what it receives (wsproto's ``PerMessageDeflate``), so both ends hold zlib contexts.

1. Memory per idle connection: after one warm-up connection, read the server's VmRSS
   (/proc/PID/status), open N connections (default 200), send one ~1 KiB chat-like JSON message
   on each and wait for its echo (``--per-conn K``: K of them, which touches more of zlib's
   window), let them sit idle for a moment, read VmRSS again: (after - before) / N.
2. Server CPU per echoed message: one connection (warmed up), M request/response round trips
   (default 5,000) of ~1 KiB chat-like JSON, different every time; utime+stime of the server
   (/proc/PID/stat) before and after, divided by M.  The client counts the bytes it writes and
   reads during the exchange (frames, headers included) for wire bytes per message each way.

Contenders alternate within each round (the first one rotates from round to round); the table
reports medians over rounds and the median of the per-round ratios deflate / none.  These
machines are noisy: read ratios, not absolute numbers.  Progress goes to stderr, the table to
stdout; the script asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PORTS = range(19000, 19500)
CONTENDERS = ("none", "deflate")
CHROME_OFFER = "permessage-deflate; client_max_window_bits"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- chat-like messages --------------------------------------------------------------------------

_VOCABULARY = (
    "the a to and of is in it you that for on with this be are have not but just so what can "
    "was we do if at about my your they all like get no one know think will up out there how "
    "now yes ok really good time would when then see going people should right here want need "
    "deploy build release meeting tomorrow today review merge branch ticket bug fix test server "
    "client latency dashboard coffee lunch weekend thanks sure maybe later agreed sounds great "
    "update docs schedule customer issue priority sprint standup rollback config staging prod"
)
_WORDS = tuple(_VOCABULARY.split())
_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
          "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter")
_ROOMS = ("general", "random", "engineering", "support", "release-planning", "design")
_EMOJI = ("thumbsup", "tada", "eyes", "heart", "rocket", "laughing", "white_check_mark")


def chat_message(index: int, size: int = 1024) -> str:
    """A chat event as JSON of about ``size`` bytes; different for every ``index``, same each run."""
    rng = random.Random(index)
    user = rng.choice(_NAMES)
    event: dict[str, Any] = {
        "type": "message.created",
        "id": f"msg_{rng.getrandbits(64):016x}",
        "room": {"id": f"room_{rng.randrange(1, 40)}", "name": rng.choice(_ROOMS)},
        "author": {
            "id": f"usr_{rng.getrandbits(40):010x}",
            "name": user,
            "display_name": user.capitalize() + " " + rng.choice(_NAMES).capitalize(),
            "avatar_url": f"https://cdn.example.com/avatars/{rng.getrandbits(48):012x}.png",
        },
        "sent_at": f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                   f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
                   f"{rng.randrange(1000):03d}Z",
        "reply_to": f"msg_{rng.getrandbits(64):016x}" if rng.random() < 0.3 else None,
        "mentions": [f"@{rng.choice(_NAMES)}" for _ in range(rng.randrange(3))],
        "reactions": {rng.choice(_EMOJI): rng.randrange(1, 9) for _ in range(rng.randrange(4))},
        "edited": rng.random() < 0.1,
        "text": "",
    }
    base = len(json.dumps(event))
    words: list[str] = []
    length = 0
    while base + length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    event["text"] = " ".join(words)[: max(0, size - base)]
    return json.dumps(event)


# -- the client: a raw upgrade request, then wsproto's Connection -------------------------------


class Client:
    """One WebSocket connection; counts the bytes it writes and reads."""

    def __init__(self, stream: trio.SocketStream, connection: Connection, agreed: str | None) -> None:
        self.stream = stream
        self.connection = connection
        self.agreed = agreed
        self.sent = 0
        self.received = 0

    @classmethod
    async def connect(cls, port: int, offer: str | None = CHROME_OFFER) -> Client:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            key = base64.b64encode(os.urandom(16))
            lines = [
                b"GET / HTTP/1.1",
                f"Host: 127.0.0.1:{port}".encode(),
                b"Connection: Upgrade",
                b"Pragma: no-cache",
                b"Cache-Control: no-cache",
                b"Upgrade: websocket",
                f"Origin: http://127.0.0.1:{port}".encode(),
                b"Sec-WebSocket-Version: 13",
                b"Sec-WebSocket-Key: " + key,
            ]
            if offer:
                lines.append(b"Sec-WebSocket-Extensions: " + offer.encode())
            await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection during the handshake")
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            status, *header_lines = head.decode("latin-1").split("\r\n")
            if status.split()[1] != "101":
                raise RuntimeError(f"handshake refused: {status}")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != expected:
                raise RuntimeError(f"bad Sec-WebSocket-Accept: {headers!r}, expected {expected!r}")
            agreed = headers.get("sec-websocket-extensions")
            extensions: list[Extension] = []
            if agreed:
                if not agreed.startswith("permessage-deflate"):
                    raise RuntimeError(f"unexpected extension {agreed!r}")
                deflate = PerMessageDeflate()
                deflate.finalize(agreed)
                extensions.append(deflate)
            return cls(stream, Connection(ConnectionType.CLIENT, extensions, trailing_data=rest), agreed)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def send_text(self, text: str) -> None:
        data = self.connection.send(TextMessage(data=text))
        self.sent += len(data)
        await self.stream.send_all(data)

    async def receive_text(self) -> str:
        parts: list[str] = []
        while True:
            for event in self.connection.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        return "".join(parts)
                elif isinstance(event, Ping):
                    await self.stream.send_all(self.connection.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise RuntimeError(f"the server closed the connection: {event.code} {event.reason}")
            data = await self.stream.receive_some(65536)
            if not data:
                raise RuntimeError("the server dropped the connection")
            self.received += len(data)
            self.connection.receive_data(data)

    async def echo(self, text: str) -> None:
        await self.send_text(text)
        if await self.receive_text() != text:
            raise RuntimeError("the echo did not match what was sent")

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.send_all(self.connection.send(CloseConnection(code=1000)))
        await trio.aclose_forcefully(self.stream)


# -- the server process --------------------------------------------------------------------------


def _free_port(start: int) -> int:
    for port in range(start, PORTS.stop):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class Server:
    _next_port = PORTS.start

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self.port = _free_port(Server._next_port)
        Server._next_port = self.port + 1 if self.port + 1 < PORTS.stop else PORTS.start
        self.process: trio.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def __aenter__(self) -> Server:
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_asgi_ws", "examples.echo:app", "--port", str(self.port),
             "--compression", self.compression, "--log-level", "WARNING"],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = trio.current_time() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                probe = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError:
                if trio.current_time() > deadline:
                    raise RuntimeError("the server did not start listening within 20 s") from None
                await trio.sleep(0.05)
            else:
                await probe.aclose()
                return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        with trio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await self.process.wait()
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # Fields after the ")" start at field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- the measurements ----------------------------------------------------------------------------


async def measure_memory(server: Server, conns: int, per_conn: int, settle: float) -> dict[str, Any]:
    warm = await Client.connect(server.port)
    for index in range(5):
        await warm.echo(chat_message(10_000_000 + index))
    await warm.aclose()
    await trio.sleep(settle)
    before = server.rss_kib()
    clients: list[Client] = []
    limit = trio.CapacityLimiter(20)

    async def open_one(index: int) -> None:
        async with limit:
            client = await Client.connect(server.port)
            clients.append(client)
            for n in range(per_conn):
                await client.echo(chat_message(20_000_000 + index * per_conn + n))

    try:
        async with trio.open_nursery() as nursery:
            for index in range(conns):
                nursery.start_soon(open_one, index)
        await trio.sleep(settle)
        after = server.rss_kib()
        agreed = {client.agreed for client in clients}
    finally:
        with trio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()
    if len(agreed) != 1:
        raise RuntimeError(f"the connections disagree on the extension: {agreed}")
    return {"kib_per_conn": (after - before) / conns, "rss_before": before, "rss_after": after,
            "agreed": agreed.pop()}


async def measure_cpu(server: Server, messages: int) -> dict[str, Any]:
    client = await Client.connect(server.port)
    try:
        for index in range(50):
            await client.echo(chat_message(30_000_000 + index))
        payloads = [chat_message(index) for index in range(messages)]
        sent, received = client.sent, client.received
        before = server.cpu_seconds()
        start = time.perf_counter()
        for payload in payloads:
            await client.echo(payload)
        elapsed = time.perf_counter() - start
        after = server.cpu_seconds()
        return {
            "cpu_us": (after - before) / messages * 1e6,
            "rate": messages / elapsed,
            "up": (client.sent - sent) / messages,
            "down": (client.received - received) / messages,
            "payload": sum(len(p.encode()) for p in payloads) / messages,
            "agreed": client.agreed,
        }
    finally:
        await client.aclose()


async def orchestrate(rounds: int, conns: int, per_conn: int, messages: int, settle: float) -> None:
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    started = time.monotonic()
    for round_index in range(rounds):
        shift = round_index % len(CONTENDERS)
        for contender in CONTENDERS[shift:] + CONTENDERS[:shift]:
            async with Server(contender) as server:
                memory = await measure_memory(server, conns, per_conn, settle)
                cpu = await measure_cpu(server, messages)
            samples[contender].append({**memory, **cpu})
            print(
                f"[{time.monotonic() - started:6.1f}s] round {round_index + 1}/{rounds} {contender:<8} "
                f"RSS {memory['rss_before']}->{memory['rss_after']} KiB = "
                f"{memory['kib_per_conn']:6.1f} KiB/conn  cpu {cpu['cpu_us']:6.0f} us/msg "
                f"{cpu['rate']:6.0f} msg/s  wire up {cpu['up']:.0f} B down {cpu['down']:.0f} B  "
                f"extension: {memory['agreed']!r}",
                file=sys.stderr,
                flush=True,
            )
    print_table(samples, rounds, conns, per_conn, messages)


def print_table(
    samples: dict[str, list[dict[str, Any]]], rounds: int, conns: int, per_conn: int, messages: int
) -> None:
    def median(name: str, key: str) -> float:
        return float(statistics.median(run[key] for run in samples[name]))

    def ratio(key: str) -> float:
        return statistics.median(
            d[key] / n[key] if n[key] else float("nan")
            for d, n in zip(samples["deflate"], samples["none"], strict=True)
        )

    payload = samples["none"][0]["payload"]
    print()
    print(
        f"permessage-deflate cost, `python -m trio_asgi_ws examples.echo:app --compression X`, client "
        f"offering `{CHROME_OFFER}` (as Chrome does); medians of {rounds} rounds; ratio = median of "
        f"per-round deflate/none.  Memory: {conns} connections, {per_conn} ~1 KiB echo(es) each, then "
        f"idle.  CPU and wire: one connection, {messages} request/response echoes of chat-like JSON "
        f"(mean {payload:.0f} B of text)."
    )
    print()
    print("| contender | extension agreed | KiB RSS per idle conn | server CPU µs/msg | msgs/s "
          "| wire B/msg client→server | wire B/msg server→client |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in CONTENDERS:
        agreed = samples[name][0]["agreed"] or "(none)"
        print(f"| {name} | `{agreed}` | {median(name, 'kib_per_conn'):.1f} | {median(name, 'cpu_us'):.0f} "
              f"| {median(name, 'rate'):.0f} | {median(name, 'up'):.0f} | {median(name, 'down'):.0f} |")
    print(f"| deflate/none | | {ratio('kib_per_conn'):.2f} | {ratio('cpu_us'):.2f} | {ratio('rate'):.2f} "
          f"| {ratio('up'):.2f} | {ratio('down'):.2f} |")


# -- what does headless Chromium offer? ----------------------------------------------------------


async def chromium_offer(binary: str, wait: float) -> dict[str, str] | None:
    """Serve a page that opens a WebSocket; return the upgrade request's headers (None: never came)."""
    port = _free_port(PORTS.stop - 50)
    upgrade: dict[str, str] = {}
    seen = trio.Event()
    page = (
        "<!doctype html><title>ws</title><script>"
        f"new WebSocket('ws://127.0.0.1:{port}/ws');"
        "</script><img src='/hold'>"
    ).encode()

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            with trio.move_on_after(wait):
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
            request, *lines = buffer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            path = request.split()[1] if len(request.split()) > 1 else "/"
            if headers.get("Upgrade", "").lower() == "websocket":
                upgrade.update({"request": request, **headers})
                seen.set()
                return  # drop it: only the request matters
            if path == "/hold":  # keeps the page's load event (and --dump-dom) until the upgrade
                with trio.move_on_after(wait):
                    await seen.wait()
                body, kind = b"", "image/gif"
            elif path == "/":
                body, kind = page, "text/html"
            else:
                body, kind = b"", "text/plain"
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(
                    f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode() + body
                )

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                       "--disable-background-networking", "--disable-component-update", "--disable-sync",
                       "--no-first-run",
                       f"--user-data-dir={profile}", "--dump-dom", f"http://127.0.0.1:{port}/"]
            with trio.move_on_after(wait + 30):
                await trio.run_process(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       check=False)
            nursery.cancel_scope.cancel()
    return upgrade or None


def chromium_main(timeout: float) -> None:
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        print("no chromium on PATH: skipped")
        return
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    headers = trio.run(chromium_offer, binary, timeout)
    if headers is None:
        print(f"{version}: no WebSocket upgrade arrived within {timeout:.0f} s")
        return
    print(f"{version} ({binary}, headless) sent this upgrade request:")
    for name, value in headers.items():
        print(f"  {name}: {value}" if name != "request" else f"  {value}")
    print()
    print(f"Sec-WebSocket-Extensions: {headers.get('Sec-WebSocket-Extensions', '(absent)')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds of both contenders (default 5, quick 3)")
    parser.add_argument("--conns", type=int, default=200, help="idle connections for the memory figure")
    parser.add_argument("--messages", type=int, help="echoes for the CPU figure (default 5000, quick 2000)")
    parser.add_argument("--per-conn", type=int, default=1,
                        help="~1 KiB echoes on each idle connection before it idles (default 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000 messages")
    parser.add_argument("--chromium", action="store_true",
                        help="instead, report what headless Chromium offers in Sec-WebSocket-Extensions")
    args = parser.parse_args()
    if args.chromium:
        chromium_main(timeout=20)
        return
    rounds = args.rounds or (3 if args.quick else 5)
    messages = args.messages or (2000 if args.quick else 5000)
    trio.run(orchestrate, rounds, args.conns, args.per_conn, messages, args.settle)


if __name__ == "__main__":
    main()
