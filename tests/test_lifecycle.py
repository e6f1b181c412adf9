"""How a handler's connection ends (``_lifecycle``): the close-code policy, the close, the block.

``close_for`` is pinned directly as a table; the rest runs a handler against the in-process server
(``tests/driver.py``), in structured mode (``async with websocket:``) and in the router's plain
mode (``lifecycle(websocket).plain_block()``), which end through the same ``finish``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import InvalidJSON, WebSocket, WebSocketDisconnect, WebSocketException, WebSocketState
from trio_asgi_ws._lifecycle import GOING_AWAY_KEY, close_for
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws._watcher import _WATCHER
from trio_asgi_ws.exceptions import WebSocketDisconnected
from trio_asgi_ws.websockets import lifecycle

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)

Body = Callable[[WebSocket], Awaitable[None]]
MODES = ["structured", "plain"]


def cancelled() -> trio.Cancelled:
    return trio.Cancelled._create()


# -- the policy: close_for --------------------------------------------------------------------------

NORMAL = (1000, "")
SHUTTING_DOWN = (1001, "server shutting down")
FULL = (1008, "receive buffer full")

# (how the handler ended, overflowed, going_away) -> (code, reason)
POLICY: list[tuple[str, BaseException | None, bool, bool, tuple[int, str]]] = [
    ("returned", None, False, False, NORMAL),
    ("returned while the server stops", None, False, True, NORMAL),
    ("client left", WebSocketDisconnect(4000, "bye"), False, False, NORMAL),
    ("client left while the server stops", WebSocketDisconnect(4000), False, True, NORMAL),
    ("cancelled", cancelled(), False, False, NORMAL),
    ("cancelled by the server stopping", cancelled(), False, True, SHUTTING_DOWN),
    (
        "cancelled through a nursery by the server stopping",
        BaseExceptionGroup("", [cancelled(), cancelled()]),
        False,
        True,
        SHUTTING_DOWN,
    ),
    ("asked for a close", WebSocketException(4003, "forbidden"), False, False, (4003, "forbidden")),
    ("asked for a close as the server stops", WebSocketException(4003), False, True, (4003, "")),
    ("client sent bad JSON", InvalidJSON("Expecting value", "x", 0), False, False, (1007, "invalid JSON")),
    ("failed", KeyError("boom"), False, False, (1011, "")),
    ("failed as the server stops", KeyError("boom"), False, True, (1011, "")),
    (
        "failed in a nursery that was also cancelled",
        BaseExceptionGroup("", [cancelled(), KeyError("boom")]),
        False,
        True,
        (1011, ""),
    ),
    ("returned after an overflow", None, True, False, FULL),
    ("asked for a close after an overflow", WebSocketException(4003, "x"), True, False, FULL),
    ("cancelled by the overflow as the server stops", cancelled(), True, True, FULL),
    ("failed after an overflow", ExceptionGroup("", [KeyError("boom")]), True, False, FULL),
]


@pytest.mark.parametrize(
    ("error", "overflowed", "going_away", "close"),
    [case[1:] for case in POLICY],
    ids=[case[0] for case in POLICY],
)
def test_close_for_is_the_one_close_code_policy(
    error: BaseException | None, overflowed: bool, going_away: bool, close: tuple[int, str]
) -> None:
    assert close_for(error, overflowed=overflowed, going_away=going_away) == close


# -- the running handler ------------------------------------------------------------------------------


@asynccontextmanager
async def ending(mode: str, ws: WebSocket) -> AsyncIterator[None]:
    """The handler's block in ``mode``: ``async with websocket:`` or the router's plain block."""
    if mode == "structured":
        async with ws:
            yield
    else:
        async with lifecycle(ws).plain_block():
            yield


def app_for(mode: str, body: Body, **options: Any) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, **options)
        async with ending(mode, ws):
            await body(ws)

    return app


def going_away_scope(event: str) -> Scope:
    """A scope as ``serve()`` makes it (with the stop event, ``event`` "unset" or "set"), or without."""
    scope = websocket_scope()
    if event != "absent":
        scope[GOING_AWAY_KEY] = trio.Event()
        if event == "set":
            scope[GOING_AWAY_KEY].set()
    return scope


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("event", "end", "close"),
    [
        ("set", "cancelled", SHUTTING_DOWN),
        ("unset", "cancelled", NORMAL),
        ("absent", "cancelled", NORMAL),
        ("set", "returned", NORMAL),
        ("set", "raised", (1011, "")),
    ],
)
async def test_only_a_cancellation_while_the_server_stops_closes_with_1001(
    mode: str, event: str, end: str, close: tuple[int, str]
) -> None:
    async def body(ws: WebSocket) -> None:
        await ws.accept()
        if end == "raised":
            raise KeyError("boom")
        if end == "cancelled":
            await trio.sleep_forever()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with trio.move_on_after(1):  # as the server cancels its handlers when it stops
            await app_for(mode, body)(scope, receive, send)

    async with serve_app(app, going_away_scope(event)) as fake:
        await fake.accepted()
        await fake.expect_close(*close)
        await fake.disconnect(close[0])
    assert type(fake.app_error) is (KeyError if end == "raised" else type(None))


INTERNAL_ERROR_RESPONSE = [
    {
        "type": "websocket.http.response.start",
        "status": 500,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
    },
    {"type": "websocket.http.response.body", "body": b"Internal Server Error"},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("end", "extensions", "sent"),
    [
        ("raised", "denials", INTERNAL_ERROR_RESPONSE),
        ("raised", "none", [{"type": "websocket.close", "code": 1011, "reason": ""}]),
        ("raised", "absent", [{"type": "websocket.close", "code": 1011, "reason": ""}]),
        ("asked", "denials", [{"type": "websocket.close", "code": 4001, "reason": "who are you"}]),
        ("returned", "denials", [{"type": "websocket.close", "code": 1000, "reason": ""}]),
        ("returned", "absent", [{"type": "websocket.close", "code": 1000, "reason": ""}]),
    ],
)
async def test_a_handler_ending_before_accept_answers_the_handshake(
    mode: str, end: str, extensions: str, sent: list[Message]
) -> None:
    """An unexpected error is an HTTP 500 when the server can send one, else a close (HTTP 403)."""

    async def body(ws: WebSocket) -> None:
        assert (await ws.receive())["type"] == "websocket.connect"
        if end == "raised":
            raise RuntimeError("database down")
        if end == "asked":
            raise WebSocketException(4001, "who are you")

    scope = websocket_scope(extensions={"websocket.http.response": {}} if extensions == "denials" else {})
    if extensions == "absent":
        del scope["extensions"]
    async with serve_app(app_for(mode, body), scope) as fake:
        await fake.connect()
    assert fake.sent == sent
    # The structured block swallows a WebSocketException (the close it asked for was sent); the
    # plain block leaves it to the router, which logs it.
    escaped = {"raised": RuntimeError, "asked": WebSocketException if mode == "plain" else None}.get(end)
    assert type(fake.app_error) is (type(None) if escaped is None else escaped)


async def test_finish_does_not_wait_for_a_client_a_failed_send_found_gone() -> None:
    """The plain block after ``WebSocketDisconnect(1006)`` from a send: no close, no read, no wait."""
    reads: list[Message] = []
    sends: list[str] = []

    async def receive() -> Message:
        if reads:
            await trio.sleep_forever()  # a gone client sends nothing more
        reads.append({"type": "websocket.connect"})
        return reads[-1]

    async def send(message: Message) -> None:
        sends.append(message["type"])
        if message["type"] == "websocket.send":
            raise OSError("client disconnected")

    ws = WebSocket(websocket_scope(), receive, send, close_timeout=60)
    start = trio.current_time()
    with pytest.raises(WebSocketDisconnect) as info:
        async with lifecycle(ws).plain_block():
            await ws.accept()
            await ws.send_text("anyone?")
    assert info.value.code == 1006
    assert trio.current_time() == start
    assert (len(reads), sends) == (1, ["websocket.accept", "websocket.send"])
    assert (ws.client_state, ws.application_state) == (WebSocketState.CONNECTED, WebSocketState.DISCONNECTED)
    assert lifecycle(ws).disconnect_code == 1006


# -- the structured block ---------------------------------------------------------------------------------


async def test_the_block_runs_no_task_until_the_pump_reads_and_its_reader_is_named_after_the_path() -> None:
    names: list[list[str]] = []

    def child_names() -> list[str]:
        return [task.name for n in trio.lowlevel.current_task().child_nurseries for task in n.child_tasks]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, takeover_delay=0.05)
        async with ws:
            await ws.accept()
            names.append(child_names())
            await trio.sleep(0.1)  # away from receive() since the accept: the pump reads for it
            names.append(child_names())

    async with serve_app(app, websocket_scope("/rooms/7")) as fake:
        await fake.accepted()
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert names == [[], ["trio_asgi_ws pump /rooms/7"]]


async def test_a_nested_entry_is_refused_and_the_running_block_carries_on() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        async with ws:
            await ws.accept()
            try:
                await ws.__aenter__()
            except RuntimeError as error:
                errors.append(error)
            await ws.send_text(await ws.receive_text())

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.send_data("still here")
        assert (await fake.expect_sent("websocket.send"))["text"] == "still here"
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert fake.app_error is None
    assert [(type(error), str(error)) for error in errors] == [
        (RuntimeError, "this WebSocket is already inside an `async with` block")
    ]


async def test_an_overflow_is_remembered_and_decides_the_close() -> None:
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, max_buffered_messages=1, takeover_delay=0)
        ending = lifecycle(ws)
        seen.append(ending.overflowed)
        async with ws:
            await ws.accept()
            seen.append(ending.overflowed)
            await trio.sleep_forever()  # never reads: the pump's buffer fills up
        seen.append(ending.overflowed)

    async with serve_app(app) as fake:
        await fake.accepted()
        await trio.testing.wait_all_tasks_blocked()
        for text in ("one", "two"):
            await fake.send_data(text)
        await fake.expect_close(*FULL)
        await fake.disconnect(1008)
    assert fake.app_error is None
    assert seen == [False, False, True]


async def test_entering_after_the_client_left_is_refused() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        assert (await ws.receive())["type"] == "websocket.disconnect"
        try:
            await ws.__aenter__()
        except WebSocketDisconnected as error:
            errors.append(error)

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.disconnect(1001)
    assert fake.app_error is None
    assert [str(error) for error in errors] == ["Cannot enter structured mode after a disconnect."]


@pytest.mark.parametrize("ending", ["returns", "raises", "cancelled from outside"])
async def test_the_watcher_lets_go_of_the_connection_however_the_block_ends(ending: str) -> None:
    watched: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, takeover_delay=60)
        with trio.CancelScope() as outer:
            try:
                async with ws:
                    await ws.accept()  # registered: its next look is a minute away
                    watched.append(len(_WATCHER.get()))
                    if ending == "raises":
                        raise KeyError("boom")
                    if ending == "cancelled from outside":
                        outer.cancel()
                        await trio.sleep_forever()
            except KeyError:
                pass
        watched.append(len(_WATCHER.get()))

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.next_sent()  # the close
        await fake.disconnect(1000)
    assert watched == [1, 0]
