"""``python -m trio_asgi_ws tests.integration.framework_apps:...`` for the framework tests.

``cli_server(nursery, target)`` starts the server on a free port and keeps its log (stderr) in
``server.log`` while it runs; ``server.assert_no_errors()`` fails on any ERROR line or traceback.
``observing(server)`` connects to the app's ``/events`` route, through which handlers in the
server process report what happened to them; ``next_event`` reads the next report of a route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio_websocket

from tests.integration.conftest import open_client
from tests.integration.served import start_cli, stop_process

DEADLINE = 5.0
"""Upper bound for any single wait: it stops hangs, it does not measure speed."""


@dataclass
class CliServer:
    port: int
    process: trio.Process = field(repr=False)
    log: list[str] = field(default_factory=list)
    _grew: trio.Event = field(default_factory=trio.Event, repr=False)

    def add(self, lines: list[str]) -> None:
        self.log.extend(lines)
        self._grew.set()
        self._grew = trio.Event()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def errors(self) -> list[str]:
        return [line for line in self.log if " ERROR " in line or "Traceback" in line]

    def assert_no_errors(self) -> None:
        assert not self.errors(), "\n".join(self.log)

    async def wait_for_log(self, text: str) -> list[str]:
        """The log lines containing ``text``, once there is one."""
        with trio.fail_after(DEADLINE):
            while not (found := [line for line in self.log if text in line]):
                await self._grew.wait()
        return found


async def _collect(process: trio.Process, server: CliServer) -> None:
    assert process.stderr is not None
    buffer = b""
    while chunk := await process.stderr.receive_some():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        server.add([line.decode(errors="replace") for line in complete])


@asynccontextmanager
async def cli_server(target: str) -> AsyncIterator[CliServer]:
    """Serve ``target`` with ``python -m trio_asgi_ws`` until the block ends, then kill it.

    Without pings: hypercorn pings at accept, and trio-websocket 0.12 fails (``LocalProtocolError``
    from its reader task) when a ping reaches a client that has begun its close handshake.
    """
    process, port, lines = await start_cli(target, "--ping-interval", "0")
    server = CliServer(port, process, list(lines))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, process, server)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await stop_process(process)


@asynccontextmanager
async def observing(server: CliServer) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client of ``/events``, subscribed to the handlers' reports once this yields."""
    async with open_client(server.url("/events")) as events:
        with trio.fail_after(DEADLINE):
            assert await events.get_message() == "ready"
        yield events


async def next_event(events: trio_websocket.WebSocketConnection, route: str) -> dict[str, Any]:
    """The next report published by ``route`` (others are skipped)."""
    while True:
        event: dict[str, Any] = json.loads(await events.get_message())
        if event.get("route") == route:
            return event


# -- scenarios both framework integrations are tested with --------------------------------------


async def measure_send_only_handler(server: CliServer, path: str) -> tuple[dict[str, object], float]:
    """Connect to a send-only handler, leave, and return its report and how long it took."""
    async with observing(server) as events:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url(path)) as ws:
                for _ in range(3):
                    assert await ws.get_message() == "tick"
            left = trio.current_time()  # the client's close handshake is done
            event = await next_event(events, "ticker")
        return event, trio.current_time() - left


async def assert_plain_ticker_outlives_its_client(server: CliServer) -> None:
    """The framework's own WebSocket at ``/plain-ticker``: its send-only handler goes on after
    the client left (no report within a second)."""
    async with observing(server) as events:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/plain-ticker")) as ws:
                for _ in range(3):
                    assert await ws.get_message() == "tick"
        with trio.move_on_after(1.0) as waited:
            event = await next_event(events, "plain-ticker")
            pytest.fail(f"the plain handler ended: {event}")
        assert waited.cancelled_caught


async def catches_reports(server: CliServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Talk to ``/catches`` (a handler catching the framework's ``WebSocketDisconnect``), leave,
    and return the handler's two reports (the clause the disconnect went through, then its end)."""
    async with observing(server) as events:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/catches")) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
            return await next_event(events, "catches"), await next_event(events, "catches")
