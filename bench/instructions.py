"""Instructions per echoed message, counted with callgrind: the cost of each layer, without noise.

Run ``python bench/instructions.py`` (about 3 minutes on 2 cores; needs ``valgrind`` on PATH).

An in-process fake server feeds N messages (32 bytes of text, or of binary with ``--payload
binary``) to each echo app of ``bench/_apps.py`` through an ASGI ``receive`` backed by a 10-slot
trio memory channel, as hypercorn's trio worker does, and collects the app's sends.  Each case
runs under ``valgrind --tool=callgrind`` at two values of N; the difference in total instructions
divided by the difference in N is the cost of one echoed message, with interpreter start-up,
imports, handshake and shutdown cancelled out.

Client patterns:

- ``request/response``: the fake client feeds one message, waits for its echo, feeds the next, so
  the handler is already waiting in ``receive`` when each message arrives (the usual echo);
- ``pipelined``: a feeder task keeps the 10-slot queue full while a collector task takes the
  echoes, so the handler usually finds a message ready;
- ``sparse``: request/response with a 60 ms pause after each echo, longer than the structured
  pump's ``takeover_delay`` (50 ms), so its timer fires once per message; this is what a
  connection sees whose messages are 50 ms or more apart (chat, notifications).  The per-message
  figure includes the fake client's ``trio.sleep``, the same for every contender: read the
  difference to raw.

``request/response`` and ``pipelined`` run on a frozen clock under valgrind.  Valgrind slows the
program some 50 times, so on the real clock the pump's timer (once per ``takeover_delay`` on a
busy connection) would fire about 50 times as often *per message* as it does natively, by an amount
that depends on the machine's load; frozen, no timer fires and the count is the per-message path
alone (``--real-clock`` turns this off).  ``sparse`` needs time to pass and always uses the real
clock.  The children run with ``PYTHONHASHSEED=0`` and seed trio's scheduler randomness, so
frozen-clock counts repeat exactly.

A second, native run of each case counts trio task steps per message with a
``trio.abc.Instrument``, to show whether a contender adds task switches per message (the pump's
reader task and the per-run watcher are counted on their own).

``--memory`` (about 20 seconds, no valgrind) instead counts the memory each idle connection
holds, in-process and exactly: for each contender, in a fresh interpreter, it opens ``--conns``
connections (1,000 by default) to the same fake server, exchanges one message on each, and waits
until every handler is idle in ``receive``; ``tracemalloc``'s count of the bytes allocated then
and still held, minus the count before the first connection, divided by the number of
connections, is the cost of one idle connection: the handler's task and frames, its WebSocket
objects, and the fake server's two channels (the same for every contender: read the difference
to raw).  A warm-up of 20 connections runs first, so that one-off allocations (caches, interned
names, the structured mode's per-run watcher) are not counted per connection.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import trio
import trio.testing

SCRIPT = Path(__file__).resolve()
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))

from _apps import APPS, CONTENDERS, App, StepCounter  # noqa: E402

PATTERNS = ("request/response", "pipelined", "sparse")
SPARSE_GAP = 0.060  # seconds after each echo; more than WebSocket's default takeover_delay (0.05)
SPARSE_STEPS_N = 50  # the native step count of the sparse pattern sleeps 60 ms a message
QUEUE_SIZE = 10  # hypercorn's max_app_queue_size
TEXT = "x" * 32
CONNECT = {"type": "websocket.connect"}
PAYLOADS: dict[str, tuple[str, str | bytes]] = {"text": ("text", TEXT), "binary": ("bytes", TEXT.encode())}
"""``--payload``: the message field and the 32-byte value each echoed message carries."""
DISCONNECT = {"type": "websocket.disconnect", "code": 1006}
SCOPE: dict[str, Any] = {
    "type": "websocket",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "scheme": "ws",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "subprotocols": [],
    "extensions": {"websocket.http.response": {}},
}


# -- the in-process echo -------------------------------------------------------------------------


def received(payload: str) -> dict[str, Any]:
    """The ``websocket.receive`` message hypercorn delivers: both keys, the other one None."""
    field, value = PAYLOADS[payload]
    return {"type": "websocket.receive", "text": None, "bytes": None, field: value}


async def echo(app: App, pattern: str, n: int, payload: str = "text") -> None:
    """Feed ``n`` messages to ``app`` like hypercorn's trio worker and check every echo."""
    message = received(payload)
    field, value = PAYLOADS[payload]

    def _check_echo(reply: dict[str, Any]) -> None:
        if reply["type"] != "websocket.send" or reply.get(field) != value:
            raise RuntimeError(f"unexpected message from the app: {reply!r}")

    to_app, app_inbox = trio.open_memory_channel[dict[str, Any]](QUEUE_SIZE)
    app_outbox, from_app = trio.open_memory_channel[dict[str, Any]](math.inf)

    async def request_response() -> None:
        for _ in range(n):
            await to_app.send(message)
            _check_echo(await from_app.receive())
        await to_app.send(DISCONNECT)

    async def sparse() -> None:
        for _ in range(n):
            await to_app.send(message)
            _check_echo(await from_app.receive())
            await trio.sleep(SPARSE_GAP)
        await to_app.send(DISCONNECT)

    async def feeder() -> None:
        for _ in range(n):
            await to_app.send(message)
        await to_app.send(DISCONNECT)

    async def collector() -> None:
        for _ in range(n):
            _check_echo(await from_app.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, dict(SCOPE), app_inbox.receive, app_outbox.send, name="handler")
        await to_app.send(CONNECT)
        accept = await from_app.receive()
        if accept["type"] != "websocket.accept":
            raise RuntimeError(f"expected an accept, got {accept!r}")
        if pattern == "request/response":
            nursery.start_soon(request_response, name="client")
        elif pattern == "sparse":
            nursery.start_soon(sparse, name="client")
        else:
            nursery.start_soon(feeder, name="client feeder")
            nursery.start_soon(collector, name="client collector")


class FrozenClock(trio.abc.Clock):
    """A clock that never advances: per-message counts leave out time-driven wake-ups."""

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return 0.0

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= 0.0 else 1.0


def _task_kind(name: str) -> str:
    return name.split()[0] if name == "handler" or name.startswith("client") else "other"


def run_once(contender: str, pattern: str, n: int, *, payload: str = "text", frozen_clock: bool = False,
             instruments: tuple[trio.abc.Instrument, ...] = ()) -> None:
    # Trio randomises the order of each scheduling batch; seed it so counts repeat.
    trio._core._run._r.seed(0)
    clock = FrozenClock() if frozen_clock and pattern != "sparse" else None
    trio.run(echo, APPS[contender], pattern, n, payload, clock=clock, instruments=instruments)


# -- memory per idle connection ------------------------------------------------------------------


async def idle_connections(app: App, conns: int, payload: str, warm_up: int) -> int:
    """Bytes held per idle connection of ``app`` (tracemalloc), after one message each."""
    message = received(payload)
    field, value = PAYLOADS[payload]
    disconnects: list[trio.MemorySendChannel[dict[str, Any]]] = []

    async def connect(nursery: trio.Nursery) -> None:
        to_app, app_inbox = trio.open_memory_channel[dict[str, Any]](QUEUE_SIZE)
        app_outbox, from_app = trio.open_memory_channel[dict[str, Any]](math.inf)
        nursery.start_soon(app, dict(SCOPE), app_inbox.receive, app_outbox.send, name="handler")
        to_app.send_nowait(CONNECT)
        if (await from_app.receive())["type"] != "websocket.accept":
            raise RuntimeError("the app did not accept")
        to_app.send_nowait(message)
        if (await from_app.receive()).get(field) != value:
            raise RuntimeError("the app did not echo")
        disconnects.append(to_app)

    async with trio.open_nursery() as nursery:
        for _ in range(warm_up):
            await connect(nursery)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(conns):
            await connect(nursery)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        for to_app in disconnects:
            to_app.send_nowait(DISCONNECT)
    return held // conns


def memory_once(contender: str, conns: int, payload: str) -> int:
    tracemalloc.start()
    return trio.run(idle_connections, APPS[contender], conns, payload, 20)


def print_memory(conns: int, payload: str) -> None:
    per_connection: dict[str, int] = {}
    for contender in CONTENDERS:  # one fresh interpreter each
        out = subprocess.run(
            [sys.executable, str(SCRIPT), "--memory-run", contender, str(conns), "--payload", payload],
            check=True, capture_output=True, text=True,
        ).stdout
        per_connection[contender] = int(out.split()[-1])
        print(f"{contender:<10} {per_connection[contender]:,} bytes", file=sys.stderr, flush=True)
    print(f"Memory held per idle connection (tracemalloc), {conns:,} connections, one 32-byte {payload} "
          "message exchanged on each.")
    print()
    print("| contender | bytes/connection | KiB/connection | Δ vs raw (bytes) |")
    print("|---|---:|---:|---:|")
    raw = per_connection["raw"]
    for contender in CONTENDERS:
        held = per_connection[contender]
        print(f"| {contender} | {held:,} | {held / 1024:.2f} | {held - raw:+,} |")


# -- the driver ----------------------------------------------------------------------------------

_TOTALS = re.compile(rb"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


class Plan:
    def __init__(self, args: argparse.Namespace) -> None:
        self.real_clock: bool = args.real_clock
        self.payload: str = args.payload
        self.jobs: int = args.jobs
        self.sizes = {
            pattern: (args.sparse_n1, args.sparse_n2) if pattern == "sparse" else (args.n1, args.n2)
            for pattern in PATTERNS
        }

    def clock(self, pattern: str) -> str:
        return "real" if self.real_clock or pattern == "sparse" else "frozen"


async def count_instructions(plan: Plan, contender: str, pattern: str, n: int, outdir: str) -> int:
    out = os.path.join(outdir, f"callgrind.{contender}.{pattern.replace('/', '-')}.{n}")
    command = [
        "valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}",
        sys.executable, str(SCRIPT), "--run", contender, pattern, str(n), "--payload", plan.payload,
        *(["--real-clock"] if plan.real_clock else []),
    ]
    await trio.run_process(command, env={**os.environ, "PYTHONHASHSEED": "0"})
    data = await trio.Path(out).read_bytes()
    match = _TOTALS.search(data)
    if match is None:
        raise RuntimeError(f"no totals/summary line in {out}")
    return int(match.group(1))


async def measure_all(plan: Plan) -> dict[tuple[str, str, int], int]:
    totals: dict[tuple[str, str, int], int] = {}
    cases = [(c, p, n) for p in PATTERNS for c in CONTENDERS for n in plan.sizes[p]]
    # The sparse cases mostly sleep: they get their own slots, and start first.
    busy = trio.CapacityLimiter(plan.jobs)
    sleepy = trio.CapacityLimiter(2 * len(CONTENDERS))

    async def one(contender: str, pattern: str, n: int, outdir: str) -> None:
        async with sleepy if pattern == "sparse" else busy:
            totals[contender, pattern, n] = await count_instructions(plan, contender, pattern, n, outdir)
        print(f"[{len(totals)}/{len(cases)}] {pattern:<16} {contender:<10} N={n:<6} "
              f"{totals[contender, pattern, n]:,} instructions", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as outdir:
        async with trio.open_nursery() as nursery:
            for contender, pattern, n in sorted(cases, key=lambda case: case[1] != "sparse"):
                nursery.start_soon(one, contender, pattern, n, outdir)
    return totals


def print_instructions(plan: Plan, totals: dict[tuple[str, str, int], int]) -> None:
    print("Instructions per echoed message (callgrind): (I(N2) - I(N1)) / (N2 - N1); "
          f"32-byte {plan.payload} messages, 10-slot receive queue.")
    print()
    print("| pattern | N1, N2 | clock | contender | instructions/msg | Δ vs raw | ratio vs raw |")
    print("|---|---|---|---|---:|---:|---:|")
    for pattern in PATTERNS:
        n1, n2 = plan.sizes[pattern]
        per_message = {c: (totals[c, pattern, n2] - totals[c, pattern, n1]) / (n2 - n1) for c in CONTENDERS}
        raw = per_message["raw"]
        for contender in CONTENDERS:
            cost = per_message[contender]
            print(f"| {pattern} | {n1:,}, {n2:,} | {plan.clock(pattern)} | {contender} | {cost:,.0f} "
                  f"| {cost - raw:+,.0f} | {cost / raw:.2f} |")


def print_steps(plan: Plan) -> None:
    print()
    print("Trio task steps per echoed message (native run, real clock).")
    print()
    print("| pattern | N | contender | handler | pump | client | other | total |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for pattern in PATTERNS:
        n = SPARSE_STEPS_N if pattern == "sparse" else plan.sizes[pattern][1]
        for contender in CONTENDERS:
            counter = StepCounter(_task_kind)
            run_once(contender, pattern, n, payload=plan.payload, instruments=(counter,))
            cells = [counter.steps[kind] for kind in ("handler", "pump", "client", "other")]
            print(f"| {pattern} | {n:,} | {contender} | " + " | ".join(f"{c / n:.3f}" for c in cells)
                  + f" | {sum(cells) / n:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=2000, help="smaller message count (default 2000)")
    parser.add_argument("--n2", type=int, default=6000, help="larger message count (default 6000)")
    parser.add_argument("--sparse-n1", type=int, default=100, help="for the sparse pattern (default 100)")
    parser.add_argument("--sparse-n2", type=int, default=300, help="for the sparse pattern (default 300)")
    parser.add_argument("--jobs", type=int, default=2, help="CPU-bound valgrind runs at once (default 2)")
    parser.add_argument("--real-clock", action="store_true",
                        help="run every case on trio's real clock (see the module docstring)")
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="text",
                        help="what each echoed message carries: 32 bytes of text or binary (default text)")
    parser.add_argument("--memory", action="store_true",
                        help="count the memory held per idle connection instead (tracemalloc; no valgrind)")
    parser.add_argument("--conns", type=int, default=1000, help="connections for --memory (default 1000)")
    parser.add_argument("--run", nargs=3, metavar=("CONTENDER", "PATTERN", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-run", nargs=2, metavar=("CONTENDER", "CONNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        contender, conns = args.memory_run
        print(memory_once(contender, int(conns), args.payload))
        return
    if args.memory:
        print_memory(args.conns, args.payload)
        return
    if args.run:
        contender, pattern, n = args.run
        run_once(contender, pattern, int(n), payload=args.payload, frozen_clock=not args.real_clock)
        return
    if args.n2 <= args.n1 or args.sparse_n2 <= args.sparse_n1:
        parser.error("N2 must be larger than N1")
    plan = Plan(args)
    totals = trio.run(measure_all, plan)
    print()
    print_instructions(plan, totals)
    print_steps(plan)


if __name__ == "__main__":
    main()
