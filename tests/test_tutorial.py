"""The tutorial's apps (examples/tutorial_*.py), driven in-process with the test client.

docs/tutorial.md includes this file as its testing step, so it stays short and self-contained.
"""

from __future__ import annotations

from examples import tutorial_echo, tutorial_rooms
from trio_asgi_ws.testing import connect, run_lifespan


async def test_echo_answers_each_message() -> None:
    async with connect(tutorial_echo.app, "/echo") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "echo: hello"


async def test_room_members_see_each_other() -> None:
    app = tutorial_rooms.app
    async with (
        run_lifespan(app) as state,  # one hub for both clients
        connect(app, "/rooms/garden?name=ann", state=state) as ann,
    ):
        assert await ann.receive_text() == "ann joined"
        async with connect(app, "/rooms/garden?name=bob", state=state) as bob:
            assert await ann.receive_text() == "bob joined"
            assert await bob.receive_text() == "bob joined"
            await bob.send_text("hi")
            assert await ann.receive_text() == "bob: hi"
            assert await bob.receive_text() == "bob: hi"
        assert await ann.receive_text() == "bob left"  # bob's handler ended when he left


async def test_rooms_are_separate() -> None:
    app = tutorial_rooms.app
    async with run_lifespan(app) as state, connect(app, "/rooms/a?name=ann", state=state) as ann:
        assert await ann.receive_text() == "ann joined"
        async with connect(app, "/rooms/b?name=bob", state=state) as bob:
            assert await bob.receive_text() == "bob joined"
            await bob.send_text("only room b")
            assert await bob.receive_text() == "bob: only room b"
        await ann.send_text("still here")
        assert await ann.receive_text() == "ann: still here"  # nothing from room b came first
