"""HTTPConnection's request API beyond the scope views: base_url, url_for, session, auth, user.

Each result and each error is compared with Starlette's own ``WebSocket`` built on the same scope.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import starlette.applications as starlette_applications
import starlette.requests as starlette_requests
import starlette.responses as starlette_responses
import starlette.routing as starlette_routing
import starlette.websockets as starlette_websockets

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Message, Scope
from trio_asgi_ws.datastructures import URL
from trio_asgi_ws.routing import NoMatchFound, Router, WebSocketRoute
from trio_asgi_ws.testing import connect

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly this message."""
    return f"^{re.escape(message)}\\Z"


async def no_receive() -> Message:
    raise AssertionError("not called")


async def no_send(message: Message) -> None:
    raise AssertionError("not called")


def both(scope: Scope) -> tuple[WebSocket, starlette_websockets.WebSocket]:
    """Our WebSocket and Starlette's, on the same scope."""
    return WebSocket(scope, no_receive, no_send), starlette_websockets.WebSocket(scope, no_receive, no_send)


async def nothing(ws: Any) -> None:
    pass


def our_router() -> Router:
    return Router(
        [
            WebSocketRoute("/chat/{room}", nothing, name="chat"),
            WebSocketRoute("/item/{id:int}", nothing, name="item"),
            WebSocketRoute("/files/{rest:path}", nothing, name="files"),
            WebSocketRoute("/", nothing, name="home"),
        ]
    )


def page(request: starlette_requests.Request) -> starlette_responses.Response:
    return starlette_responses.PlainTextResponse("")


def starlette_router() -> starlette_routing.Router:
    return starlette_routing.Router(
        [
            starlette_routing.WebSocketRoute("/chat/{room}", nothing, name="chat"),
            starlette_routing.Route("/page/{name}", page, name="page"),
            starlette_routing.Mount(
                "/sub",
                routes=[starlette_routing.WebSocketRoute("/feed/{id:int}", nothing, name="feed")],
                name="sub",
            ),
        ]
    )


# Scopes whose base URL differs: root paths (with or without a final "/"), an app root path from
# an outer mount, secure schemes, the host from the Host header, from scope["server"], or neither.
SCOPES = {
    "plain": websocket_scope("/chat/lobby", query_string=b"a=1&b=2"),
    "root_path": websocket_scope("/app/chat/lobby", root_path="/app"),
    "root_path with slash": websocket_scope("/app/chat/lobby", root_path="/app/"),
    "root_path is slash": websocket_scope("/chat/lobby", root_path="/"),
    "app_root_path": websocket_scope("/app/mnt/chat/lobby", root_path="/app/mnt", app_root_path="/app"),
    "empty app_root_path": websocket_scope("/mnt/chat/lobby", root_path="/mnt", app_root_path=""),
    "wss with port": websocket_scope(
        "/chat/lobby", scheme="wss", headers=[(b"host", b"example.org:8443")], query_string=b"x=1"
    ),
    "https": websocket_scope("/chat/lobby", scheme="https", headers=[(b"host", b"example.org")]),
    "server only": websocket_scope("/chat/lobby", headers=[], server=("10.0.0.1", 8000)),
    "wss server default port": websocket_scope(
        "/api/x", scheme="wss", headers=[], server=("h", 443), root_path="/api"
    ),
    "IPv6 server": websocket_scope("/chat/lobby", headers=[], server=("::1", 8000)),
    "no host at all": websocket_scope("/app/chat/lobby", headers=[], server=None, root_path="/app"),
}


def fresh(name: str, **extra: Any) -> Scope:
    return {**SCOPES[name], "headers": list(SCOPES[name]["headers"]), **extra}


# -- base_url -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCOPES)
def test_base_url_is_starlettes(name: str) -> None:
    ours, theirs = both(fresh(name))
    assert type(ours.base_url) is URL
    assert str(ours.base_url) == str(theirs.base_url)
    expected = theirs.base_url.components
    assert ours.base_url.components == expected
    assert (ours.base_url.scheme, ours.base_url.netloc, ours.base_url.path, ours.base_url.query) == (
        theirs.base_url.scheme,
        theirs.base_url.netloc,
        theirs.base_url.path,
        theirs.base_url.query,
    )


def test_base_url_values() -> None:
    """The comparisons above, spelled out (so a change in Starlette cannot hide a change here)."""
    expected = {
        "plain": "ws://testserver/",
        "root_path": "ws://testserver/app/",
        "root_path with slash": "ws://testserver/app/",
        "root_path is slash": "ws://testserver/",
        "app_root_path": "ws://testserver/app/",
        "empty app_root_path": "ws://testserver/",
        "wss with port": "wss://example.org:8443/",
        "https": "https://example.org/",
        "server only": "ws://10.0.0.1:8000/",
        "wss server default port": "wss://h/api/",
        "IPv6 server": "ws://[::1]:8000/",
        "no host at all": "/app/",
    }
    assert {name: str(WebSocket(fresh(name)).base_url) for name in SCOPES} == expected


def test_base_url_is_computed_once_and_leaves_the_scope_alone() -> None:
    scope = fresh("app_root_path", query_string=b"q=1")
    before = dict(scope)
    ws = WebSocket(scope)
    first = ws.base_url
    scope["app_root_path"] = "/elsewhere"  # too late: kept, as in Starlette
    assert ws.base_url is first
    assert str(first) == "ws://testserver/app/"
    scope["app_root_path"] = "/app"
    assert scope == before


# -- url_for --------------------------------------------------------------------------------------

OUR_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("chat", {"room": "lobby"}),
    ("item", {"id": 7}),
    ("files", {"rest": "a/b c.txt"}),
    ("home", {}),
]
STARLETTE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("chat", {"room": "lobby"}),
    ("page", {"name": "x"}),
    ("sub:feed", {"id": 3}),
]


@pytest.mark.parametrize("name", SCOPES)
@pytest.mark.parametrize("key", ["router", "app"])
def test_url_for_with_our_router_is_starlettes(name: str, key: str) -> None:
    """Our Router, in scope["router"] or alone in scope["app"]: Starlette's url_for takes it too."""
    ours, theirs = both(fresh(name, **{key: our_router()}))
    for route, params in OUR_CALLS:
        url = ours.url_for(route, **params)
        assert type(url) is URL
        assert str(url) == str(theirs.url_for(route, **params))


@pytest.mark.parametrize("name", SCOPES)
def test_url_for_with_a_starlette_router_is_starlettes(name: str) -> None:
    ours, theirs = both(fresh(name, router=starlette_router()))
    for route, params in STARLETTE_CALLS:
        url = ours.url_for(route, **params)
        assert type(url) is URL  # ours, though Starlette's URLPath built it
        assert str(url) == str(theirs.url_for(route, **params))


def test_url_for_values() -> None:
    assert (
        WebSocket(fresh("root_path", router=our_router())).url_for("item", id=7)
        == "ws://testserver/app/item/7"
    )
    assert (
        WebSocket(fresh("https", router=our_router())).url_for("chat", room="a") == "wss://example.org/chat/a"
    )
    site = WebSocket(fresh("wss with port", router=starlette_router()))
    assert site.url_for("page", name="x") == "https://example.org:8443/page/x"
    assert site.url_for("sub:feed", id=3) == "wss://example.org:8443/sub/feed/3"
    inner = WebSocket(fresh("app_root_path", router=starlette_router()))
    assert inner.url_for("chat", room="r") == "ws://testserver/app/chat/r"


def test_url_for_with_a_starlette_app_in_scope_app() -> None:
    app = starlette_applications.Starlette(routes=starlette_router().routes)
    ours, theirs = both(fresh("root_path", app=app))
    for route, params in STARLETTE_CALLS:
        assert str(ours.url_for(route, **params)) == str(theirs.url_for(route, **params))
    assert ours.url_for("page", name="y") == "http://testserver/app/page/y"


def test_url_for_prefers_the_router_to_the_app() -> None:
    scope = fresh(
        "plain", router=our_router(), app=starlette_applications.Starlette(routes=starlette_router().routes)
    )
    ours, theirs = both(scope)
    assert str(ours.url_for("item", id=1)) == str(theirs.url_for("item", id=1)) == "ws://testserver/item/1"
    with pytest.raises(NoMatchFound):
        ours.url_for("page", name="x")  # only the app has it
    scope["router"] = None  # a router that is absent or None: the app answers, as in Starlette
    ours, theirs = both(scope)
    assert str(ours.url_for("page", name="x")) == str(theirs.url_for("page", name="x"))


@pytest.mark.parametrize("extra", [{}, {"router": None}, {"app": None}, {"router": None, "app": None}])
def test_url_for_without_a_router_or_app_raises_starlettes_runtime_error(extra: dict[str, Any]) -> None:
    ours, theirs = both(fresh("plain", **extra))
    with pytest.raises(RuntimeError) as theirs_error:
        theirs.url_for("chat", room="x")
    with pytest.raises(RuntimeError, match=exactly(str(theirs_error.value))):
        ours.url_for("chat", room="x")
    assert str(theirs_error.value) == (
        "The `url_for` method can only be used inside a Starlette application or with a router."
    )


def test_url_for_passes_on_the_providers_no_match() -> None:
    ours = WebSocket(fresh("plain", router=our_router()))
    with pytest.raises(NoMatchFound):
        ours.url_for("nowhere")
    with pytest.raises(NoMatchFound):
        ours.url_for("chat")  # a parameter missing
    with pytest.raises(starlette_routing.NoMatchFound):
        WebSocket(fresh("plain", router=starlette_router())).url_for("nowhere")


def test_url_for_takes_name_positionally_only() -> None:
    """``name`` is positional-only, so a route parameter may itself be called ``name``."""
    router = Router([WebSocketRoute("/u/{name}", nothing, name="user")])
    ours, theirs = both(fresh("plain", router=router))
    assert (
        str(ours.url_for("user", name="bob"))
        == str(theirs.url_for("user", name="bob"))
        == "ws://testserver/u/bob"
    )


# -- session, auth, user --------------------------------------------------------------------------


class CountingSession(dict[str, Any]):
    """Shaped like ``starlette.middleware.sessions.Session`` (which needs ``itsdangerous``)."""

    def __init__(self) -> None:
        super().__init__(user_id=1)
        self.accesses = 0

    def mark_accessed(self) -> None:
        self.accesses += 1


def test_session_is_the_scopes_and_marked_accessed_like_starlettes() -> None:
    """Marked on every read (not cached), as Starlette's ``Session`` is by ``request.session``."""
    for cls in (WebSocket, starlette_websockets.WebSocket):
        counting = CountingSession()
        ws = cls(fresh("plain", session=counting), no_receive, no_send)
        assert counting.accesses == 0
        assert ws.session is counting
        assert counting.accesses == 1
        assert ws.session is counting
        assert counting.accesses == 2


def test_a_session_without_mark_accessed_is_returned_as_is() -> None:
    plain = {"a": 1}
    ours, theirs = both(fresh("plain", session=plain))
    assert ours.session is theirs.session is plain


@pytest.mark.parametrize("key", ["auth", "user"])
@pytest.mark.parametrize("value", [None, object(), ("authenticated",)])
def test_auth_and_user_are_the_scopes(key: str, value: Any) -> None:
    ours, theirs = both(fresh("plain", **{key: value}))
    assert getattr(ours, key) is getattr(theirs, key) is value


@pytest.mark.parametrize("key", ["session", "auth", "user"])
def test_without_the_middleware_the_assertion_message_is_starlettes(key: str) -> None:
    ours, theirs = both(fresh("plain"))
    with pytest.raises(AssertionError) as theirs_error:
        getattr(theirs, key)
    with pytest.raises(AssertionError, match=exactly(str(theirs_error.value))):
        getattr(ours, key)
    middleware = "SessionMiddleware" if key == "session" else "AuthenticationMiddleware"
    assert str(theirs_error.value) == f"{middleware} must be installed to access request.{key}"


def test_under_python_O_a_missing_key_is_a_key_error_as_in_starlette() -> None:
    """``assert`` vanishes under ``-O``: then the scope lookup fails, in both libraries alike."""
    program = """
import starlette.websockets
import trio_asgi_ws
scope = {"type": "websocket", "path": "/", "headers": []}
for cls in (trio_asgi_ws.WebSocket, starlette.websockets.WebSocket):
    ws = cls(scope, None, None)
    for key in ("session", "auth", "user"):
        try:
            getattr(ws, key)
        except BaseException as error:
            print(cls.__module__, key, type(error).__name__, error)
"""
    result = subprocess.run(
        [sys.executable, "-O", "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    lines = result.stdout.splitlines()
    assert lines == [
        f"{module} {key} KeyError '{key}'"
        for module in ("trio_asgi_ws.websockets", "starlette.websockets")
        for key in ("session", "auth", "user")
    ]


# -- end to end -----------------------------------------------------------------------------------


async def send_urls(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_json(
        {
            "item": str(ws.url_for("item", id=7)),
            "chat": str(ws.url_for("chat", room=ws.path_params["room"])),
            "base": str(ws.base_url),
        }
    )
    await ws.close()


def url_router() -> Router:
    return Router(
        [
            WebSocketRoute("/chat/{room}", send_urls, name="chat"),
            WebSocketRoute("/item/{id:int}", nothing, name="item"),
        ]
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/chat/lobby?x=1", ("ws://testserver/item/7", "ws://testserver/chat/lobby", "ws://testserver/")),
        (
            "wss://example.org:8443/chat/r2",
            ("wss://example.org:8443/item/7", "wss://example.org:8443/chat/r2", "wss://example.org:8443/"),
        ),
    ],
)
async def test_a_route_handler_builds_urls_through_our_router(
    url: str, expected: tuple[str, str, str]
) -> None:
    async with connect(url_router(), url) as client:
        got = await client.receive_json()
    assert (got["item"], got["chat"], got["base"]) == expected


async def test_under_a_root_path_the_urls_keep_it() -> None:
    scope = websocket_scope("/api/chat/lobby", root_path="/api")
    async with serve_app(url_router(), scope) as fake:
        await fake.accepted()
        text = (await fake.expect_sent("websocket.send"))["text"]
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert text == (
        '{"item":"ws://testserver/api/item/7","chat":"ws://testserver/api/chat/lobby","base":"ws://testserver/api/"}'
    )


def mounted_apps(first: str) -> tuple[Router, starlette_routing.Router]:
    """The same two routes, ours and Starlette's, whose handler at /chat/{room} sends the URL of
    route ``first`` or ``"item"`` (mounted as ``ws``) and its base URL."""

    async def send_mounted_urls(ws: WebSocket | starlette_websockets.WebSocket) -> None:
        await ws.accept()
        name = "chat" if first == "chat" else "item"
        params = {"room": ws.path_params["room"]} if name == "chat" else {"id": 7}
        await ws.send_json({"url": str(ws.url_for(f"ws:{name}", **params)), "base": str(ws.base_url)})
        await ws.close()

    ours = Router(
        [
            WebSocketRoute("/chat/{room}", send_mounted_urls, name="chat"),
            WebSocketRoute("/item/{id:int}", nothing, name="item"),
        ]
    )
    theirs = starlette_routing.Router(
        [
            starlette_routing.WebSocketRoute("/chat/{room}", send_mounted_urls, name="chat"),
            starlette_routing.WebSocketRoute("/item/{id:int}", nothing, name="item"),
        ]
    )
    return ours, theirs


async def mounted_answers() -> list[Any]:
    answers = []
    for inner in mounted_apps("chat"):
        site = starlette_applications.Starlette(routes=[starlette_routing.Mount("/ws", app=inner, name="ws")])
        async with connect(site, "/ws/chat/lobby") as client:
            answers.append(await client.receive_json())
    return answers


async def test_our_router_mounted_in_a_starlette_app_gives_starlettes_urls() -> None:
    """Mounted in a Starlette app, ``url_for`` goes through Starlette's router (it set
    ``scope["router"]`` first) into ours, and gives what the same routes all-Starlette give."""
    answers = await mounted_answers()
    assert answers[0] == answers[1] == {"url": "ws://testserver/ws/chat/lobby", "base": "ws://testserver/"}


@pytest.mark.xfail(
    raises=NoMatchFound,
    strict=False,
    reason="routing.py: Starlette's Mount.url_path_for catches only its own NoMatchFound, so our "
    "first route's NoMatchFound ends the search before the second route is tried",
)
def test_our_router_mounted_in_a_starlette_app_finds_a_route_after_the_first() -> None:
    urls = []
    for inner in mounted_apps("item"):
        site = starlette_routing.Router([starlette_routing.Mount("/ws", app=inner, name="ws")])
        urls.append(str(WebSocket(fresh("plain", router=site)).url_for("ws:item", id=7)))
    assert urls == ["ws://testserver/ws/item/7"] * 2
