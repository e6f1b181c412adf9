"""``examples/fastapi_chat.py`` under a real ``python -m trio_asgi_ws``, with trio-websocket clients."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from tests.integration.conftest import open_client
from tests.integration.framework_server import DEADLINE, CliServer, cli_server

TARGET = "examples.fastapi_chat:app"


def member(server: CliServer, room: str, name: str) -> Any:
    return open_client(server.url(f"/ws/{room}?name={name}"))


async def next_message(ws: Any, expected: dict[str, str]) -> None:
    while json.loads(await ws.get_message()) != expected:
        pass


async def test_fastapi_chat_members_of_a_room_see_each_other_and_who_left() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with member(server, "lobby", "ann") as ann:
                await next_message(ann, {"system": "ann joined lobby"})
                async with member(server, "lobby", "bob") as bob, member(server, "attic", "eve") as eve:
                    await next_message(ann, {"system": "bob joined lobby"})
                    await next_message(bob, {"system": "bob joined lobby"})
                    await bob.send_message("hi ann")
                    await next_message(ann, {"from": "bob", "text": "hi ann"})
                    await ann.send_message("hi bob")
                    await next_message(bob, {"from": "ann", "text": "hi bob"})
                    assert json.loads(await eve.get_message()) == {"system": "eve joined attic"}
                    with trio.move_on_after(0.2):
                        extra = await eve.get_message()
                        pytest.fail(f"eve got a message from another room: {extra!r}")
                await next_message(ann, {"system": "bob left"})  # his handler was cancelled, then said so
        server.assert_no_errors()


async def test_fastapi_chat_refuses_a_name_fastapi_does_not_validate() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRejected) as info:
            async with member(server, "lobby", "x" * 41):
                pass
        assert info.value.status_code == 403  # FastAPI's validation error: 1008 before accept
        server.assert_no_errors()


async def test_fastapi_chat_serves_its_page() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                response = b""
                while b"</html>" not in response:
                    chunk = await stream.receive_some()
                    assert chunk, response
                    response += chunk
        assert response.startswith(b"HTTP/1.1 200")
        assert b"new WebSocket(url)" in response
