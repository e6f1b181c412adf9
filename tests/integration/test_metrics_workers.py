"""``python -m trio_asgi_ws --workers 2 --metrics-port``: the supervisor serves both workers' sum."""

from __future__ import annotations

import os

import trio

from tests.integration.conftest import DEADLINE, open_client
from tests.integration.metrics_scrape import Samples, scrape, value, wait_for
from tests.integration.served import drain_stderr, start_cli, stop_process
from trio_asgi_ws import WebSocket
from trio_asgi_ws.metrics import PREFIX
from trio_asgi_ws.routing import Router

app = Router()


@app.websocket("/pid")
async def pid(ws: WebSocket) -> None:
    """Tells the client which worker process serves it."""
    await ws.accept()
    await ws.send_text(str(os.getpid()))
    await ws.receive_text()


def closes(samples: Samples) -> float:
    """All closes, whichever code and side (the client's "bye" races the handler's own close)."""
    return sum(v for (name, _), v in samples.items() if name == PREFIX + "closes_total")


def metrics_port_from(lines: list[str]) -> int:
    (line,) = [line for line in lines if "Metrics on http://127.0.0.1:" in line]
    return int(line.rsplit(":", 1)[1].split("/")[0])


async def test_two_workers_metrics_count_the_connections_of_both() -> None:
    process, port, lines = await start_cli(
        "tests.integration.test_metrics_workers:app",
        "--workers", "2", "--metrics-port", "0", "--ping-interval", "0", "--no-connection-log",
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            metrics_port = metrics_port_from(lines)
            per_worker: dict[str, int] = {}
            with trio.fail_after(4 * DEADLINE):
                # Until both workers have served at least two (the kernel picks who accepts).
                while len(per_worker) < 2 or min(per_worker.values()) < 2:
                    async with open_client(f"ws://127.0.0.1:{port}/pid") as ws:
                        served_by = await ws.get_message()
                        assert isinstance(served_by, str)
                        per_worker[served_by] = per_worker.get(served_by, 0) + 1
                        await ws.send_message("bye")
            total = sum(per_worker.values())
            samples = await wait_for(metrics_port, lambda s: closes(s) == total)
            assert value(samples, PREFIX + "connections_accepted_total") == total
            assert value(samples, PREFIX + "messages_received_total") == total
            assert value(samples, PREFIX + "connections_open") == 0
            # A connection held open shows in the open gauge, whichever worker has it.
            async with open_client(f"ws://127.0.0.1:{port}/pid") as ws:
                await ws.get_message()
                held = await scrape(metrics_port)
                assert value(held, PREFIX + "connections_open") == 1
                await ws.send_message("bye")
            nursery.cancel_scope.cancel()
    finally:
        await stop_process(process)
