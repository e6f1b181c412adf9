"""Router: path parameters, url_path_for, unmatched requests, origins, endpoint errors, lifespan."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import WebSocket, WebSocketDisconnect, WebSocketException
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws.routing import NoMatchFound, Router, WebSocketRoute, compile_path
from trio_asgi_ws.testing import WebSocketDenied, connect, run_lifespan
from trio_asgi_ws.websockets import lifecycle

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


async def report_params(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({key: repr(value) for key, value in ws.path_params.items()})
    await ws.close()


router = Router(
    [
        WebSocketRoute("/chat/{room}", report_params, name="chat"),
        WebSocketRoute("/item/{id:int}", report_params, name="item"),
        WebSocketRoute("/price/{value:float}", report_params, name="price"),
        WebSocketRoute("/files/{rest:path}", report_params, name="files"),
        WebSocketRoute("/user/{uid:uuid}", report_params, name="user"),
    ]
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat/lobby", {"room": "'lobby'"}),
        ("/item/42", {"id": "42"}),
        ("/price/3.25", {"value": "3.25"}),
        ("/files/a/b/c.txt", {"rest": "'a/b/c.txt'"}),
        (
            "/user/12345678-1234-5678-1234-567812345678",
            {"uid": "UUID('12345678-1234-5678-1234-567812345678')"},
        ),
    ],
)
async def test_path_parameters_are_converted(path: str, expected: dict[str, str]) -> None:
    async with connect(router, path) as ws:
        assert await ws.receive_json() == expected


@pytest.mark.parametrize("path", ["/item/abc", "/chat/a/b", "/nowhere", "/user/not-a-uuid"])
async def test_an_unmatched_websocket_is_rejected_before_accept(path: str) -> None:
    with pytest.raises(WebSocketDisconnect):
        async with connect(router, path):
            pass


async def test_http_requests_get_404_or_the_default_app() -> None:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        return {"type": "http.request"}

    http_scope: Scope = {"type": "http", "path": "/", "headers": []}
    await router(http_scope, nothing, capture)
    assert sent[0]["status"] == 404
    assert sent[1]["body"] == b"Not Found"

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"page"})

    sent.clear()
    await Router(default=default)(dict(http_scope), nothing, capture)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"page"]


def test_url_path_for_builds_paths_and_rejects_bad_parameters() -> None:
    assert router.url_path_for("chat", room="lobby") == "/chat/lobby"
    assert router.url_path_for("item", id=7) == "/item/7"
    assert router.url_path_for("price", value=2.5) == "/price/2.5"
    assert router.url_path_for("files", rest="a/b") == "/files/a/b"
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert router.url_path_for("user", uid=uid) == f"/user/{uid}"
    with pytest.raises(NoMatchFound, match='No route exists for name "chat" and params "nope"'):
        router.url_path_for("chat", nope=1)
    with pytest.raises(NoMatchFound):
        router.url_path_for("missing")
    with pytest.raises(ValueError, match="may not contain '/'"):
        router.url_path_for("chat", room="a/b")
    with pytest.raises(ValueError, match="non-negative"):
        router.url_path_for("item", id=-1)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("chat/{room}", "must start with '/'"),
        ("/a/{x:bogus}", "unknown path convertor 'bogus'"),
        ("/a/{x}/{x}", "duplicated path parameter 'x'"),
    ],
)
def test_bad_route_paths_are_rejected_with_a_clear_error(path: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_path(path)


def test_endpoints_must_be_functions_or_endpoint_classes() -> None:
    with pytest.raises(TypeError, match="endpoint must be an async function or a WebSocketEndpoint"):
        WebSocketRoute("/", int)  # type: ignore[arg-type]


async def test_the_decorator_form_registers_a_route() -> None:
    small = Router()

    @small.websocket("/hello/{name}", name="hello")
    async def hello(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"hello {ws.path_params['name']}")

    assert small.url_path_for("hello", name="ann") == "/hello/ann"
    async with connect(small, "/hello/ann") as ws:
        assert await ws.receive_text() == "hello ann"


async def test_root_path_is_stripped_whether_or_not_the_server_included_it() -> None:
    for path in ("/api/chat/x", "/chat/x"):
        scope = websocket_scope(path, root_path="/api")
        async with serve_app(router, scope) as fake:
            await fake.accepted()
            assert (await fake.expect_sent("websocket.send"))["text"] == '{"room":"\'x\'"}'
            await fake.expect_close(1000)
            await fake.disconnect(1000)


# -- structured by default, with an opt-out ----------------------------------------------------


async def test_routed_handlers_run_in_structured_mode_unless_opted_out() -> None:
    modes: list[bool] = []

    async def which(ws: WebSocket) -> None:
        modes.append(lifecycle(ws).pump is not None)
        await ws.accept()

    both = Router([WebSocketRoute("/s", which), WebSocketRoute("/p", which, structured=False)])
    for path in ("/s", "/p"):
        async with connect(both, path) as ws:
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            assert info.value.code == 1000  # closed for it on the way out, in both modes
    assert modes == [True, False]


async def test_websocket_options_reach_the_websocket() -> None:
    async def slow_reader(ws: WebSocket) -> None:
        await ws.accept()
        await trio.sleep_forever()

    tight = Router(
        [
            WebSocketRoute(
                "/", slow_reader, websocket_options={"max_buffered_messages": 2, "takeover_delay": 0}
            )
        ]
    )
    async with connect(tight) as ws:
        await trio.sleep(0.01)
        for i in range(4):
            await ws.send_text(str(i))
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert info.value.code == 1008


# -- endpoint errors ------------------------------------------------------------------------------


async def test_websocket_exception_before_accept_rejects_and_after_accept_closes() -> None:
    async def early(ws: WebSocket) -> None:
        raise WebSocketException(4401, "login first")

    async def late(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise WebSocketException(4009, "conflict")

    app = Router([WebSocketRoute("/early", early), WebSocketRoute("/late", late)])
    with pytest.raises(WebSocketDisconnect) as info:
        async with connect(app, "/early"):
            pass
    assert (info.value.code, info.value.reason) == (4401, "login first")
    async with connect(app, "/late") as ws:
        await ws.send_text("go")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert (info.value.code, info.value.reason) == (4009, "conflict")


@pytest.mark.parametrize("structured", [True, False])
async def test_an_endpoint_crash_closes_1011_after_accept_and_is_logged_once(
    structured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        async with trio.open_nursery() as nursery:  # the user's own nursery: groups are theirs
            nursery.start_soon(_raise, ValueError("bad state"))

    app = Router([WebSocketRoute("/", crash, structured=structured)])
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        async with connect(app) as ws:
            await ws.send_text("go")
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
    assert info.value.code == 1011
    records = [r for r in caplog.records if r.name == "trio_asgi_ws"]
    assert len(records) == 1
    assert "ValueError: bad state" in records[0].getMessage()


async def _raise(error: Exception) -> None:
    raise error


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("bad", ["{oops", "[" * 100_000, "[" * 5000 + "]" * 5000])
async def test_invalid_json_from_the_client_closes_1007_and_logs_one_line(
    structured: bool, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def echo_json(ws: WebSocket) -> None:
        await ws.accept()
        async for document in ws.iter_json():
            await ws.send_json(document)

    app = Router([WebSocketRoute("/", echo_json, structured=structured)])
    with caplog.at_level(logging.INFO, logger="trio_asgi_ws"):
        async with connect(app) as ws:
            await ws.send_text('{"fine": [1]}')
            assert await ws.receive_json() == {"fine": [1]}
            await ws.send_text(bad)
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1007, "invalid JSON")
    records = [r for r in caplog.records if r.name == "trio_asgi_ws"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert "invalid JSON" in records[0].getMessage()
    assert records[0].exc_info is None and "Traceback" not in records[0].getMessage()
    assert len(records[0].getMessage()) < 300  # never the client's document


@pytest.mark.parametrize("structured", [True, False])
async def test_an_endpoint_crash_before_accept_is_an_http_500(
    structured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(ws: WebSocket) -> None:
        raise KeyError("config")

    app = Router([WebSocketRoute("/", crash, structured=structured)])
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"), pytest.raises(WebSocketDenied) as info:
        async with connect(app):
            pass
    assert info.value.status_code == 500
    assert len([r for r in caplog.records if r.name == "trio_asgi_ws"]) == 1


# -- origins ------------------------------------------------------------------------------------


def origin_router(**route_options: Any) -> Router:
    async def ok(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("welcome")

    return Router(
        [
            WebSocketRoute("/default", ok),
            WebSocketRoute("/listed", ok, allowed_origins=["https://chat.example", "null"]),
            WebSocketRoute("/any", ok, allowed_origins=["*"]),
        ]
    )


@pytest.mark.parametrize(
    ("path", "url", "origin", "allowed"),
    [
        # no Origin: not a browser, admitted everywhere
        ("/default", "ws://testserver", None, True),
        ("/listed", "ws://testserver", None, True),
        # same origin: the scheme, host and port the request was sent to
        ("/default", "ws://testserver", "http://testserver", True),
        ("/default", "ws://testserver", "HTTP://TestServer:80/", True),
        ("/default", "ws://testserver:8080", "http://testserver:8080", True),
        ("/default", "wss://testserver", "https://testserver", True),
        ("/default", "ws://[::1]:8000", "http://[::1]:8000", True),
        ("/default", "ws://testserver", "https://testserver", False),  # scheme differs
        ("/default", "wss://testserver", "http://testserver", False),
        ("/default", "ws://testserver:8080", "http://testserver", False),  # port differs
        ("/default", "ws://testserver", "http://testserver.evil.example", False),
        ("/default", "ws://testserver", "https://evil.example", False),
        ("/default", "ws://testserver", "null", False),  # sandboxed pages, file:// URLs
        ("/default", "ws://testserver", "http://testserver:notaport", False),
        # listed origins add to the default
        ("/listed", "ws://testserver", "https://chat.example", True),
        ("/listed", "ws://testserver", "https://chat.example:443", True),
        ("/listed", "ws://testserver", "null", True),
        ("/listed", "ws://testserver", "http://testserver", True),
        ("/listed", "ws://testserver", "https://chat.example.evil.example", False),
        ("/listed", "ws://testserver", "http://chat.example", False),
        ("/any", "ws://testserver", "https://evil.example", True),
    ],
)
async def test_origin_check_rejects_cross_site_hijacking_before_accept(
    path: str, url: str, origin: str | None, allowed: bool
) -> None:
    headers = {"origin": origin} if origin is not None else {}
    if allowed:
        async with connect(origin_router(), url + path, headers=headers) as ws:
            assert await ws.receive_text() == "welcome"
    else:
        with pytest.raises(WebSocketDisconnect):  # a close before accept: HTTP 403 under a server
            async with connect(origin_router(), url + path, headers=headers):
                pass


def test_allowed_origins_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="must be a list of origins"):
        Router(allowed_origins="https://chat.example")


# -- lifespan -------------------------------------------------------------------------------------


async def test_lifespan_runs_startup_and_shutdown_around_the_app() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append(f"startup {type(app).__name__}")
        async with trio.open_nursery() as nursery:  # a long-lived nursery for background work
            nursery.start_soon(trio.sleep_forever)
            yield {"nursery": nursery}
            nursery.cancel_scope.cancel()
        events.append("shutdown")

    app = Router(lifespan=lifespan)
    async with run_lifespan(app) as state:
        assert isinstance(state["nursery"], trio.Nursery)
        events.append("serving")
    assert events == ["startup Router", "serving", "shutdown"]


async def test_a_failing_shutdown_is_reported_as_shutdown_failed() -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield None
        raise RuntimeError("flush failed")

    sent: list[Message] = []
    queue = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(queue)

    async def send(message: Message) -> None:
        sent.append(message)

    await Router(lifespan=lifespan)({"type": "lifespan", "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert "flush failed" in sent[1]["message"]


async def test_lifespan_state_needs_server_support() -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, int]]:
        yield {"x": 1}

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await Router(lifespan=lifespan)({"type": "lifespan"}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert 'does not support "state"' in sent[0]["message"]
