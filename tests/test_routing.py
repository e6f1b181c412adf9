"""Router: path parameters, url_path_for, unmatched requests, origins, endpoint errors, lifespan."""

from __future__ import annotations

import datetime
import functools
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import starlette.applications as starlette_applications
import starlette.endpoints as starlette_endpoints
import starlette.requests as starlette_requests
import starlette.responses as starlette_responses
import starlette.routing as starlette_routing
import trio

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import WebSocket, WebSocketDisconnect, WebSocketException
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws.datastructures import URL, URLPath
from trio_asgi_ws.endpoints import WebSocketEndpoint
from trio_asgi_ws.routing import CONVERTORS, Convertor, NoMatchFound, Router, WebSocketRoute, compile_path
from trio_asgi_ws.testing import WebSocketDenied, connect, run_lifespan
from trio_asgi_ws.websockets import lifecycle

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly this message."""
    return f"^{re.escape(message)}\\Z"


async def report_params(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json({key: repr(value) for key, value in ws.path_params.items()})
    await ws.close()


def make_router() -> Router:
    """Built in each test, so that mutation testing sees the routes being compiled."""
    return Router(
        [
            WebSocketRoute("/chat/{room}", report_params, name="chat"),
            WebSocketRoute("/item/{id:int}", report_params, name="item"),
            WebSocketRoute("/price/{value:float}", report_params, name="price"),
            WebSocketRoute("/files/{rest:path}", report_params, name="files"),
            WebSocketRoute("/user/{uid:uuid}", report_params, name="user"),
            WebSocketRoute("/chat/{room}/message/{id:int}", report_params, name="message"),
        ]
    )


# -- path parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat/lobby", {"room": "'lobby'"}),
        ("/item/42", {"id": "42"}),
        ("/item/007", {"id": "7"}),
        ("/price/3.25", {"value": "3.25"}),
        ("/price/3", {"value": "3.0"}),
        ("/files/a/b/c.txt", {"rest": "'a/b/c.txt'"}),
        ("/files/", {"rest": "''"}),
        (
            "/user/12345678-1234-5678-1234-567812345678",
            {"uid": "UUID('12345678-1234-5678-1234-567812345678')"},
        ),
        ("/user/12345678123456781234567812345678", {"uid": "UUID('12345678-1234-5678-1234-567812345678')"}),
        (
            "/user/ABCDEF01-ABCD-ABCD-ABCD-ABCDEF012345",
            {"uid": "UUID('abcdef01-abcd-abcd-abcd-abcdef012345')"},
        ),
        ("/chat/lobby/message/3", {"room": "'lobby'", "id": "3"}),
    ],
)
async def test_path_parameters_are_converted(path: str, expected: dict[str, str]) -> None:
    async with connect(make_router(), path) as ws:
        assert await ws.receive_json() == expected


@pytest.mark.parametrize(
    "path",
    [
        "/item/abc",
        "/item/-1",  # no sign: url_path_for refuses negative numbers too
        "/price/-1.5",
        "/price/1.",
        "/price/.5",
        "/price/1e3",
        "/chat/a/b",
        "/chat/",
        "/nowhere",
        "/user/not-a-uuid",
        "/user/1234567-1234-5678-1234-567812345678",  # 7 hex digits in the first group
        "/user/12345678-1234-5678-1234-5678123456789",
    ],
)
async def test_an_unmatched_websocket_is_rejected_before_accept(path: str) -> None:
    with pytest.raises(WebSocketDisconnect) as info:
        async with connect(make_router(), path):
            pass
    assert (info.value.code, info.value.reason) == (1000, "")  # HTTP 403 under a server


async def test_path_params_add_to_those_an_outer_app_put_in_the_scope() -> None:
    scope = websocket_scope("/chat/lobby", path_params={"tenant": "acme", "room": "outer"})
    async with serve_app(make_router(), scope) as fake:
        await fake.accepted()
        assert (await fake.expect_sent("websocket.send"))[
            "text"
        ] == '{"tenant":"\'acme\'","room":"\'lobby\'"}'
        await fake.expect_close(1000)
        await fake.disconnect(1000)


async def test_the_scope_names_the_router_unless_an_outer_one_is_there_already() -> None:
    seen: list[object] = []

    async def which_router(ws: WebSocket) -> None:
        seen.append(ws.scope["router"])
        await ws.accept()

    app = Router([WebSocketRoute("/", which_router)])
    outer = Router()
    for scope in (websocket_scope("/"), websocket_scope("/", router=outer)):
        async with serve_app(app, scope) as fake:
            await fake.accepted()
            await fake.expect_close(1000)
            await fake.disconnect(1000)
    assert seen == [app, outer]


async def test_root_path_is_stripped_whether_or_not_the_server_included_it() -> None:
    for path in ("/api/chat/x", "/chat/x"):
        scope = websocket_scope(path, root_path="/api")
        async with serve_app(make_router(), scope) as fake:
            await fake.accepted()
            assert (await fake.expect_sent("websocket.send"))["text"] == '{"room":"\'x\'"}'
            await fake.expect_close(1000)
            await fake.disconnect(1000)


@pytest.mark.parametrize("path", ["/api", "/api/"])
async def test_the_mount_point_itself_is_the_root_route(path: str) -> None:
    app = Router([WebSocketRoute("/", report_params)])
    async with serve_app(app, websocket_scope(path, root_path="/api")) as fake:
        await fake.accepted()
        assert (await fake.expect_sent("websocket.send"))["text"] == "{}"
        await fake.expect_close(1000)
        await fake.disconnect(1000)


async def test_a_convertor_added_to_the_table_is_used_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    day = Convertor(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", datetime.date.fromisoformat, datetime.date.isoformat)
    monkeypatch.setitem(CONVERTORS, "date", day)
    app = Router([WebSocketRoute("/log/{day:date}", report_params, name="log")])
    async with connect(app, "/log/2024-02-29") as ws:
        assert await ws.receive_json() == {"day": "datetime.date(2024, 2, 29)"}
    assert app.url_path_for("log", day=datetime.date(2024, 1, 5)) == "/log/2024-01-05"
    with pytest.raises(WebSocketDisconnect):
        async with connect(app, "/log/yesterday"):
            pass


# -- unmatched HTTP -------------------------------------------------------------------------------


async def test_http_requests_get_a_plain_404_without_a_default_app() -> None:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    await make_router()({"type": "http", "path": "/", "headers": []}, nothing, capture)
    assert sent == [
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"9")],
        },
        {"type": "http.response.body", "body": b"Not Found"},
    ]


async def test_http_requests_go_to_the_default_app_as_they_came() -> None:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    async def request() -> Message:
        return {"type": "http.request", "body": b"hello"}

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode() + b" " + body})

    await Router(default=default)({"type": "http", "path": "/page", "headers": []}, request, capture)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"/page hello"]


async def test_http_requests_passed_to_the_default_app_carry_no_router_of_ours() -> None:
    scopes: list[Scope] = []

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(dict(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: Message) -> None:
        pass

    async def request() -> Message:
        return {"type": "http.request", "body": b""}

    app = Router(default=default)
    outer = Router()
    await app({"type": "http", "path": "/", "headers": []}, request, ignore)
    await app({"type": "http", "path": "/", "headers": [], "router": outer}, request, ignore)
    assert ["router" in scopes[0], scopes[1]["router"]] == [False, outer]


async def test_a_starlette_app_as_the_default_finds_its_own_routes_with_url_for() -> None:
    async def page(request: starlette_requests.Request) -> starlette_responses.Response:
        return starlette_responses.PlainTextResponse(str(request.url_for("page", name="x")))

    site = starlette_applications.Starlette(
        routes=[starlette_routing.Route("/page/{name}", page, name="page")]
    )
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    async def request() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/page/y",
        "raw_path": b"/page/y",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.org")],
        "client": ("127.0.0.1", 5000),
        "server": ("example.org", 80),
    }
    await Router(default=site)(scope, request, capture)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"http://example.org/page/x"]


# -- url_path_for ---------------------------------------------------------------------------------

UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("chat", {"room": "lobby"}, "/chat/lobby"),
        ("item", {"id": 7}, "/item/7"),
        ("item", {"id": 0}, "/item/0"),
        ("price", {"value": 2.5}, "/price/2.5"),
        ("price", {"value": 2.0}, "/price/2"),
        ("price", {"value": 0.0}, "/price/0"),
        ("price", {"value": 0.5}, "/price/0.5"),
        ("price", {"value": 1e20}, "/price/100000000000000000000"),
        ("files", {"rest": "a/b"}, "/files/a/b"),
        ("user", {"uid": UID}, "/user/12345678-1234-5678-1234-567812345678"),
        ("message", {"room": "lobby", "id": 3}, "/chat/lobby/message/3"),
    ],
)
def test_url_path_for_builds_the_path_the_route_matches(
    name: str, params: dict[str, Any], expected: str
) -> None:
    router = make_router()
    assert router.url_path_for(name, **params) == expected
    assert any(route.match(expected) is not None for route in router.routes)


@pytest.mark.parametrize(
    ("name", "params", "error", "message"),
    [
        ("chat", {"nope": 1}, NoMatchFound, 'No route exists for name "chat" and params "nope".'),
        (
            "chat",
            {"room": "a", "extra": 1},
            NoMatchFound,
            'No route exists for name "chat" and params "room, extra".',  # in the order given
        ),
        (
            "chat",
            {"extra": 1, "room": "a"},
            NoMatchFound,
            'No route exists for name "chat" and params "extra, room".',
        ),
        ("missing", {}, NoMatchFound, 'No route exists for name "missing" and params "".'),
        ("chat", {"room": "a/b"}, ValueError, "path parameter 'room' may not contain '/', got 'a/b'"),
        ("chat", {"room": ""}, ValueError, "path parameter 'room' may not be empty"),
        ("item", {"id": -1}, ValueError, "int path parameters must be non-negative, got -1"),
        *[
            (
                "price",
                {"value": value},
                ValueError,
                f"float path parameters must be finite and non-negative, got {value!r}",
            )
            for value in (-1.0, -0.5, math.nan, math.inf, -math.inf)
        ],
    ],
)
def test_url_path_for_refuses_what_no_route_would_match(
    name: str, params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exactly(message)):
        make_router().url_path_for(name, **params)


@pytest.mark.parametrize(
    "params", [{"room": "a", "extra": 1}, {"extra": 1, "room": "a"}, {}, {"zeta": 1, "alpha": 2}]
)
def test_no_match_found_says_what_starlette_s_says(params: dict[str, Any]) -> None:
    ours = Router([WebSocketRoute("/chat/{room}", chat, name="chat")])
    theirs = starlette_routing.Router([starlette_routing.WebSocketRoute("/chat/{room}", chat, name="chat")])
    with pytest.raises(NoMatchFound) as mine:
        ours.url_path_for("chat", **params)
    with pytest.raises(starlette_routing.NoMatchFound) as starlettes:
        theirs.url_path_for("chat", **params)
    assert str(mine.value) == str(starlettes.value)


def test_a_route_names_the_name_it_was_asked_for_when_it_does_not_match() -> None:
    route = WebSocketRoute("/chat/{room}", report_params, name="chat")
    with pytest.raises(NoMatchFound, match=exactly('No route exists for name "lobby" and params "room".')):
        route.url_path_for("lobby", room="x")


def test_url_path_for_gives_a_websocket_urlpath_that_makes_absolute_urls() -> None:
    path = make_router().url_path_for("chat", room="lobby")
    assert isinstance(path, URLPath) and isinstance(path, str)
    assert (str(path), repr(path), path.protocol, path.host) == (
        "/chat/lobby",
        "'/chat/lobby'",
        "websocket",
        "",
    )
    assert path.make_absolute_url("http://example.org/api/") == URL("ws://example.org/api/chat/lobby")
    assert path.make_absolute_url(URL("https://example.org:8443")) == URL("wss://example.org:8443/chat/lobby")
    route_path = WebSocketRoute("/chat/{room}", chat, name="chat").url_path_for("chat", room="x")
    assert isinstance(route_path, URLPath) and route_path.protocol == "websocket"


# (route, parameter value, path Starlette 1.10 builds: the same here)
SCHEME_RELATIVE = [
    ("/{rest:path}", "/example.org/a", "/%2Fexample.org/a"),
    ("/{rest:path}", "\\example.org/a", "/%5Cexample.org/a"),
    ("/{rest:path}", "/\\example.org", "/%2F%5Cexample.org"),
    ("/{rest:path}", "//example.org", "/%2F/example.org"),
    ("/{room}", "\\example.org", "/%5Cexample.org"),
    ("/files/{rest:path}", "/example.org/a", "/files//example.org/a"),  # not at the start: a path
    ("/files/{rest:path}", "a\\b", "/files/a%5Cb"),
]


@pytest.mark.parametrize(("route_path", "value", "expected"), SCHEME_RELATIVE)
def test_url_path_for_escapes_parameters_that_would_make_a_scheme_relative_url(
    route_path: str, value: str, expected: str
) -> None:
    route = WebSocketRoute(route_path, chat, name="r")
    [param] = route.convertors
    ours = route.url_path_for("r", **{param: value})
    starlettes = starlette_routing.WebSocketRoute(route_path, chat, name="r").url_path_for(
        "r", **{param: value}
    )
    assert (ours, starlettes) == (expected, expected)
    assert not urlsplit(ours).netloc and not ours.startswith("//")
    assert ours.make_absolute_url("http://testserver/") == URL(f"ws://testserver{expected}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("\t/example.org", "/%09/example.org"), ("\n/example.org", "/%0A/example.org"), ("\r/x", "/%0D/x")],
)
def test_url_path_for_escapes_the_tabs_and_newlines_browsers_drop(value: str, expected: str) -> None:
    # A browser deletes these anywhere in a URL, so "/\t/example.org" would be "//example.org"
    # to it. Starlette 1.10 leaves them as they are.
    assert WebSocketRoute("/{rest:path}", chat, name="r").url_path_for("r", rest=value) == expected


@pytest.mark.parametrize("value", ["/example.org/a", "\\example.org/a", "\t/x", "a b/c"])
async def test_an_escaped_path_still_reaches_its_route_with_the_original_value(value: str) -> None:
    app = Router([WebSocketRoute("/{rest:path}", report_params, name="r")])
    async with connect(app, str(app.url_path_for("r", rest=value))) as ws:
        assert await ws.receive_json() == {"rest": repr(value)}


def test_urlpath_rejects_an_unknown_protocol() -> None:
    message = "protocol must be 'http', 'websocket' or '', got 'ftp'"
    with pytest.raises(ValueError, match=exactly(message)):
        URLPath("/", protocol="ftp")  # type: ignore[arg-type]


# -- routes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("chat/{room}", "route paths must start with '/', got 'chat/{room}'"),
        (
            "/a/{x:bogus}",
            "unknown path convertor 'bogus' in '/a/{x:bogus}'; "
            "known: ['float', 'int', 'path', 'str', 'uuid']",
        ),
        ("/a/{x}/{x}", "duplicated path parameter 'x' in '/a/{x}/{x}'"),
    ],
)
def test_bad_route_paths_are_rejected_with_a_clear_error(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        compile_path(path)


def test_endpoints_must_be_callable() -> None:
    message = "endpoint must be an async function, a WebSocketEndpoint or an ASGI app, got 42"
    with pytest.raises(TypeError, match=exactly(message)):
        WebSocketRoute("/", 42)  # type: ignore[arg-type]


async def chat(ws: WebSocket) -> None:
    await ws.accept()


class ChatEndpoint(WebSocketEndpoint):
    pass


class CallableHandler:
    async def __call__(self, ws: WebSocket) -> None:
        await ws.accept()


HANDLER = CallableHandler()


@pytest.mark.parametrize(
    ("endpoint", "name", "expected"),
    [
        (chat, None, "chat"),
        (chat, "lobby", "lobby"),
        (ChatEndpoint, None, "ChatEndpoint"),
        (HANDLER, None, "CallableHandler"),  # an instance: after its class, as in Starlette
    ],
)
def test_a_route_is_named_after_its_endpoint_unless_named_explicitly(
    endpoint: Any, name: str | None, expected: str
) -> None:
    route = WebSocketRoute("/rooms/{room}", endpoint, name=name)
    assert (route.path, route.endpoint, route.name) == ("/rooms/{room}", endpoint, expected)
    assert Router([route]).url_path_for(expected, room="a") == "/rooms/a"
    assert starlette_routing.WebSocketRoute("/rooms/{room}", endpoint, name=name).name == expected


async def test_the_decorator_form_registers_a_route_with_its_options() -> None:
    small = Router()

    @small.websocket("/hello/{name}", name="greeting", structured=False)
    async def hello(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"hello {ws.path_params['name']}, structured: {lifecycle(ws).pump is not None}")

    assert [route.endpoint for route in small.routes] == [hello]  # the function itself, undecorated
    assert small.url_path_for("greeting", name="ann") == "/hello/ann"
    async with connect(small, "/hello/ann") as ws:
        assert await ws.receive_text() == "hello ann, structured: False"


def test_add_websocket_route_passes_its_options_on() -> None:
    small = Router()
    route = small.add_websocket_route("/rooms/{room}", chat, name="room", allowed_origins=["*"])
    assert small.routes == [route]
    assert route.name == "room" and route.origins is not None
    assert small.url_path_for("room", room="a") == "/rooms/a"


async def test_a_class_endpoint_gets_the_connection_s_scope_receive_and_send() -> None:
    seen: list[bool] = []

    class Probe(WebSocketEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            seen.append(
                self.scope is websocket.scope
                and self.receive == websocket.receive
                and self.send == websocket.send
            )
            await websocket.accept()

    async with connect(Router([WebSocketRoute("/", Probe)])):
        pass
    assert seen == [True]


@pytest.mark.parametrize(
    ("endpoint", "name", "expected"),
    [
        (chat, None, "WebSocketRoute(path='/rooms/{room}', name='chat')"),
        (chat, "it's", "WebSocketRoute(path='/rooms/{room}', name=\"it's\")"),
        (HANDLER, None, "WebSocketRoute(path='/rooms/{room}', name='CallableHandler')"),
    ],
)
def test_a_route_s_repr_is_starlette_s(endpoint: Any, name: str | None, expected: str) -> None:
    assert repr(WebSocketRoute("/rooms/{room}", endpoint, name=name)) == expected
    assert repr(starlette_routing.WebSocketRoute("/rooms/{room}", endpoint, name=name)) == expected


def test_a_route_subclass_s_repr_names_the_subclass() -> None:
    class ChatRoute(WebSocketRoute):
        pass

    assert repr(ChatRoute("/", chat)) == "ChatRoute(path='/', name='chat')"


# -- a route alone is an ASGI app ---------------------------------------------------------------


async def test_a_route_alone_serves_a_matching_websocket_with_its_parameters() -> None:
    route = WebSocketRoute("/chat/{room}/message/{id:int}", report_params)
    async with connect(route, "/chat/lobby/message/3") as ws:
        assert await ws.receive_json() == {"room": "'lobby'", "id": "3"}


@pytest.mark.parametrize("path", ["/chat", "/chat/a/b", "/elsewhere"])
async def test_a_route_alone_rejects_a_websocket_it_does_not_match(path: str) -> None:
    with pytest.raises(WebSocketDisconnect) as info:
        async with connect(WebSocketRoute("/chat/{room}", report_params), path):
            pass
    assert (info.value.code, info.value.reason) == (1000, "")  # HTTP 403 under a server


async def test_a_route_alone_applies_its_origin_policy_same_origin_by_default() -> None:
    evil = {"origin": "https://evil.example"}
    with pytest.raises(WebSocketDisconnect):
        async with connect(WebSocketRoute("/", chat), headers=evil):
            pass
    async with connect(WebSocketRoute("/", chat), headers={"origin": "http://testserver"}):
        pass
    async with connect(WebSocketRoute("/", chat, allowed_origins=["https://evil.example"]), headers=evil):
        pass


async def test_a_route_alone_answers_http_with_404_and_runs_an_empty_lifespan() -> None:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    async def request() -> Message:
        return {"type": "http.request", "body": b""}

    route = WebSocketRoute("/", chat)
    await route({"type": "http", "path": "/", "headers": []}, request, capture)
    assert [m.get("status", m.get("body")) for m in sent] == [404, b"Not Found"]
    async with run_lifespan(route) as state:
        assert state == {}


async def test_a_route_alone_sets_no_router_in_the_scope() -> None:
    seen: list[bool] = []

    async def look(ws: WebSocket) -> None:
        seen.append("router" in ws.scope)
        await ws.accept()

    async with connect(WebSocketRoute("/", look)):
        pass
    assert seen == [False]


# -- ASGI apps as endpoints -------------------------------------------------------------------


class RawEcho:
    """A raw ASGI app (an instance taking scope, receive, send) that echoes one message."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": f"{scope['path_params']['room']}: {message['text']}"})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})


async def test_an_asgi_app_instance_is_called_with_scope_receive_and_send() -> None:
    endpoint = RawEcho()
    app = Router([WebSocketRoute("/chat/{room}", endpoint)])
    async with connect(app, "/chat/lobby") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "lobby: hi"
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert (info.value.code, info.value.reason) == (4000, "done")
    [scope] = endpoint.scopes
    assert scope["path_params"] == {"room": "lobby"} and scope["router"] is app
    assert app.routes[0].name == "RawEcho"  # named after its class, as in Starlette


class StarletteEcho(starlette_endpoints.WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: Any, data: Any) -> None:
        await websocket.send_text(f"starlette: {data}")


async def test_an_asgi_app_class_such_as_starlette_s_websocket_endpoint_is_accepted() -> None:
    app = Router([WebSocketRoute("/", StarletteEcho)])
    async with connect(app) as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "starlette: hi"


async def test_an_asgi_endpoint_that_returns_without_closing_is_closed_for_it() -> None:
    async def accept_only(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    class AcceptOnly:
        __call__ = staticmethod(accept_only)

    async with connect(Router([WebSocketRoute("/", AcceptOnly())])) as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert info.value.code == 1000


async def test_an_asgi_endpoint_crash_closes_1011_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Crash:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            raise ValueError("bad state")

    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        async with connect(Router([WebSocketRoute("/rooms/{room}", Crash(), name="room")]), "/rooms/7") as ws:
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
    assert info.value.code == 1011
    [(level, message)] = router_logs(caplog)
    assert level == logging.ERROR
    assert message.startswith("Error in WebSocket endpoint room for /rooms/7\n")
    assert message.endswith("\nValueError: bad state\n")


async def test_functions_methods_partials_and_one_argument_callables_get_the_websocket() -> None:
    async def greet(greeting: str, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"{greeting} {type(ws).__name__}")

    class Greeter:
        async def greet(self, ws: WebSocket) -> None:
            await greet("method", ws)

        async def __call__(self, ws: WebSocket) -> None:
            await greet("instance", ws)

    async def variadic(ws: WebSocket, *greetings: str) -> None:  # could take three arguments
        await greet(" ".join(greetings), ws)

    endpoints: list[Any] = [
        functools.partial(greet, "partial"),
        Greeter().greet,
        Greeter(),
        functools.partial(variadic),  # a function, so called with the WebSocket, as in Starlette
    ]
    for endpoint, expected in zip(endpoints, ["partial", "method", "instance", ""], strict=True):
        async with connect(Router([WebSocketRoute("/", endpoint, name="x")])) as ws:
            assert await ws.receive_text() == f"{expected} WebSocket"


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


def router_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "trio_asgi_ws"]


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

    app = Router([WebSocketRoute("/rooms/{room}", crash, name="room", structured=structured)])
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"):
        async with connect(app, "/rooms/7") as ws:
            await ws.send_text("go")
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
    assert info.value.code == 1011
    [(level, message)] = router_logs(caplog)
    assert level == logging.ERROR
    assert message.startswith("Error in WebSocket endpoint room for /rooms/7\n")
    assert "ValueError: bad state" in message


async def _raise(error: Exception) -> None:
    raise error


@pytest.mark.parametrize("structured", [True, False])
async def test_an_endpoint_crash_before_accept_is_an_http_500_logged_with_its_traceback(
    structured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(ws: WebSocket) -> None:
        raise KeyError("config")

    app = Router([WebSocketRoute("/rooms/{room}", crash, structured=structured)])
    with caplog.at_level(logging.ERROR, logger="trio_asgi_ws"), pytest.raises(WebSocketDenied) as info:
        async with connect(app, "/rooms/7"):
            pass
    assert info.value.status_code == 500
    [(level, message)] = router_logs(caplog)
    assert level == logging.ERROR
    assert message.startswith(
        "Error in WebSocket endpoint crash for /rooms/7\nTraceback (most recent call last):\n  File "
    )
    assert message.endswith("\nKeyError: 'config'\n")


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("{oops", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("[" * 100_000, "Nested too deeply: line 1 column 1 (char 0)"),
        ("[" * 5000 + "]" * 5000, "Nested too deeply: line 1 column 1 (char 0)"),
    ],
)
async def test_invalid_json_from_the_client_closes_1007_and_logs_one_line(
    structured: bool, bad: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def echo_json(ws: WebSocket) -> None:
        await ws.accept()
        async for document in ws.iter_json():
            await ws.send_json(document)

    app = Router([WebSocketRoute("/feed/{name}", echo_json, structured=structured)])
    with caplog.at_level(logging.INFO, logger="trio_asgi_ws"):
        async with connect(app, "/feed/news") as ws:
            await ws.send_text('{"fine": [1]}')
            assert await ws.receive_json() == {"fine": [1]}
            await ws.send_text(bad)
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1007, "invalid JSON")
    # one line, without a traceback and never with the client's document
    assert router_logs(caplog) == [
        (logging.INFO, f"Closed WebSocket /feed/news with 1007: the client sent invalid JSON ({why})")
    ]
    assert caplog.records[-1].exc_info is None


# -- origins ------------------------------------------------------------------------------------


def origin_router() -> Router:
    async def ok(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("welcome")

    return Router(
        [
            WebSocketRoute("/default", ok),
            WebSocketRoute("/listed", ok, allowed_origins=["https://chat.example", "null", None]),
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
        ("/default", "wss://testserver", "https://testserver:443", True),
        ("/default", "https://testserver", "https://testserver", True),  # servers that say "https"
        ("/default", "ws://[::1]:8000", "http://[::1]:8000", True),
        ("/default", "ws://testserver", "https://testserver", False),  # scheme differs
        ("/default", "wss://testserver", "http://testserver", False),
        ("/default", "https://testserver", "http://testserver", False),
        ("/default", "ws://testserver:8080", "http://testserver", False),  # port differs
        ("/default", "ws://testserver", "http://testserver.evil.example", False),
        ("/default", "ws://testserver", "https://evil.example", False),
        ("/default", "ws://testserver", "null", False),  # sandboxed pages, file:// URLs
        ("/default", "ws://testserver", "file://", False),  # a scheme without a host
        ("/default", "ws://testserver", "//testserver", False),  # a host without a scheme
        ("/default", "ws://testserver", "http://testserver:notaport", False),
        # malformed origins never match the well-formed one they resemble
        ("/default", "ws://[::1]:8000", "http://::1:8000", False),
        ("/default", "ws://testserver", "http://[testserver]:80", False),
        # only case is ignored: no host is folded into another
        ("/default", "ws://straße.example", "http://strasse.example", False),
        # listed origins add to the default
        ("/listed", "ws://testserver", "https://chat.example", True),
        ("/listed", "ws://testserver", "https://chat.example:443", True),
        ("/listed", "ws://testserver", "https://Chat.Example/", True),
        ("/listed", "ws://testserver", "null", True),
        ("/listed", "ws://testserver", "null/", True),  # a trailing slash never matters
        ("/listed", "ws://testserver", "http://testserver", True),
        ("/listed", "ws://testserver", "https://chat.example.evil.example", False),
        ("/listed", "ws://testserver", "http://chat.example", False),
        ("/any", "ws://testserver", "https://evil.example", True),
    ],
)
async def test_origin_check_rejects_cross_site_hijacking_before_accept(
    path: str, url: str, origin: str | None, allowed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"origin": origin} if origin is not None else {}
    caplog.set_level(logging.INFO, logger="trio_asgi_ws")
    if allowed:
        async with connect(origin_router(), url + path, headers=headers) as ws:
            assert await ws.receive_text() == "welcome"
        assert router_logs(caplog) == []
    else:
        with pytest.raises(WebSocketDisconnect) as info:  # a close before accept: HTTP 403 under a server
            async with connect(origin_router(), url + path, headers=headers):
                pass
        assert (info.value.code, info.value.reason) == (1000, "")
        assert router_logs(caplog) == [(logging.INFO, f"Rejected WebSocket {path} from origin {origin!r}")]


async def test_the_router_s_allowed_origins_apply_to_routes_without_their_own() -> None:
    async def ok(ws: WebSocket) -> None:
        await ws.accept()

    app = Router(
        [WebSocketRoute("/shared", ok), WebSocketRoute("/own", ok, allowed_origins=[])],
        allowed_origins=["https://chat.example"],
    )
    async with connect(app, "/shared", headers={"origin": "https://chat.example"}):
        pass
    with pytest.raises(WebSocketDisconnect):
        async with connect(app, "/own", headers={"origin": "https://chat.example"}):
            pass


@pytest.mark.parametrize("where", ["router", "route"])
def test_allowed_origins_must_be_a_list(where: str) -> None:
    message = "allowed_origins must be a list of origins, not a single string"
    with pytest.raises(TypeError, match=exactly(message)):
        if where == "router":
            Router(allowed_origins="https://chat.example")
        else:
            WebSocketRoute("/", chat, allowed_origins="https://chat.example")


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


class LifespanServer:
    """The server's side of a lifespan call: startup, then shutdown; records what the app sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self._requests = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive(self) -> Message:
        return next(self._requests)

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def test_the_lifespan_is_given_the_app_the_scope_names() -> None:
    given: list[object] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        given.append(app)
        yield None

    outer = object()  # a framework that mounted the router says so in scope["app"]
    server = LifespanServer()
    await Router(lifespan=lifespan)(
        {"type": "lifespan", "state": {}, "app": outer}, server.receive, server.send
    )
    assert given == [outer]
    assert [m["type"] for m in server.sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def failing_lifespan(phase: str) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if phase == "startup":
            raise RuntimeError("no database")
        yield None
        raise RuntimeError("no database")

    return lifespan


@pytest.mark.parametrize("phase", ["startup", "shutdown"])
async def test_a_failing_lifespan_reports_the_phase_with_its_traceback_then_raises(
    phase: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Raising after the report is what makes a server (or Starlette's TestClient, which after a
    # failed startup waits for the app to end and re-raises its error) stop instead of carrying on.
    server = LifespanServer()
    app = Router(lifespan=failing_lifespan(phase))
    no_database = pytest.raises(RuntimeError, match=exactly("no database"))
    with caplog.at_level(logging.DEBUG, logger="trio_asgi_ws"), no_database:
        await app({"type": "lifespan", "state": {}}, server.receive, server.send)
    expected_types = (
        ["lifespan.startup.failed"]
        if phase == "startup"
        else ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    )
    assert [m["type"] for m in server.sent] == expected_types
    text = server.sent[-1]["message"]
    assert text.startswith("Traceback (most recent call last):\n  File ")
    assert text.endswith("\nRuntimeError: no database\n")
    assert router_logs(caplog) == []  # the server reports it (serve() and the CLI: one record)


@pytest.mark.parametrize("phase", ["startup", "shutdown"])
async def test_a_failing_lifespan_sends_and_raises_what_starlette_s_router_does(phase: str) -> None:
    outcomes = []
    for app in (
        Router(lifespan=failing_lifespan(phase)),
        starlette_routing.Router(lifespan=failing_lifespan(phase)),
    ):
        server = LifespanServer()
        with pytest.raises(RuntimeError) as info:
            await app({"type": "lifespan", "state": {}}, server.receive, server.send)
        messages = [(m["type"], m.get("message", "").splitlines()[-1:]) for m in server.sent]
        outcomes.append((messages, repr(info.value)))
    ours, starlettes = outcomes
    assert ours == starlettes


async def test_lifespan_state_goes_into_the_scope_s_state() -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, int]]:
        yield {"x": 1}

    state = {"server": "kept"}
    server = LifespanServer()
    await Router(lifespan=lifespan)({"type": "lifespan", "state": state}, server.receive, server.send)
    assert state == {"server": "kept", "x": 1}


async def test_lifespan_state_needs_server_support() -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, int]]:
        yield {"x": 1}

    server = LifespanServer()
    with pytest.raises(RuntimeError, match="does not support"):
        await Router(lifespan=lifespan)({"type": "lifespan"}, server.receive, server.send)
    [failed] = server.sent
    assert failed["type"] == "lifespan.startup.failed"
    assert failed["message"].endswith(
        '\nRuntimeError: The server does not support "state" in the lifespan scope.\n'
    )
