"""What Prometheus metrics cost per echoed message, in instructions (valgrind's callgrind).

Run ``python bench/metrics_cost.py`` (about 2 minutes; needs valgrind).  End-to-end CPU figures
(``bench/echo.py --contenders raw-serve,raw-metrics``) swing by more than the few percent at stake
on a shared VM; instruction counts repeat.  One process runs ``trio_asgi_ws.server.serve()`` on
loopback and a minimal raw-socket client (pre-built masked frames, so the client costs little)
doing N request/response echoes of a 32-byte text message through the ``raw`` app of
``bench/_apps.py``.  Each case (metrics off, metrics on) runs under callgrind at two values of N;
the table gives ``(I(N2) - I(N1)) / (N2 - N1)`` instructions per echo, so start-up, handshake
and close cancel out.  The guard's timers and pings are off (``read_timeout``/``send_timeout``/
``ping_interval`` None) so that no timer fires a varying number of times under valgrind.
``PYTHONHASHSEED=0`` keeps the runs alike.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _apps import SERVED  # noqa: E402

PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
REPLY = bytes([0x81, len(PAYLOAD)]) + PAYLOAD
CLOSE = bytes([0x88, 0x82]) + MASK + bytes(b ^ MASK[i] for i, b in enumerate(b"\x03\xe8"))


async def _read_exactly(stream: trio.SocketStream, size: int, buffer: bytearray) -> bytes:
    while len(buffer) < size:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("server closed")
        buffer += chunk
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


async def run_once(messages: int, metrics: bool) -> None:
    from trio_asgi_ws.server import serve

    options: dict[str, object] = {
        "read_timeout": None,
        "send_timeout": None,
        "ping_interval": None,
        "handle_signals": False,
        "connection_log": False,
    }
    if metrics:
        options["metrics_port"] = 0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(
            SERVED["raw"], "127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status, **options
        ))
        port = int(binds[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive_some(65536)
        del buffer[: buffer.index(b"\r\n\r\n") + 4]
        for _ in range(messages):
            await stream.send_all(FRAME)
            assert await _read_exactly(stream, len(REPLY), buffer) == REPLY
        await stream.send_all(CLOSE)
        await stream.aclose()
        stop.set()


def instructions(messages: int, metrics: bool) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, str(Path(__file__).resolve()), "--run", str(messages),
    ]
    if metrics:
        command.append("--metrics")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    match = re.search(r"Collected : (\d+)", result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=200)
    parser.add_argument("--n2", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case at each N (median)")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        trio.run(run_once, args.run, args.metrics)
        return
    per_echo: dict[bool, float] = {}
    for metrics in (False, True):
        counts = {}
        for n in (args.n1, args.n2):
            runs = sorted(instructions(n, metrics) for _ in range(args.repeat))
            counts[n] = runs[len(runs) // 2]
            print(f"metrics {'on ' if metrics else 'off'} N={n}: {counts[n]:,} instructions {runs}",
                  file=sys.stderr, flush=True)
        per_echo[metrics] = (counts[args.n2] - counts[args.n1]) / (args.n2 - args.n1)
    off, on = per_echo[False], per_echo[True]
    print(f"\nInstructions per echoed 32-byte text message, serve() + a raw-socket client in one process "
          f"(callgrind, N={args.n1} and {args.n2}, median of {args.repeat}).\n")
    print("| metrics | instructions per echo | difference | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| off | {off:,.0f} | | 1.000 |")
    print(f"| on | {on:,.0f} | {on - off:+,.0f} | {on / off:.3f} |")


if __name__ == "__main__":
    main()
