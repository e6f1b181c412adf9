"""The examples, driven in-process with the test client (the real-server runs are in integration/)."""

from __future__ import annotations

from typing import Any

import pytest

from examples import auth, chat, echo, rooms
from trio_asgi_ws import WebSocketDisconnect
from trio_asgi_ws.backends.base import id_order
from trio_asgi_ws.testing import WebSocketDenied, connect, run_lifespan


async def test_echo_example() -> None:
    async with connect(echo.app) as ws:
        await ws.send_text("a")
        assert await ws.receive_text() == "a"
        await ws.send_bytes(b"b")
        assert await ws.receive_bytes() == b"b"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/private?token=s3cret-token-for-ann", {}),
        ("/private", {"authorization": "Bearer s3cret-token-for-ann"}),
    ],
)
async def test_auth_example_accepts_a_good_token_from_query_or_header(
    url: str, headers: dict[str, str]
) -> None:
    async with connect(auth.app, url, headers=headers) as ws:
        assert await ws.receive_text() == "hello ann"
        await ws.send_text("hi")
        assert await ws.receive_text() == "ann: hi"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/private", {}),
        ("/private?token=wrong", {}),
        ("/private", {"authorization": "Bearer wrong"}),
        ("/private", {"authorization": "Basic s3cret-token-for-ann"}),
    ],
)
async def test_auth_example_rejects_a_missing_or_bad_token_with_401(
    url: str, headers: dict[str, str]
) -> None:
    with pytest.raises(WebSocketDenied) as info:
        async with connect(auth.app, url, headers=headers):
            pass
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert info.value.body == b"a valid token is required"


async def test_auth_example_checks_the_origin_before_the_token() -> None:
    with pytest.raises(WebSocketDisconnect):
        async with connect(
            auth.app, "/private?token=s3cret-token-for-ann", headers={"origin": "https://evil.example"}
        ):
            pass


async def test_rooms_example_with_lifespan_state() -> None:
    async with connect(rooms.app, "/rooms/a?name=ann", lifespan=True) as ann:
        assert await ann.receive_text() == "ann joined"
        await ann.send_text("hello")
        assert await ann.receive_text() == "ann: hello"


async def test_chat_example_room_members_see_each_other() -> None:
    async with (
        run_lifespan(chat.app) as state,
        connect(chat.app, "/ws/lobby?name=ann", state=state) as ann,
    ):
        assert await said(ann) == {"system": "ann joined lobby"}
        async with connect(chat.app, "/ws/lobby?name=bob", state=state) as bob:
            assert await said(bob) == {"system": "ann joined lobby"}  # the room's history
            assert await said(bob) == {"system": "bob joined lobby"}
            assert await said(ann) == {"system": "bob joined lobby"}
            await bob.send_text("hi ann")
            assert await said(ann) == {"from": "bob", "text": "hi ann"}
            assert await said(bob) == {"from": "bob", "text": "hi ann"}
        assert await said(ann) == {"system": "bob left"}


async def said(ws: Any) -> dict[str, Any]:
    """The next chat message, without the id every one carries (checked to be an id)."""
    message: dict[str, Any] = await ws.receive_json()
    id_order(message.pop("id"))
    return message


async def test_chat_example_resumes_a_page_from_the_last_id_it_saw() -> None:
    async with run_lifespan(chat.app) as state:
        async with connect(chat.app, "/ws/lobby?name=ann", state=state) as ann:
            joined = await ann.receive_json()
        async with connect(chat.app, "/ws/lobby?name=bob", state=state) as bob:
            await bob.send_text("while ann was away")
        async with connect(chat.app, f"/ws/lobby?name=ann&since={joined['id']}", state=state) as ann:
            assert [await said(ann) for _ in range(5)] == [
                {"system": "ann left"},
                {"system": "bob joined lobby"},
                {"from": "bob", "text": "while ann was away"},
                {"system": "bob left"},
                {"system": "ann is back"},
            ]
        async with connect(chat.app, "/ws/lobby?name=cy&since=1-1", state=state) as cy:
            assert await cy.receive_json() == {
                "reset": True,
                "system": "you missed too much: the latest messages",
            }
        with pytest.raises(WebSocketDisconnect) as refused:  # before accept: HTTP 403 on a server
            async with connect(chat.app, "/ws/lobby?since=yesterday", state=state):
                pass
        assert (refused.value.code, refused.value.reason) == (1008, "since must be a message id")
