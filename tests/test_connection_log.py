"""The connection log: one INFO line per WebSocket at its end, on ``trio_asgi_ws.connections``.

Against a real server (``serve()`` in-process, real clients); the CLI tests run
``python -m trio_asgi_ws`` and read its stderr.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.integration import attacks
from tests.integration.conftest import DEADLINE, open_client
from tests.integration.served import served, start_cli, stop_process
from trio_asgi_ws import WebSocket
from trio_asgi_ws.routing import Router

LOGGER = "trio_asgi_ws.connections"


def app() -> Router:
    router = Router()

    @router.websocket("/echo/{room}")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            if text == "bye":
                await ws.close(4002)
                return
            await ws.send_text(text)

    return router


async def one_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """Wait for the connection log's line (it is written when the socket closes)."""
    with trio.fail_after(DEADLINE):
        while True:
            if [r for r in caplog.records if r.name == LOGGER]:
                break
            await trio.sleep(0.01)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    return record


async def test_a_client_close_is_logged_with_path_client_code_side_and_traffic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with served(app()) as server:
        async with open_client(server.url("/echo/lobby")) as ws:
            client_port = ws.local.port  # type: ignore[union-attr]
            for text in ("hi", "naïve"):
                await ws.send_message(text)
                await ws.get_message()
        record = await one_line(caplog)
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert re.fullmatch(
        r"127\.0\.0\.1:\d+ /echo/lobby closed by client 1000 after \d+\.\d{3} s; "
        r"received 2 msgs 8 B, sent 2 msgs 8 B",
        line,
    ), line
    fields: dict[str, Any] = record.websocket  # type: ignore[attr-defined]
    assert fields["close_code"] == 1000
    assert fields["closed_by"] == "client"
    assert fields["path"] == "/echo/lobby"
    assert fields["received_messages"] == fields["sent_messages"] == 2
    assert fields["duration"] >= 0
    assert fields["client"] == f"127.0.0.1:{client_port}"


async def test_a_server_close_is_logged_with_the_servers_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with served(app()) as server:
        async with open_client(server.url("/echo/a")) as ws:
            await ws.send_message("bye")
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        record = await one_line(caplog)
    assert " /echo/a closed by server 4002 after " in record.getMessage()
    assert record.getMessage().endswith("received 1 msgs 3 B, sent 0 msgs 0 B")


async def test_an_abrupt_reset_is_logged_as_1006_from_the_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with served(app()) as server:
        async with await attacks.handshake(server.port, "/echo/b") as conn:
            await conn.send(attacks.frame(attacks.OP_TEXT, b"x"))
            frame = await conn.receive_frame()
            assert frame is not None
            await conn.abort()
        record = await one_line(caplog)
    assert " /echo/b closed by client 1006 after " in record.getMessage()
    assert record.getMessage().endswith("received 1 msgs 1 B, sent 1 msgs 1 B")


async def test_the_log_is_off_when_its_logger_is_not_enabled_for_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with served(app()) as server:
        async with open_client(server.url("/echo/c")) as ws:
            await ws.send_message("hi")
            await ws.get_message()
        await trio.sleep(0.1)  # time for a line that must not come
    assert not [r for r in caplog.records if r.name == LOGGER]


async def cli_lines_for_one_connection(*args: str) -> list[str]:
    # No pings: trio-websocket 0.12 fails answering one that arrives while it is closing.
    process, port, lines = await start_cli("tests.test_connection_log:cli_app", "--ping-interval", "0", *args)
    try:
        async with open_client(f"ws://127.0.0.1:{port}/echo/cli") as ws:
            await ws.send_message("hello")
            await ws.get_message()
        process.terminate()
        with trio.fail_after(DEADLINE):
            assert process.stderr is not None
            while chunk := await process.stderr.receive_some():
                lines += chunk.decode().splitlines()
            await process.wait()
    finally:
        await stop_process(process)
    return [line for line in lines if f" {LOGGER} " in line]


cli_app = app()


async def test_the_cli_shows_the_connection_log_by_default() -> None:
    (line,) = await cli_lines_for_one_connection()
    assert " INFO 127.0.0.1:" in line
    assert "/echo/cli closed by client 1000 after " in line
    assert line.endswith("received 1 msgs 5 B, sent 1 msgs 5 B")


async def test_no_connection_log_turns_it_off_in_the_cli() -> None:
    assert await cli_lines_for_one_connection("--no-connection-log") == []

