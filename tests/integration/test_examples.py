"""The examples, each served for real by ``trio_asgi_ws.server.serve`` (hypercorn's trio worker)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from examples import chat, echo, rooms
from tests.integration import attacks
from tests.integration.conftest import open_client
from tests.integration.served import served

DEADLINE = 5.0


async def test_echo_example_echoes_text_and_bytes() -> None:
    async with served(echo.app) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url()) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                await ws.send_message(b"\x00\xff")
                assert await ws.get_message() == b"\x00\xff"


def member(server: served, room: str, name: str, origin: str | None = None) -> Any:
    headers = [("Origin", origin)] if origin is not None else None
    return open_client(server.url(f"/rooms/{room}?name={name}"), extra_headers=headers)


async def next_message_from(ws: Any, expected: str) -> None:
    while (await ws.get_message()) != expected:
        pass


async def test_rooms_example_members_of_a_room_see_each_other() -> None:
    async with served(rooms.app) as server:
        with trio.fail_after(DEADLINE):
            async with member(
                server, "lobby", "ann", f"http://127.0.0.1:{server.port}"
            ) as ann:  # same origin
                assert await ann.get_message() == "ann joined"
                async with member(server, "lobby", "bob") as bob, member(server, "attic", "eve") as eve:
                    await next_message_from(ann, "bob joined")
                    assert await bob.get_message() == "bob joined"
                    await bob.send_message("hi ann")
                    await next_message_from(ann, "bob: hi ann")
                    await ann.send_message("hi bob")
                    await next_message_from(bob, "ann: hi bob")
                    assert await eve.get_message() == "eve joined"  # another room: nothing else
                    with trio.move_on_after(0.2):
                        extra = await eve.get_message()
                        pytest.fail(f"eve got a message from another room: {extra!r}")
                await next_message_from(ann, "bob left")


async def test_rooms_example_rejects_foreign_origins_with_403() -> None:
    async with served(rooms.app) as server:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRejected) as info:
            async with member(server, "lobby", "mallory", "https://evil.example"):
                pass
    assert info.value.status_code == 403


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example", 403),  # a page on another site: cross-site WebSocket hijacking
        ("http://127.0.0.1:{port}", 101),  # the chat's own page
        ("http://localhost:{port}", 403),  # the same server by another name is another origin
        (None, 101),  # not a browser
    ],
)
async def test_chat_example_accepts_its_own_page_and_refuses_other_sites(
    origin: str | None, status: int
) -> None:
    async with served(chat.app) as server:
        headers = [] if origin is None else [("Origin", origin.format(port=server.port))]
        conn = await attacks.handshake(server.port, "/ws/lobby?name=mallory", headers=headers, check=False)
        async with conn:
            assert conn.status == status


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One plain HTTP/1.1 GET on 127.0.0.1: the status and the body (read to its length: the
    server may keep the connection open after answering, ``Connection: close`` or not)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some()
        head, _, body = response.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some()
    return int(head.split()[1]), body


async def test_chat_example_shows_its_room_as_the_hub_sees_it() -> None:
    async with served(chat.app) as server:
        port = server.port
        with trio.fail_after(DEADLINE):
            assert json.loads((await http_get(port, "/rooms/attic"))[1]) == {
                "subscribers": 0,
                "messages": 0,
                "delivered": 0,
                "dropped": 0,
                "buffered": 0,
                "hub": "connected",
            }
            async with (
                open_client(server.url("/ws/attic?name=ann")) as ann,
                open_client(server.url("/ws/attic?name=bob")) as bob,
            ):
                await bob.send_message("hello")
                while "hello" not in await ann.get_message():
                    pass
                while "hello" not in await bob.get_message():
                    pass
                status, body = await http_get(port, "/rooms/attic")
                figures = json.loads(body)
                assert status == 200
                assert figures["subscribers"] == 2 and figures["dropped"] == 0
                assert figures["messages"] == 3  # two joins and a hello
                assert figures["delivered"] >= 5  # bob's own join may still be on its way to ann
            assert (await http_get(port, "/nothing"))[0] == 404
