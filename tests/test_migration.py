"""Every difference in behaviour between Starlette's (and FastAPI's) WebSocket and ours.

Each test is one row of the table in docs/migration.md and shows the difference, with the
Starlette behaviour side by side where Starlette can be run.  Plain-mode tests drive both classes
through the same in-process server side (``AppConnection``), with hypercorn's message shapes.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pytest
import trio
import trio.testing
from fastapi import Depends, FastAPI
from starlette import routing as starlette_routing
from starlette import websockets as starlette_websockets
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint as StarletteWebSocketEndpoint

from trio_asgi_ws import URL, FrameTypeError, InvalidJSON, WebSocket, WebSocketDisconnect
from trio_asgi_ws.integrations.fastapi import structured
from trio_asgi_ws.integrations.starlette import WebSocketRoute as StructuredRoute
from trio_asgi_ws.routing import NoMatchFound, Router, WebSocketRoute
from trio_asgi_ws.testing import AppConnection, connect

StarletteWS = starlette_websockets.WebSocket
AnyWS = Any  # either class: the same handler runs on both
Handler = Callable[[AnyWS], Awaitable[Any]]

CONNECT = {"type": "websocket.connect"}
ACCEPT_AND_TEXT = [CONNECT, {"type": "websocket.receive", "text": "hi", "bytes": None}]


def scope(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.org")],
        "client": ("127.0.0.1", 5000),
        "server": ("example.org", 80),
        "subprotocols": [],
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }
    return {**base, **extra}


async def run(
    cls: type[Any], handler: Handler, messages: list[dict[str, Any]], **conn_options: Any
) -> tuple[list[dict[str, Any]], BaseException | None, Any]:
    """Run ``handler(cls(...))`` against a server side holding ``messages``; return what the app
    sent, the error it raised (or None), and what the handler returned."""
    result: list[Any] = [None]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        result[0] = await handler(cls(scope, receive, send))

    conn = AppConnection(app, scope(), **conn_options)
    for message in messages:
        conn.to_app.send_nowait(message)
    with trio.fail_after(5):
        await conn.run()
    return conn.sent, conn.error, result[0]


# -- the exception class ---------------------------------------------------------------------------


async def test_disconnect_exception_is_not_starlettes() -> None:
    assert not issubclass(WebSocketDisconnect, starlette_websockets.WebSocketDisconnect)

    async def handler(ws: AnyWS) -> str:
        await ws.accept()
        try:
            await ws.receive_text()
        except starlette_websockets.WebSocketDisconnect:
            return "caught"
        return "not reached"

    gone = [CONNECT, {"type": "websocket.disconnect", "code": 1001}]
    _, theirs_error, theirs = await run(StarletteWS, handler, gone)
    assert theirs == "caught" and theirs_error is None
    _, ours_error, ours = await run(WebSocket, handler, gone)
    assert ours is None and isinstance(ours_error, WebSocketDisconnect) and ours_error.code == 1001


# -- plain mode: errors where Starlette is silent or crashes the server ----------------------------


async def test_accept_refuses_a_subprotocol_the_client_did_not_offer() -> None:
    async def handler(ws: AnyWS) -> None:
        await ws.accept(subprotocol="chat")  # the client offered none

    theirs_sent, theirs_error, _ = await run(StarletteWS, handler, [CONNECT])
    assert theirs_error is None and theirs_sent[0]["subprotocol"] == "chat"  # crashes hypercorn 0.18
    ours_sent, ours_error, _ = await run(WebSocket, handler, [CONNECT])
    assert isinstance(ours_error, ValueError) and ours_sent == []


async def test_accept_refuses_headers_that_are_not_byte_pairs() -> None:
    async def handler(ws: AnyWS) -> None:
        await ws.accept(headers=[("x-token", "abc")])

    theirs_sent, theirs_error, _ = await run(StarletteWS, handler, [CONNECT])
    assert theirs_error is None and theirs_sent[0]["headers"] == [("x-token", "abc")]
    ours_sent, ours_error, _ = await run(WebSocket, handler, [CONNECT])
    assert isinstance(ours_error, TypeError) and ours_sent == []


@pytest.mark.parametrize(
    "frame",
    [{"text": None, "bytes": b"\x00"}, {"bytes": b"\x00"}],
    ids=["hypercorn-shape", "bytes-only"],
)
async def test_receive_text_on_a_binary_frame_raises_frame_type_error(frame: dict[str, Any]) -> None:
    async def handler(ws: AnyWS) -> Any:
        await ws.accept()
        return await ws.receive_text()

    messages = [CONNECT, {"type": "websocket.receive", **frame}]
    _, theirs_error, theirs = await run(StarletteWS, handler, messages)
    if "text" in frame:
        assert theirs is None and theirs_error is None  # Starlette returns None
    else:
        assert isinstance(theirs_error, KeyError)
    _, ours_error, _ = await run(WebSocket, handler, messages)
    assert isinstance(ours_error, FrameTypeError)


async def test_send_text_and_send_bytes_check_their_argument() -> None:
    async def handler(ws: AnyWS) -> None:
        await ws.accept()
        await ws.send_text(b"not text")

    theirs_sent, theirs_error, _ = await run(StarletteWS, handler, [CONNECT])
    assert theirs_error is None and theirs_sent[-1] == {"type": "websocket.send", "text": b"not text"}
    ours_sent, ours_error, _ = await run(WebSocket, handler, [CONNECT])
    assert isinstance(ours_error, TypeError) and len(ours_sent) == 1  # the accept only


GONE_AFTER_ACCEPT = [CONNECT, {"type": "websocket.disconnect", "code": 1001}]


async def _receive_then(ws: AnyWS, action: str) -> Any:
    await ws.accept()
    message = await ws.receive()  # the disconnect
    assert message["type"] == "websocket.disconnect"
    if action == "send":
        await ws.send_text("into the void")
    elif action == "close":
        await ws.close()
    else:
        await ws.receive_text()


async def test_send_after_the_client_left_raises_the_disconnect() -> None:
    theirs_sent, theirs_error, _ = await run(
        StarletteWS, lambda ws: _receive_then(ws, "send"), GONE_AFTER_ACCEPT
    )
    assert theirs_error is None and theirs_sent[-1]["type"] == "websocket.send"  # hypercorn drops it
    ours_sent, ours_error, _ = await run(WebSocket, lambda ws: _receive_then(ws, "send"), GONE_AFTER_ACCEPT)
    assert isinstance(ours_error, WebSocketDisconnect) and ours_error.code == 1001
    assert [m["type"] for m in ours_sent] == ["websocket.accept"]


async def test_close_after_the_client_left_sends_nothing() -> None:
    theirs_sent, theirs_error, _ = await run(
        StarletteWS, lambda ws: _receive_then(ws, "close"), GONE_AFTER_ACCEPT
    )
    assert theirs_error is None and theirs_sent[-1]["type"] == "websocket.close"
    ours_sent, ours_error, _ = await run(WebSocket, lambda ws: _receive_then(ws, "close"), GONE_AFTER_ACCEPT)
    assert ours_error is None and [m["type"] for m in ours_sent] == ["websocket.accept"]


async def test_receive_after_the_disconnect_raises_the_disconnect_again() -> None:
    _, theirs_error, _ = await run(StarletteWS, lambda ws: _receive_then(ws, "receive"), GONE_AFTER_ACCEPT)
    assert isinstance(theirs_error, starlette_websockets.WebSocketDisconnected)
    _, ours_error, _ = await run(WebSocket, lambda ws: _receive_then(ws, "receive"), GONE_AFTER_ACCEPT)
    assert isinstance(ours_error, WebSocketDisconnect) and ours_error.code == 1001


async def test_trio_send_errors_from_the_server_become_a_disconnect() -> None:
    def failing(cls: type[Any]) -> Any:
        class Failing(cls):  # type: ignore[valid-type, misc]
            def __init__(self, scope: Any, receive: Any, send: Any) -> None:
                async def broken_send(message: Any) -> None:
                    if message["type"] == "websocket.send":
                        raise trio.BrokenResourceError  # hypercorn's close path racing the send
                    await send(message)

                super().__init__(scope, receive, broken_send)

        return Failing

    async def handler(ws: AnyWS) -> None:
        await ws.accept()
        await ws.send_text("x")

    _, theirs_error, _ = await run(failing(StarletteWS), handler, [CONNECT])
    assert isinstance(theirs_error, trio.BrokenResourceError)
    _, ours_error, _ = await run(failing(WebSocket), handler, [CONNECT])
    assert isinstance(ours_error, WebSocketDisconnect) and ours_error.code == 1006


@pytest.mark.parametrize(
    ("frame", "mode", "starlette_error"),
    [
        ({"text": "[" * 100_000, "bytes": None}, "text", RecursionError),
        ({"text": None, "bytes": b"\xff"}, "binary", UnicodeDecodeError),
        ({"text": "{oops", "bytes": None}, "text", json.JSONDecodeError),
    ],
    ids=["too-deep", "bad-utf8", "bad-syntax"],
)
async def test_receive_json_raises_invalid_json_for_any_bad_document(
    frame: dict[str, Any], mode: str, starlette_error: type[Exception]
) -> None:
    async def handler(ws: AnyWS) -> None:
        await ws.accept()
        await ws.receive_json(mode=mode)

    messages = [CONNECT, {"type": "websocket.receive", **frame}]
    _, theirs_error, _ = await run(StarletteWS, handler, messages)
    assert isinstance(theirs_error, starlette_error) and not isinstance(theirs_error, InvalidJSON)
    _, ours_error, _ = await run(WebSocket, handler, messages)
    assert isinstance(ours_error, InvalidJSON) and isinstance(ours_error, json.JSONDecodeError)


async def test_a_second_concurrent_receive_raises_busy_resource_error() -> None:
    both_started = trio.Event()

    async def handler(ws: AnyWS) -> list[str]:
        await ws.accept()
        got: list[str] = []

        async def one() -> None:
            try:
                got.append(await ws.receive_text())
            except trio.BusyResourceError:
                got.append("busy")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()  # the first is waiting in receive()
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()  # so is the second (Starlette), or it failed
            both_started.set()
        return got

    messages = [*ACCEPT_AND_TEXT, {"type": "websocket.receive", "text": "ho", "bytes": None}]

    async def later(cls: type[Any]) -> Any:
        nonlocal both_started
        both_started = trio.Event()
        conn_result: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            conn_result.append(await handler(cls(scope, receive, send)))

        conn = AppConnection(app, scope())
        conn.to_app.send_nowait(CONNECT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await both_started.wait()
            for message in messages[1:]:
                await conn.to_app.send(message)
        conn.raise_error()
        return conn_result[0]

    with trio.fail_after(5):
        assert sorted(await later(StarletteWS)) == ["hi", "ho"]  # both wait on the server
        assert sorted(await later(WebSocket)) == ["busy", "hi"]


def test_iter_methods_are_iterator_objects_not_async_generators() -> None:
    for cls in (StarletteWS, WebSocket):
        ws = cls(scope(), AppConnection(None, scope()).receive, AppConnection(None, scope()).send)  # type: ignore[arg-type]
        iterators = [ws.iter_text(), ws.iter_bytes(), ws.iter_json()]
        assert all(inspect.isasyncgen(it) for it in iterators) is (cls is StarletteWS)
        assert all(hasattr(it, "__anext__") and hasattr(it, "aclose") for it in iterators)
        for it in iterators:
            if inspect.isasyncgen(it):
                trio.run(it.aclose)  # never started: closes at once


def test_url_is_a_str_and_includes_root_path() -> None:
    mounted = scope(root_path="/api", path="/ws")  # a server whose path leaves out root_path
    theirs, ours = StarletteWS(mounted, None, None), WebSocket(mounted)  # type: ignore[arg-type]
    assert not isinstance(theirs.url, str) and str(theirs.url) == "ws://example.org/ws"
    assert isinstance(ours.url, URL) and isinstance(ours.url, str)
    assert ours.url == "ws://example.org/api/ws"


async def test_denial_response_accepts_any_asgi_http_app() -> None:
    async def forbidden(scope: Any, receive: Any, send: Any) -> None:  # a plain ASGI HTTP app
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async def handler(ws: AnyWS) -> None:
        await ws.send_denial_response(forbidden)

    _, theirs_error, _ = await run(StarletteWS, handler, [CONNECT])
    assert isinstance(theirs_error, RuntimeError)  # Starlette takes only its Response
    ours_sent, ours_error, _ = await run(WebSocket, handler, [CONNECT])
    assert ours_error is None
    assert [m["type"] for m in ours_sent] == ["websocket.http.response.start", "websocket.http.response.body"]


def test_a_scope_that_is_not_a_websocket_raises_value_error() -> None:
    http = scope(type="http")
    with pytest.raises(AssertionError):
        StarletteWS(http, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="websocket"):
        WebSocket(http)


# -- structured mode and the router -----------------------------------------------------------------


async def test_a_send_only_handler_is_cancelled_when_the_client_leaves() -> None:
    async def ticker(ws: AnyWS) -> None:
        await ws.accept()
        while True:
            await ws.send_text("tick")
            await trio.sleep(0.01)

    async def sends_after_leaving(cls: type[Any], structured: bool) -> tuple[int, bool]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            ws = cls(scope, receive, send)
            if structured:
                async with ws:
                    await ticker(ws)
            else:
                await ticker(ws)

        conn = AppConnection(app, scope())
        conn.to_app.send_nowait(CONNECT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await trio.sleep(0.1)
            conn.to_app.send_nowait({"type": "websocket.disconnect", "code": 1001})
            before = len(conn.sent)
            with trio.move_on_after(0.5):
                await conn.finished.wait()
            ended = conn.finished.is_set()
            nursery.cancel_scope.cancel()
        return len(conn.sent) - before, ended

    theirs_after, theirs_ended = await sends_after_leaving(StarletteWS, structured=False)
    assert not theirs_ended and theirs_after > 10  # still sending into the void
    ours_after, ours_ended = await sends_after_leaving(WebSocket, structured=True)
    assert ours_ended and ours_after <= 10  # cancelled within takeover_delay + 2 sends


async def returns_after_accept(ws: AnyWS) -> None:
    await ws.accept()


async def test_leaving_the_handler_closes_the_socket_with_1000() -> None:
    theirs = starlette_routing.Router([starlette_routing.WebSocketRoute("/ws", returns_after_accept)])
    async with connect(theirs, "/ws") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text()
    assert closed.value.code == 1011  # no close from the app: hypercorn (and the test client) send 1011
    ours = Router([WebSocketRoute("/ws", returns_after_accept)])
    async with connect(ours, "/ws") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text()
    assert closed.value.code == 1000


async def raises_after_accept(ws: AnyWS) -> None:
    await ws.accept()
    raise ValueError("bug")


async def test_handler_errors_close_1011_and_skip_the_frameworks_exception_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []

    async def on_value_error(websocket: Any, error: Exception) -> None:
        handled.append(str(error))
        await websocket.close(4000)

    theirs = Starlette(
        routes=[starlette_routing.WebSocketRoute("/ws", raises_after_accept)],
        exception_handlers={ValueError: on_value_error},
    )
    async with connect(theirs, "/ws") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text()
    assert closed.value.code == 4000 and handled == ["bug"]

    handled.clear()
    ours = Starlette(
        routes=[StructuredRoute("/ws", raises_after_accept)], exception_handlers={ValueError: on_value_error}
    )
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        async with connect(ours, "/ws") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive_text()
    assert closed.value.code == 1011 and handled == []
    assert any("ValueError: bug" in record.getMessage() for record in caplog.records)


async def echo_json(ws: AnyWS) -> None:
    await ws.accept()
    await ws.send_json(await ws.receive_json())


async def test_invalid_json_left_uncaught_closes_1007() -> None:
    theirs = starlette_routing.Router([starlette_routing.WebSocketRoute("/ws", echo_json)])
    with pytest.raises(json.JSONDecodeError):  # re-raised to the server, which answers 1011
        async with connect(theirs, "/ws") as ws:
            await ws.send_text("{oops")
            await ws.receive_text()
    ours = Router([WebSocketRoute("/ws", echo_json)])
    async with connect(ours, "/ws") as ws:
        await ws.send_text("{oops")
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text()
    assert closed.value.code == 1007 and closed.value.reason == "invalid JSON"


async def accept_and_greet(ws: AnyWS) -> None:
    await ws.accept()
    await ws.send_text("hello")


async def test_cross_site_handshakes_are_refused() -> None:
    evil = {"origin": "https://evil.example"}
    theirs = starlette_routing.Router([starlette_routing.WebSocketRoute("/ws", accept_and_greet)])
    async with connect(theirs, "ws://chat.example/ws", headers=evil) as ws:
        assert await ws.receive_text() == "hello"
    ours = Router([WebSocketRoute("/ws", accept_and_greet)])
    with pytest.raises(WebSocketDisconnect):  # closed before accept: HTTP 403 under hypercorn
        async with connect(ours, "ws://chat.example/ws", headers=evil):
            pass
    async with connect(ours, "ws://chat.example/ws", headers={"origin": "http://chat.example"}) as ws:
        assert await ws.receive_text() == "hello"  # same-origin pages are admitted


async def test_a_client_flooding_a_handler_that_is_not_reading_is_closed_1008() -> None:
    async def sleeper(ws: AnyWS) -> None:
        await ws.accept()
        await trio.sleep(10)

    theirs = AppConnection(lambda s, r, sd: sleeper(StarletteWS(s, r, sd)), scope())
    theirs.to_app.send_nowait(CONNECT)
    for _ in range(9):
        theirs.to_app.send_nowait({"type": "websocket.receive", "text": "x", "bytes": None})
    with pytest.raises(trio.WouldBlock):  # Starlette: the server's queue (10) is the only bound
        theirs.to_app.send_nowait({"type": "websocket.receive", "text": "x", "bytes": None})

    ours = Router([WebSocketRoute("/ws", sleeper, websocket_options={"max_buffered_messages": 8})])
    async with connect(ours, "/ws") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            for _ in range(40):
                await ws.send_text("x")
            await ws.receive_text()
    assert closed.value.code == 1008 and closed.value.reason == "receive buffer full"


# -- the integrations -------------------------------------------------------------------------------


def test_starlettes_websocket_endpoint_class_is_refused_by_the_route() -> None:
    class Echo(StarletteWebSocketEndpoint):
        encoding = "text"

    starlette_routing.WebSocketRoute("/ws", Echo)  # Starlette's own route takes it
    with pytest.raises(TypeError):
        StructuredRoute("/ws", Echo)


SEEN: dict[str, Any] = {}


def look(websocket: starlette_websockets.WebSocket) -> None:
    """A FastAPI dependency (module level: the annotations are strings FastAPI resolves here)."""
    SEEN["dependency"] = type(websocket)


async def accepts(websocket: starlette_websockets.WebSocket) -> None:
    await websocket.accept()


async def test_fastapi_dependencies_get_fastapis_websocket_and_must_not_accept_it() -> None:
    seen = SEEN
    seen.clear()
    app = FastAPI()

    @app.websocket("/ws")
    @structured
    async def endpoint(websocket: WebSocket, _: Annotated[None, Depends(look)]) -> None:
        seen["endpoint"] = type(websocket)
        await websocket.accept()
        await websocket.send_text("hello")

    async with connect(app, "/ws") as ws:
        assert await ws.receive_text() == "hello"
    assert seen == {"dependency": starlette_websockets.WebSocket, "endpoint": WebSocket}

    @app.websocket("/greedy")
    @structured
    async def greedy(websocket: WebSocket, _: Annotated[None, Depends(accepts)]) -> None:
        seen["greedy"] = True

    with pytest.raises(RuntimeError):
        async with connect(app, "/greedy") as ws:
            await ws.receive_text()
    assert "greedy" not in seen


def test_a_structured_handler_runs_on_trio_not_asyncio(caplog: pytest.LogCaptureFixture) -> None:
    """Starlette's TestClient runs the app on asyncio by default (it also needs httpx2, which the
    test extra does not install): here the same ASGI call on asyncio, then on trio with ours."""
    import asyncio

    app = Starlette(routes=[StructuredRoute("/ws", accept_and_greet)])

    async def on_asyncio() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait(CONNECT)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await app(scope(), inbox.get, send)

    sent: list[str] = []
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        asyncio.run(on_asyncio())
    assert "websocket.accept" not in sent  # the structured block could not even start
    assert any("trio" in str(record.exc_text or record.getMessage()) for record in caplog.records)

    async def on_trio() -> None:
        async with connect(app, "/ws") as ws:
            assert await ws.receive_text() == "hello"

    trio.run(on_trio)


def test_url_for_through_a_starlette_mount_finds_only_the_first_route() -> None:
    async def nothing(ws: AnyWS) -> None:
        pass

    def routes(route: Any) -> list[Any]:
        return [route("/chat/{room}", nothing, name="chat"), route("/item/{id:int}", nothing, name="item")]

    theirs = starlette_routing.Router(
        [
            starlette_routing.Mount(
                "/ws", app=starlette_routing.Router(routes(starlette_routing.WebSocketRoute)), name="ws"
            )
        ]
    )
    assert theirs.url_path_for("ws:item", id=7) == "/ws/item/7"
    ours = starlette_routing.Router(
        [starlette_routing.Mount("/ws", app=Router(routes(WebSocketRoute)), name="ws")]
    )
    assert ours.url_path_for("ws:chat", room="a") == "/ws/chat/a"  # the first route is found
    with pytest.raises(NoMatchFound):  # ours, which Starlette's Mount does not catch
        ours.url_path_for("ws:item", id=7)
