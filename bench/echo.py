"""End-to-end echo benchmark: four echo apps under hypercorn's trio worker, driven over loopback.

Run ``python bench/echo.py`` (about 7 minutes on 2 cores) or ``python bench/echo.py --quick`` (under 1.5).

``--contenders`` picks which servers take part, e.g.
``--contenders raw,raw-serve,structured,structured-serve``.  Besides the four apps under plain
``hypercorn.trio.serve`` (the default set), each app can run as ``NAME-serve``: the same app
served by ``trio_asgi_ws.server.serve()`` with its defaults, i.e. through the corrections to
hypercorn's trio worker and the ``GracefulShutdown`` middleware.  When both ``NAME`` and
``NAME-serve`` run, the table adds the CPU ratio of the second to the first.  ``NAME-metrics`` is
``NAME-serve`` with Prometheus metrics on (``metrics_port=0``, never scraped during the run); its
extra column is its CPU ratio to ``NAME-serve``: what metrics cost per message.

Processes: one hypercorn server per contender (``--serve NAME``, kept up for the whole run) and
one trio-websocket client process (``--client``) that the parent drives over its stdin/stdout.
For each measurement the client opens its connections and warms them up, the parent reads the
server's user+sys CPU time from /proc/PID/stat, the client runs a fixed number of request/response
round trips, the parent reads the CPU time again, and only then are the connections closed: the
CPU figure covers the message exchange and nothing else.

Contenders alternate within each round (raw, plain, structured, starlette, then the next
workload; the starting contender rotates from round to round) and the table reports medians over
rounds, with the CPU ratio to raw ASGI (or to the first contender, without ``raw``) taken per
round and then the median.  These machines are noisy: read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _apps import CONTENDERS, SERVED, StepCounter  # noqa: E402
from _processes import LineReader  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVE_SUFFIX = "-serve"
"""``NAME-serve``: the app ``NAME`` served by ``trio_asgi_ws.server.serve()`` instead of hypercorn's."""
METRICS_SUFFIX = "-metrics"
"""``NAME-metrics``: as ``NAME-serve``, with Prometheus metrics on (``metrics_port``)."""
ALL_CONTENDERS = (
    CONTENDERS
    + tuple(name + SERVE_SUFFIX for name in CONTENDERS)
    + tuple(name + METRICS_SUFFIX for name in CONTENDERS)
)


def app_name(contender: str) -> str:
    """The ``_apps`` app a contender runs (``raw-serve`` and ``raw-metrics`` run ``raw``)."""
    return contender.removesuffix(SERVE_SUFFIX).removesuffix(METRICS_SUFFIX)


def paired_with(contender: str, contenders: tuple[str, ...]) -> str | None:
    """What a contender's extra ratio column compares it with: ``NAME-serve`` to ``NAME``,
    ``NAME-metrics`` to ``NAME-serve`` (metrics on vs off, same serving path)."""
    if contender.endswith(METRICS_SUFFIX):
        other = app_name(contender) + SERVE_SUFFIX
    elif contender.endswith(SERVE_SUFFIX):
        other = app_name(contender)
    else:
        return None
    return other if other in contenders else None


def parse_contenders(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_CONTENDERS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names, comma-separated, from {', '.join(ALL_CONTENDERS)}; got {text!r}"
        )
    return names


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "text" or "bytes"
    size: int
    conns: int
    count: int  # round trips per measurement, over all connections
    quick_count: int

    def total(self, quick: bool) -> int:
        return self.quick_count if quick else self.count


WORKLOADS = (
    Workload("text 32 B, 1 conn", "text", 32, 1, 15000, 5000),
    Workload("text 32 B, 50 conns", "text", 32, 50, 40000, 12000),
    Workload("binary 64 KiB, 1 conn", "bytes", 64 * 1024, 1, 5000, 1500),
    Workload("binary 64 KiB, 50 conns", "bytes", 64 * 1024, 50, 10000, 3000),
)
WARMUP_PER_CONN = 5


# -- line-oriented pipes between the processes ---------------------------------------------------


async def _stdin_lines() -> LineReader:
    return LineReader(trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))


def _reply(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- server process ------------------------------------------------------------------------------


def _server_task_kind(name: str) -> str:
    return "app" if name.endswith("._handle") else "server"


async def serve(contender: str, counter: StepCounter | None) -> None:
    stdin = await _stdin_lines()
    app = SERVED[app_name(contender)]  # these answer the lifespan scope, as both servers need

    async def parent_gone() -> None:
        # Each line from the parent asks for the task step counts (with --steps); end of file means
        # the parent has exited or wants us to stop.
        while await stdin.readline():
            _reply(dict(counter.steps) if counter is not None else {})

    async with trio.open_nursery() as nursery:
        if contender.endswith((SERVE_SUFFIX, METRICS_SUFFIX)):
            from trio_asgi_ws.server import serve as our_serve

            # serve() logs through the root logger ("Running on ...", at INFO): keep it quiet, and
            # off stdout, which carries the replies to the parent.  Otherwise serve()'s defaults:
            # 1 MiB messages, pings every 20 s, read_timeout 60 s, send_timeout 10 s, no compression.
            # NAME-metrics: the same, counting for Prometheus, with /metrics on a free port (never
            # scraped during a run: a scrape's cost is per scrape, not per message).  The connection
            # log stays off in both (its logger is below INFO here).
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
            metrics = {"metrics_port": 0} if contender.endswith(METRICS_SUFFIX) else {}
            binds = await nursery.start(
                functools.partial(
                    our_serve,
                    app,
                    "127.0.0.1",
                    0,
                    shutdown_trigger=parent_gone,
                    handle_signals=False,
                    **metrics,
                )
            )
        else:
            from hypercorn.config import Config
            from hypercorn.trio import serve as hypercorn_serve

            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.loglevel = "WARNING"
            config.accesslog = None
            binds = await nursery.start(
                functools.partial(hypercorn_serve, app, config, shutdown_trigger=parent_gone)
            )
        port = int(binds[0].rsplit(":", 1)[1])
        _reply({"port": port, "pid": os.getpid()})


# -- client process ------------------------------------------------------------------------------


async def client() -> None:
    import trio_websocket

    commands = await _stdin_lines()
    async with trio.open_nursery() as nursery:
        connections: list[Any] = []
        payload: str | bytes = b""
        while True:
            line = await commands.readline()
            if not line:
                break
            command = json.loads(line)
            if command["cmd"] == "connect":
                payload = "x" * command["size"] if command["kind"] == "text" else os.urandom(command["size"])
                for _ in range(command["conns"]):
                    connections.append(
                        await trio_websocket.connect_websocket(
                            nursery, "127.0.0.1", command["port"], "/", use_ssl=False
                        )
                    )
                async with trio.open_nursery() as warmup:
                    for connection in connections:
                        warmup.start_soon(_round_trips, connection, payload, WARMUP_PER_CONN, [])
                _reply({"ok": True})
            elif command["cmd"] == "run":
                latencies: list[float] = []
                per_conn, extra = divmod(command["count"], len(connections))
                start = time.perf_counter()
                async with trio.open_nursery() as run:
                    for index, connection in enumerate(connections):
                        count = per_conn + (1 if index < extra else 0)
                        run.start_soon(_round_trips, connection, payload, count, latencies)
                elapsed = time.perf_counter() - start
                latencies.sort()
                _reply(
                    {
                        "messages": len(latencies),
                        "elapsed": elapsed,
                        "p50": _percentile(latencies, 0.50),
                        "p99": _percentile(latencies, 0.99),
                    }
                )
            elif command["cmd"] == "close":
                for connection in connections:
                    await connection.aclose()
                connections.clear()
                _reply({"ok": True})
            else:
                raise ValueError(f"unknown command {command!r}")
        for connection in connections:
            await connection.aclose()


async def _round_trips(connection: Any, payload: str | bytes, count: int, latencies: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        await connection.send_message(payload)
        reply = await connection.get_message()
        latencies.append(time.perf_counter() - start)
        if reply != payload:
            raise RuntimeError("the echo did not match what was sent")


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# -- the parent: orchestration and the table -----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # Fields after the ")" start at field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Child:
    """A subprocess in its own session, spoken to in JSON lines; killed with its group on exit."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._lines = LineReader(process.stdout)

    @classmethod
    async def start(cls, name: str, *args: str) -> Child:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
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

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(trio.BrokenResourceError):
                await self._stdin.aclose()
            with trio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()


async def measure(client_proc: Child, server_pid: int, port: int, workload: Workload,
                  quick: bool) -> dict[str, float]:
    await client_proc.request(
        {"cmd": "connect", "port": port, "conns": workload.conns, "kind": workload.kind,
         "size": workload.size}
    )
    before = cpu_seconds(server_pid)
    result = await client_proc.request({"cmd": "run", "count": workload.total(quick)})
    after = cpu_seconds(server_pid)
    await client_proc.request({"cmd": "close"})
    messages = result["messages"]
    return {
        "rate": messages / result["elapsed"],
        "p50": result["p50"] * 1e3,
        "p99": result["p99"] * 1e3,
        "cpu_us": (after - before) / messages * 1e6,
    }


async def measure_steps(client_proc: Child, server: Child, port: int, workload: Workload) -> dict[str, float]:
    """Server task steps per message, by kind of task (the server runs with an Instrument)."""
    await client_proc.request(
        {"cmd": "connect", "port": port, "conns": workload.conns, "kind": workload.kind,
         "size": workload.size}
    )
    before = await server.request({"cmd": "steps"})
    result = await client_proc.request({"cmd": "run", "count": workload.total(True)})
    after = await server.request({"cmd": "steps"})
    await client_proc.request({"cmd": "close"})
    return {kind: (after.get(kind, 0) - before.get(kind, 0)) / result["messages"]
            for kind in ("app", "pump", "server")}


async def orchestrate(contenders: tuple[str, ...], rounds: int, quick: bool, steps: bool) -> None:
    children: list[Child] = []
    try:
        servers: dict[str, tuple[Child, int, int]] = {}
        for contender in contenders:
            extra = ("--count-steps",) if steps else ()
            child = await Child.start(f"server {contender}", "--serve", contender, *extra)
            children.append(child)
        for contender, child in zip(contenders, children, strict=True):
            hello = await child.request()
            servers[contender] = (child, hello["pid"], hello["port"])
        client_proc = await Child.start("client", "--client")
        children.append(client_proc)
        if steps:
            step_samples = {
                (workload.name, contender): await measure_steps(
                    client_proc, servers[contender][0], servers[contender][2], workload
                )
                for workload in WORKLOADS
                for contender in contenders
            }
            print_steps(contenders, step_samples)
            return

        samples: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
        started = time.monotonic()
        for round_index in range(rounds):
            shift = round_index % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for workload in WORKLOADS:
                for contender in order:
                    _, pid, port = servers[contender]
                    sample = await measure(client_proc, pid, port, workload, quick)
                    samples[workload.name, contender].append(sample)
                    print(
                        f"[{time.monotonic() - started:6.1f}s] round {round_index + 1}/{rounds} "
                        f"{workload.name:<24} {contender:<16} {sample['rate']:8.0f} msg/s "
                        f"p50 {sample['p50']:6.2f} ms p99 {sample['p99']:6.2f} ms "
                        f"cpu {sample['cpu_us']:6.0f} us/msg",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for child in reversed(children):
            await child.stop()
    print_table(contenders, samples, rounds, quick)


def _median_ratio(runs: list[dict[str, float]], bases: list[dict[str, float]]) -> float:
    """Median over rounds of each round's CPU ratio (the runs of one round are taken together)."""
    return statistics.median(run["cpu_us"] / base["cpu_us"] for run, base in zip(runs, bases, strict=True))


def print_table(contenders: tuple[str, ...], samples: dict[tuple[str, str], list[dict[str, float]]],
                rounds: int, quick: bool) -> None:
    baseline = "raw" if "raw" in contenders else contenders[0]
    paired = any(paired_with(c, contenders) for c in contenders)
    print()
    print(
        f"Echo over loopback, request/response; medians of {rounds} rounds{' (--quick)' if quick else ''}; "
        f"CPU ratio = median of per-round ratios to {baseline}."
    )
    print("NAME: hypercorn.trio.serve with a plain Config; NAME-serve: trio_asgi_ws.server.serve().")
    if paired:
        print("NAME-metrics: serve() with metrics_port (metrics on).")
        print("paired: NAME-serve's CPU ratio to NAME, NAME-metrics' to NAME-serve (same app, same round).")
    print()
    extra_head, extra_rule = (" CPU ratio paired |", "---:|") if paired else ("", "")
    print(f"| workload | contender | msgs/s | p50 ms | p99 ms | server CPU µs/msg | CPU ratio vs {baseline} |"
          + extra_head)
    print("|---|---|---:|---:|---:|---:|---:|" + extra_rule)
    for workload in WORKLOADS:
        base = samples[workload.name, baseline]
        for contender in contenders:
            runs = samples[workload.name, contender]
            extra = ""
            if paired:
                other = paired_with(contender, contenders)
                if other is not None:
                    extra = f" {_median_ratio(runs, samples[workload.name, other]):.3f} |"
                else:
                    extra = " |"
            print(
                f"| {workload.name} | {contender} "
                f"| {statistics.median(r['rate'] for r in runs):.0f} "
                f"| {statistics.median(r['p50'] for r in runs):.2f} "
                f"| {statistics.median(r['p99'] for r in runs):.2f} "
                f"| {statistics.median(r['cpu_us'] for r in runs):.0f} "
                f"| {_median_ratio(runs, base):.2f} |" + extra
            )


def print_steps(contenders: tuple[str, ...], samples: dict[tuple[str, str], dict[str, float]]) -> None:
    print()
    print("Server task steps per echoed message (trio Instrument in each server; --quick message counts).")
    print("app = the task running the ASGI app, pump = the structured mode's receive pump, "
          "server = hypercorn's own tasks.")
    print()
    print("| workload | contender | app | pump | server | total |")
    print("|---|---|---:|---:|---:|---:|")
    for workload in WORKLOADS:
        for contender in contenders:
            cell = samples[workload.name, contender]
            print(f"| {workload.name} | {contender} | {cell['app']:.3f} | {cell['pump']:.3f} "
                  f"| {cell['server']:.3f} | {sum(cell.values()):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages (1-2 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds of all contenders (default 5, quick 3)")
    parser.add_argument("--contenders", type=parse_contenders, default=CONTENDERS, metavar="A,B,...",
                        help=f"servers to compare, from {', '.join(ALL_CONTENDERS)} "
                             f"(default {','.join(CONTENDERS)}); NAME-serve is NAME under "
                             "trio_asgi_ws.server.serve()")
    parser.add_argument("--steps", action="store_true",
                        help="instead of timing, count server task steps per message (one pass)")
    parser.add_argument("--serve", choices=ALL_CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--count-steps", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        counter = StepCounter(_server_task_kind) if args.count_steps else None
        trio.run(serve, args.serve, counter, instruments=[counter] if counter is not None else [])
    elif args.client:
        trio.run(client)
    else:
        rounds = args.rounds or (3 if args.quick else 5)
        trio.run(orchestrate, args.contenders, rounds, args.quick, args.steps)


if __name__ == "__main__":
    main()
