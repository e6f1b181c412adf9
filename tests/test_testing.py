"""The in-process test client: handshake outcomes, deadlines, errors, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import starlette.responses
import starlette.routing
import trio

from trio_asgi_ws import WebSocket, WebSocketDisconnect
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.routing import Router
from trio_asgi_ws.testing import LifespanFailed, WebSocketDenied, connect, run_lifespan

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    ws = WebSocket(scope, receive, send)
    async with ws:
        await ws.accept(
            subprotocol="chat" if "chat" in scope["subprotocols"] else None, headers=[(b"x-hi", b"1")]
        )
        while True:
            message = await ws.receive()
            if message["type"] != "websocket.receive":
                return
            if message["text"] is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])


async def test_text_bytes_and_json_round_trip() -> None:
    async with connect(echo) as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"
        await ws.send_bytes(b"\x00")
        assert await ws.receive_bytes() == b"\x00"
        await ws.send_json({"a": "ü"})
        assert await ws.receive_json() == {"a": "ü"}
        await ws.send_json([1], mode="binary")
        assert await ws.receive_json(mode="binary") == [1]


async def test_the_scope_carries_path_query_headers_and_subprotocols() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        seen.update(path=ws.url.path, query=dict(ws.query_params), token=ws.headers.get("x-token"))
        seen["subprotocols"] = scope["subprotocols"]
        await ws.accept(subprotocol="chat", headers=[(b"X-Server", b"yes")])
        await ws.close()

    async with connect(app, "/chat/1?x=y", subprotocols=["chat", "v2"], headers={"X-Token": "t"}) as ws:
        assert ws.accepted_subprotocol == "chat"
        assert ws.extra_headers == [(b"x-server", b"yes")]  # names lowercased by accept()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert info.value.code == 1000
    assert seen == {"path": "/chat/1", "query": {"x": "y"}, "token": "t", "subprotocols": ["chat", "v2"]}


async def test_close_before_accept_raises_websocket_disconnect_with_the_code() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await WebSocket(scope, receive, send).close(4403, "no")

    with pytest.raises(WebSocketDisconnect) as info:
        async with connect(app):
            pass
    assert (info.value.code, info.value.reason) == (4403, "no")


async def test_a_denial_response_raises_websocket_denied_with_status_headers_and_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = starlette.responses.PlainTextResponse("token required", status_code=401)
        await WebSocket(scope, receive, send).send_denial_response(response)

    with pytest.raises(WebSocketDenied) as info:
        async with connect(app):
            pass
    assert info.value.status_code == 401
    assert info.value.headers["content-type"].startswith("text/plain")
    assert info.value.body == b"token required"


async def test_an_app_error_is_reraised_as_itself() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await ws.receive_text()
        raise ZeroDivisionError("app bug")

    with pytest.raises(ZeroDivisionError, match="app bug"):
        async with connect(app) as ws:
            await ws.send_text("trigger")
            await ws.receive_text()


async def test_an_app_error_surfaces_when_the_block_ends_even_without_a_receive() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await ws.receive()
        raise LookupError("late bug")

    with pytest.raises(LookupError, match="late bug"):
        async with connect(app) as ws:
            await ws.send_text("x")


async def test_an_error_in_the_test_body_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with connect(echo):
            raise KeyError("test bug")


async def test_every_receive_has_a_deadline() -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await trio.sleep_forever()

    with pytest.raises(trio.TooSlowError, match=r"no message from the app within 0\.05 s"):
        async with connect(silent, timeout=0.05) as ws:
            await ws.receive_text()


async def test_an_app_that_never_finishes_fails_the_test_instead_of_hanging() -> None:
    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.2)

    with pytest.raises(trio.TooSlowError, match="did not finish"):
        async with connect(stubborn, timeout=0.05):
            pass


async def test_an_app_returning_without_closing_looks_like_hypercorns_1011() -> None:
    async def rude(scope: Scope, receive: Receive, send: Send) -> None:
        await WebSocket(scope, receive, send).accept()

    async with connect(rude) as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1011


async def test_an_app_returning_before_accept_is_a_500_denial() -> None:
    async def lazy(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    with pytest.raises(WebSocketDenied) as info:
        async with connect(lazy):
            pass
    assert info.value.status_code == 500


async def test_the_client_close_reaches_the_app_with_its_code() -> None:
    codes: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as error:
            codes.append(error.code)

    async with connect(app) as ws:
        await ws.close(4321)
    assert codes == [4321]


@asynccontextmanager
async def hub_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan"}


async def test_lifespan_state_reaches_websocket_state() -> None:
    router = Router(lifespan=hub_lifespan)

    @router.websocket("/")
    async def greet(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(ws.state.greeting)

    async with connect(router, lifespan=True) as ws:
        assert await ws.receive_text() == "hello from lifespan"

    async with run_lifespan(router) as state:
        for _ in range(2):
            async with connect(router, state=state) as ws:
                assert await ws.receive_text() == "hello from lifespan"


async def test_a_failing_lifespan_startup_raises_lifespan_failed() -> None:
    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise OSError("no database")
        yield

    with pytest.raises(LifespanFailed, match=r"(?s)lifespan\.startup\.failed.*no database"):
        async with run_lifespan(Router(lifespan=broken)):
            pass


def failing_in(phase: str) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if phase == "startup":
            raise OSError("no database")
        yield
        raise OSError("no database")

    return lifespan


@pytest.mark.parametrize("phase", ["startup", "shutdown"])
@pytest.mark.parametrize("framework", ["ours", "starlette"])
async def test_a_failing_lifespan_raises_lifespan_failed_from_the_app_s_error(
    phase: str, framework: str
) -> None:
    router_class = Router if framework == "ours" else starlette.routing.Router
    app = router_class(lifespan=failing_in(phase))
    ran: list[str] = []
    with pytest.raises(LifespanFailed, match=rf"^lifespan\.{phase}\.failed: Traceback") as info:
        async with run_lifespan(app):
            ran.append("block")
    assert ran == ([] if phase == "startup" else ["block"])
    assert repr(info.value.__cause__) == "OSError('no database')"


async def test_connect_with_lifespan_raises_when_startup_fails_and_never_connects() -> None:
    connected: list[bool] = []

    async def greet(ws: WebSocket) -> None:
        connected.append(True)
        await ws.accept()

    app = Router(lifespan=failing_in("startup"))
    app.add_websocket_route("/", greet)
    with pytest.raises(LifespanFailed) as info:
        async with connect(app, lifespan=True):
            pass
    assert repr(info.value.__cause__) == "OSError('no database')"
    assert connected == []


async def report_failure(scope: Scope, receive: Receive, send: Send, *, then: str) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no cache"})
    if then == "wait":
        await trio.sleep_forever()


@pytest.mark.parametrize("then", ["return", "wait"])
async def test_an_app_that_reports_a_failure_without_raising_still_fails_the_test(then: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await report_failure(scope, receive, send, then=then)

    with pytest.raises(LifespanFailed, match=r"^lifespan\.startup\.failed: no cache$") as info:
        async with run_lifespan(app, timeout=1):
            pass
    assert info.value.__cause__ is None
