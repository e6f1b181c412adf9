"""A real Prometheus scrapes a real ``python -m trio_asgi_ws --metrics-port`` and sees a counter move."""

from __future__ import annotations

import trio

from tests.integration.conftest import open_client
from tests.integration.prometheus_server import prometheus_scraping
from tests.integration.served import drain_stderr, start_cli, stop_process
from tests.integration.test_metrics_workers import metrics_port_from

SCRAPE_WAIT = 20.0
"""Bound on waiting for Prometheus to have scraped a moved counter (it scrapes every second)."""


async def test_prometheus_scrapes_the_metrics_port_and_sees_connections_counted() -> None:
    process, port, lines = await start_cli(
        "examples.echo:app", "--metrics-port", "0", "--ping-interval", "0", "--no-connection-log"
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process)
            async with prometheus_scraping(metrics_port_from(lines)) as prometheus:
                query = 'trio_asgi_ws_connections_accepted_total{job="trio_asgi_ws"}'
                with trio.fail_after(SCRAPE_WAIT):  # the first scrape: the series exists at 0
                    while True:
                        if await prometheus.scalar(query) is not None:
                            break
                        await trio.sleep(0.2)
                assert await prometheus.scalar(query) == 0
                for _ in range(3):
                    async with open_client(f"ws://127.0.0.1:{port}/") as ws:
                        await ws.send_message("hello")
                        assert await ws.get_message() == "hello"
                with trio.fail_after(SCRAPE_WAIT):  # a later scrape has all three
                    while True:
                        if await prometheus.scalar(query) == 3:
                            break
                        await trio.sleep(0.2)
                assert await prometheus.scalar('up{job="trio_asgi_ws"}') == 1
                received = await prometheus.scalar("trio_asgi_ws_messages_received_total")
                assert received == 3
            nursery.cancel_scope.cancel()
    finally:
        await stop_process(process)
