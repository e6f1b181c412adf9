"""The FastAPI chat example and the framework test apps, driven in-process by
``trio_asgi_ws.testing`` (which is how docs/frameworks.md says to test such apps); the real-server
runs are in tests/integration/."""

from __future__ import annotations

from typing import Any

import pytest

from examples import fastapi_chat
from tests.integration.framework_apps import fastapi_app, starlette_app
from trio_asgi_ws import WebSocketDisconnect
from trio_asgi_ws.testing import connect, run_lifespan


async def test_fastapi_chat_members_of_a_room_see_each_other() -> None:
    app = fastapi_chat.app
    async with run_lifespan(app) as state, connect(app, "/ws/lobby?name=ann", state=state) as ann:
        assert await ann.receive_json() == {"system": "ann joined lobby"}
        async with connect(app, "/ws/lobby?name=bob", state=state) as bob:
            assert await bob.receive_json() == {"system": "bob joined lobby"}
            assert await ann.receive_json() == {"system": "bob joined lobby"}
            await bob.send_text("hi")
            assert await ann.receive_json() == {"from": "bob", "text": "hi"}
            assert await bob.receive_json() == {"from": "bob", "text": "hi"}
        assert await ann.receive_json() == {"system": "bob left"}


async def test_fastapi_chat_refuses_a_name_too_long_before_accept() -> None:
    with pytest.raises(WebSocketDisconnect) as info:
        async with connect(fastapi_chat.app, "/ws/lobby?name=" + "x" * 41, lifespan=True):
            pass
    assert info.value.code == 1008  # FastAPI's validation error


@pytest.mark.parametrize(
    ("app", "path"),
    [(starlette_app, "/describe/lobby/3"), (fastapi_app, "/included/describe/lobby/3")],
)
async def test_framework_apps_run_in_process_on_the_test_client(app: Any, path: str) -> None:
    async with connect(app, path, lifespan=True) as ws:
        assert (await ws.receive_json())["class"] == "trio_asgi_ws.websockets.WebSocket"
        await ws.send_text("echo me")
        assert await ws.receive_text() == "echo me"
