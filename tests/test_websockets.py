"""Plain (Starlette-compatible) mode of ``WebSocket``: state machine, data, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import starlette.responses
import starlette.websockets
import trio

from tests.driver import FakeServer, serve_app, websocket_scope
from trio_asgi_ws import (
    FrameTypeError,
    InvalidJSON,
    WebSocket,
    WebSocketClose,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketState,
)
from trio_asgi_ws._lifecycle import Settings
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws.websockets import lifecycle

Handler = Callable[[WebSocket], Awaitable[None]]

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


def app_for(handler: Handler, **options: Any) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await handler(WebSocket(scope, receive, send, **options))

    return app


async def run_plain(handler: Handler, scope: Scope | None = None, **server: Any) -> FakeServer:
    """Run ``handler`` against a connected client that then waits; return the finished server."""
    async with serve_app(app_for(handler), scope, **server) as fake:
        await fake.connect()
    return fake


# -- the scope as a mapping, and request data ------------------------------------------------


def test_websocket_is_a_mapping_over_its_scope_with_identity_equality() -> None:
    scope = websocket_scope("/chat")
    first, second = WebSocket(scope), WebSocket(scope)
    assert first["path"] == "/chat"
    assert set(first) == set(scope)
    assert len(first) == len(scope)
    assert first != second
    assert first == first
    assert len({first, second}) == 2


def test_request_data_comes_from_the_scope() -> None:
    scope = websocket_scope(
        "/room/1",
        query_string=b"name=ann&tag=a&tag=b",
        headers=[
            (b"host", b"example.com:8080"),
            (b"sec-websocket-version", b"13"),
            (b"cookie", b'session=abc; theme="dark"'),
        ],
        path_params={"room": 1},
    )
    ws = WebSocket(scope)
    assert ws.url == "ws://example.com:8080/room/1?name=ann&tag=a&tag=b"
    assert isinstance(ws.url, str)
    assert ws.url.port == 8080
    assert ws.headers["Sec-WebSocket-Version"] == "13"
    assert ws.query_params["name"] == "ann"
    assert ws.query_params.getlist("tag") == ["a", "b"]
    assert ws.path_params == {"room": 1}
    assert ws.cookies == {"session": "abc", "theme": "dark"}
    assert ws.client == ("127.0.0.1", 50000)
    assert ws.client is not None and ws.client.host == "127.0.0.1"


def test_state_writes_through_to_the_scope_state() -> None:
    scope = websocket_scope()
    ws = WebSocket(scope)
    ws.state.user = "ann"
    assert scope["state"] == {"user": "ann"}


@pytest.mark.parametrize(
    ("scope", "got"), [({"type": "http"}, "'http'"), ({"type": "lifespan"}, "'lifespan'"), ({}, "None")]
)
def test_non_websocket_scope_is_rejected(scope: Scope, got: str) -> None:
    words = f'WebSocket needs a "websocket" scope, got type {got}'
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        WebSocket(scope)


async def test_missing_receive_and_send_callables_raise_runtime_error() -> None:
    ws = WebSocket(websocket_scope())
    with pytest.raises(RuntimeError) as info:
        await ws.receive()
    assert str(info.value) == "Receive channel has not been made available"
    with pytest.raises(RuntimeError) as info:
        await ws.close()
    assert str(info.value) == "Send channel has not been made available"


def test_the_defaults_are_the_documented_ones() -> None:
    """docs/websocket.md: max_buffered_messages=64, max_buffered_bytes=1 MiB, takeover_delay=0.05,
    close_timeout=5.0, drain_timeout=5.0."""
    assert lifecycle(WebSocket(websocket_scope())).settings == Settings(
        max_buffered_messages=64,
        max_buffered_bytes=1024 * 1024,
        takeover_delay=0.05,
        close_timeout=5.0,
        drain_timeout=5.0,
    )


# -- accept, state transitions -----------------------------------------------------------------


async def test_accept_sends_subprotocol_and_headers_and_moves_both_states() -> None:
    seen: list[tuple[WebSocketState, WebSocketState]] = []

    async def handler(ws: WebSocket) -> None:
        seen.append((ws.client_state, ws.application_state))
        await ws.accept(subprotocol="chat", headers=[(b"x-extra", b"1")])
        seen.append((ws.client_state, ws.application_state))
        await ws.close(4000, "bye")
        seen.append((ws.client_state, ws.application_state))

    fake = await run_plain(handler, websocket_scope(subprotocols=["chat", "other"]))
    assert fake.sent == [
        {"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-extra", b"1")]},
        {"type": "websocket.close", "code": 4000, "reason": "bye"},
    ]
    connecting, connected, disconnected = (
        WebSocketState.CONNECTING,
        WebSocketState.CONNECTED,
        WebSocketState.DISCONNECTED,
    )
    assert seen == [(connecting, connecting), (connected, connected), (connected, disconnected)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"subprotocol": "graphql"}, ValueError, "'graphql' was not offered by the client"),
        ({"subprotocol": b"chat"}, TypeError, "subprotocol must be a str"),
        ({"headers": [("x-name", "value")]}, TypeError, "must be bytes"),
        ({"headers": [(b"x-name",)]}, TypeError, r"\(name, value\) pairs"),
        ({"headers": [(b"Sec-WebSocket-Protocol", b"chat")]}, ValueError, "accept\\(subprotocol=...\\)"),
        ({"headers": [(b":status", b"200")]}, ValueError, "not an HTTP token"),
        ({"headers": [(b"x-evil", b"a\r\nset-cookie: x")]}, ValueError, "CR, LF or NUL"),
    ],
)
async def test_bad_accept_arguments_raise_before_anything_is_sent(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    raised: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.accept(**kwargs)
        except Exception as exc:
            raised.append(exc)
            await ws.close()

    fake = await run_plain(handler, websocket_scope(subprotocols=["chat"]))
    assert len(raised) == 1
    assert isinstance(raised[0], error)
    assert re.search(match, str(raised[0])), str(raised[0])
    assert [m["type"] for m in fake.sent] == ["websocket.close"]


@pytest.mark.parametrize(
    ("arguments", "code", "reason"),
    [((4401, "nope"), 4401, "nope"), ((), 1000, ""), ((4000,), 4000, ""), ((4000, None), 4000, "")],
)
async def test_close_before_accept_and_websocket_close_app(
    arguments: tuple[Any, ...], code: int, reason: str
) -> None:
    async with serve_app(WebSocketClose(*arguments)) as fake:
        assert await fake.next_sent() == {"type": "websocket.close", "code": code, "reason": reason}


async def test_accept_twice_names_the_asgi_messages() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(RuntimeError) as info:
            await ws.accept()
        assert str(info.value) == (
            'Expected ASGI message "websocket.send" or "websocket.close", but got \'websocket.accept\''
        )

    fake = await run_plain(handler)
    assert fake.app_error is None


async def test_receive_checks_the_first_message_is_connect() -> None:
    async def handler(ws: WebSocket) -> None:
        with pytest.raises(
            RuntimeError, match=re.escape('Expected ASGI message "websocket.connect", but got')
        ):
            await ws.receive()

    async with serve_app(app_for(handler)) as fake:
        await fake.send_data("hi")
    assert fake.app_error is None


# -- receiving ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hypercorn_style", [True, False])
async def test_receive_text_bytes_and_json(hypercorn_style: bool) -> None:
    got: list[Any] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        got.append(await ws.receive_text())
        got.append(await ws.receive_bytes())
        got.append(await ws.receive_json())
        got.append(await ws.receive_json(mode="binary"))

    async with serve_app(app_for(handler), hypercorn_style=hypercorn_style) as fake:
        await fake.accepted()
        await fake.send_data("héllo")
        await fake.send_data(b"\x00\x01")
        await fake.send_data('{"a": [1, 2]}')
        await fake.send_data('{"ü": true}'.encode())
    assert fake.app_error is None
    assert got == ["héllo", b"\x00\x01", {"a": [1, 2]}, {"ü": True}]


@pytest.mark.parametrize("hypercorn_style", [True, False])
@pytest.mark.parametrize(
    ("method", "payload", "expected", "received"),
    [
        ("receive_text", b"raw", "text", "binary"),
        ("receive_bytes", "words", "binary", "text"),
        ("receive_json", b"{}", "text", "binary"),
    ],
)
async def test_wrong_frame_type_raises_frame_type_error_naming_the_frame(
    hypercorn_style: bool, method: str, payload: str | bytes, expected: str, received: str
) -> None:
    errors: list[FrameTypeError] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await getattr(ws, method)()
        except FrameTypeError as error:
            errors.append(error)
        assert await ws.receive_text() == "still usable"

    async with serve_app(app_for(handler), hypercorn_style=hypercorn_style) as fake:
        await fake.accepted()
        await fake.send_data(payload)
        await fake.send_data("still usable")
    assert fake.app_error is None
    (error,) = errors
    assert isinstance(error, TypeError)
    assert (error.expected, error.received) == (expected, received)
    assert f"but got a {received} frame" in str(error)


async def test_receive_json_binary_mode_on_a_text_frame_raises_frame_type_error() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(FrameTypeError, match="Expected a binary frame"):
            await ws.receive_json(mode="binary")

    async with serve_app(app_for(handler)) as fake:
        await fake.accepted()
        await fake.send_data("{}")
    assert fake.app_error is None


async def test_invalid_json_raises_value_error_and_socket_stays_usable() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(ValueError, match="Expecting value") as info:
            await ws.receive_json()
        assert isinstance(info.value, json.JSONDecodeError)
        assert await ws.receive_json() == {"ok": 1}
        await ws.send_text("done")

    async with serve_app(app_for(handler)) as fake:
        await fake.accepted()
        await fake.send_data("not json")
        await fake.send_data('{"ok": 1}')
        assert (await fake.expect_sent("websocket.send"))["text"] == "done"
    assert fake.app_error is None


@pytest.mark.parametrize("method", ["send_json", "receive_json"])
async def test_invalid_json_mode_raises_runtime_error_before_anything_is_sent(method: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        args = ({"x": 1},) if method == "send_json" else ()
        with pytest.raises(
            RuntimeError, match=re.escape('The "mode" argument should be "text" or "binary".')
        ):
            await getattr(ws, method)(*args, mode="yaml")

    fake = await run_plain(handler)
    assert fake.app_error is None
    assert [m["type"] for m in fake.sent] == ["websocket.accept"]


async def test_receive_before_accept_raises_websocket_disconnected() -> None:
    async def handler(ws: WebSocket) -> None:
        with pytest.raises(WebSocketDisconnected, match=re.escape('Need to call "accept" first.')):
            await ws.receive_text()

    fake = await run_plain(handler)
    assert fake.app_error is None


async def test_iter_text_ends_cleanly_on_disconnect_and_later_receives_raise_the_code() -> None:
    got: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            got.append(text)
        assert ws.client_state is WebSocketState.DISCONNECTED
        assert ws.disconnected.is_set()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert (info.value.code, info.value.reason) == (4001, "gone")
        with pytest.raises(WebSocketDisconnected, match='Cannot call "receive" once a disconnect'):
            await ws.receive()

    async with serve_app(app_for(handler)) as fake:
        await fake.accepted()
        for text in ("a", "b", "c"):
            await fake.send_data(text)
        await fake.disconnect(4001, "gone")
    assert fake.app_error is None
    assert got == ["a", "b", "c"]


@pytest.mark.parametrize("method", ["iter_bytes", "iter_json"])
async def test_iter_bytes_and_json(method: str) -> None:
    got: list[Any] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        iterator = getattr(ws, method)()
        async for item in iterator:
            got.append(item)
        await iterator.aclose()

    async with serve_app(app_for(handler)) as fake:
        await fake.accepted()
        await fake.send_data(b"1" if method == "iter_bytes" else "1")
        await fake.disconnect()
    assert got == ([b"1"] if method == "iter_bytes" else [1])


@pytest.mark.parametrize("first_waits_for", ["the connect", "data"])
async def test_a_second_concurrent_receiver_gets_busy_resource_error(first_waits_for: str) -> None:
    errors: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        if first_waits_for == "data":
            await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive)
            await trio.testing.wait_all_tasks_blocked()
            try:
                await ws.receive()
            except trio.BusyResourceError as error:
                errors.append(error)
            nursery.cancel_scope.cancel()

    async with serve_app(app_for(handler)) as fake:
        if first_waits_for == "data":
            await fake.connect()  # and then nothing: the first receiver waits until it is cancelled
    assert [str(error) for error in errors] == [
        "another task is already waiting in receive() on this WebSocket"
    ]


# -- sending ------------------------------------------------------------------------------------


async def test_send_json_is_compact_and_not_ascii_escaped() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"name": "Zoë", "n": [1, 2]})
        await ws.send_json({"k": "ü"}, mode="binary")

    fake = await run_plain(handler)
    assert fake.sent[1] == {"type": "websocket.send", "text": '{"name":"Zoë","n":[1,2]}'}
    assert fake.sent[2] == {"type": "websocket.send", "bytes": '{"k":"ü"}'.encode()}


@pytest.mark.parametrize(
    ("method", "data", "words"),
    [
        ("send_text", b"bytes", "send_text() takes a str, got bytes"),
        ("send_text", None, "send_text() takes a str, got NoneType"),
        ("send_bytes", "text", "send_bytes() takes bytes, got str"),
        ("send_bytes", 1, "send_bytes() takes bytes, got int"),
    ],
)
async def test_send_with_the_wrong_type_raises_type_error(method: str, data: Any, words: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(TypeError) as info:
            await getattr(ws, method)(data)
        assert str(info.value) == words

    fake = await run_plain(handler)
    assert fake.app_error is None
    assert [m["type"] for m in fake.sent] == ["websocket.accept"]


async def test_send_after_close_raises_websocket_disconnected() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()
        with pytest.raises(WebSocketDisconnected, match='Cannot call "send" once a close message'):
            await ws.send_text("late")

    fake = await run_plain(handler)
    assert fake.app_error is None


async def test_send_after_a_seen_disconnect_raises_websocket_disconnect_and_close_is_quiet() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.send_text("anyone?")
        assert info.value.code == 1006
        await ws.close()  # the usual `except WebSocketDisconnect: await ws.close()` must not fail
        assert ws.application_state is WebSocketState.DISCONNECTED

    async with serve_app(app_for(handler)) as fake:
        await fake.accepted()
        await fake.disconnect()
    assert fake.app_error is None
    assert [m["type"] for m in fake.sent] == ["websocket.accept"]


@pytest.mark.parametrize("failure", [OSError, trio.BusyResourceError, trio.BrokenResourceError])
async def test_send_failures_from_the_server_become_websocket_disconnect_1006(
    failure: type[Exception],
) -> None:
    async def failing_send(message: Message) -> None:
        if message["type"] == "websocket.send":
            raise failure("peer gone")

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    ws = WebSocket(websocket_scope(), receive, failing_send)
    await ws.accept()
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.send_text("x")
    assert info.value.code == 1006
    assert ws.application_state is WebSocketState.DISCONNECTED


async def test_sends_are_serialised_in_fifo_order() -> None:
    active = 0
    overlap = 0
    order: list[str] = []

    async def slow_send(message: Message) -> None:
        nonlocal active, overlap
        active += 1
        overlap = max(overlap, active)
        await trio.sleep(0.001)
        order.append(message.get("text", message["type"]))
        active -= 1

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    ws = WebSocket(websocket_scope(), receive, slow_send)
    await ws.accept()
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(ws.send_text, str(i))
            await trio.testing.wait_all_tasks_blocked()
    assert overlap == 1
    assert order == ["websocket.accept", "0", "1", "2", "3", "4"]
    assert ws.application_state is WebSocketState.CONNECTED


async def test_a_send_queued_behind_a_close_is_refused_when_its_turn_comes() -> None:
    """A queued message is checked again at its turn: what went first may have closed the socket."""
    gate = trio.Event()
    sent: list[Message] = []
    refused: list[BaseException] = []

    async def gated_send(message: Message) -> None:
        if message.get("text") == "first":
            await gate.wait()
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def late_send() -> None:
        try:
            await ws.send_text("after the close")
        except WebSocketDisconnected as error:
            refused.append(error)

    ws = WebSocket(websocket_scope(), receive, gated_send)
    await ws.accept()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.send_text, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ws.close, 4000, "done")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(late_send)  # allowed now (the socket is open), so it waits its turn
        await trio.testing.wait_all_tasks_blocked()
        while_queued = ws.application_state  # nothing queued has changed the state yet
        gate.set()
    assert [str(error) for error in refused] == ['Cannot call "send" once a close message has been sent.']
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert (while_queued, ws.application_state) == (WebSocketState.CONNECTED, WebSocketState.DISCONNECTED)


async def test_a_cancelled_sender_does_not_wedge_the_others() -> None:
    gate = trio.Event()

    async def gated_send(message: Message) -> None:
        if message.get("text") == "first":
            await gate.wait()

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    ws = WebSocket(websocket_scope(), receive, gated_send)
    await ws.accept()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.send_text, "first")
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01):
            await ws.send_text("second")  # queued behind "first", then cancelled
        gate.set()
    with trio.fail_after(1):
        await ws.send_text("third")


@pytest.mark.parametrize(
    ("state_setup", "message", "error"),
    [
        (
            "connecting",
            {"type": "websocket.send", "text": "x"},
            'Expected ASGI message "websocket.accept", '
            '"websocket.close" or "websocket.http.response.start", but got \'websocket.send\'',
        ),
        (
            "connected",
            {"type": "websocket.http.response.start"},
            'Expected ASGI message "websocket.send" or '
            "\"websocket.close\", but got 'websocket.http.response.start'",
        ),
        (
            "response",
            {"type": "websocket.send"},
            "Expected ASGI message \"websocket.http.response.body\", but got 'websocket.send'",
        ),
    ],
)
async def test_unexpected_messages_are_rejected_with_starlettes_errors(
    state_setup: str, message: Message, error: str
) -> None:
    async def send(message: Message) -> None:
        pass

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    for cls in (WebSocket, starlette.websockets.WebSocket):
        ws: Any = cls(websocket_scope(), receive, send)
        if state_setup == "connected":
            await ws.accept()
        elif state_setup == "response":
            await ws.send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        with pytest.raises(RuntimeError) as info:
            await ws.send(message)
        assert str(info.value) == error, cls


async def test_receive_in_a_block_delivers_what_the_pump_read_first_then_reads_the_server_again() -> None:
    got: list[str] = []
    pump_has_read = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, takeover_delay=0)
        async with ws:
            await ws.accept()
            await pump_has_read.wait()  # away from receive(): the pump reads for the handler
            with trio.fail_after(1):
                for _ in range(3):
                    got.append(await ws.receive_text())
            await ws.close()

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.send_data("1")
        await fake.send_data("2")
        await trio.testing.wait_all_tasks_blocked()  # both are in the pump's buffer now
        pump_has_read.set()
        await trio.testing.wait_all_tasks_blocked()  # the handler waits in receive() again
        await fake.send_data("3")
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert fake.app_error is None
    assert got == ["1", "2", "3"]


# -- denial responses ---------------------------------------------------------------------------


async def test_denial_response_accepts_starlette_responses_and_plain_asgi_apps() -> None:
    async def plain_http_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": [(b"x-why", b"token")]})
        await send({"type": "http.response.body", "body": b"no token"})

    for response in (starlette.responses.PlainTextResponse("no token", status_code=401), plain_http_app):

        async def handler(ws: WebSocket, response: Any = response) -> None:
            await ws.send_denial_response(response)
            assert ws.application_state is WebSocketState.DISCONNECTED

        fake = await run_plain(handler)
        assert fake.app_error is None
        start, body = fake.sent
        assert start["type"] == "websocket.http.response.start"
        assert start["status"] == 401
        assert body["type"] == "websocket.http.response.body"
        assert body["body"] == b"no token"


async def test_send_response_is_the_seed_name_for_send_denial_response() -> None:
    assert WebSocket.send_response is WebSocket.send_denial_response


@pytest.mark.parametrize("extensions", ["none", "absent"])
async def test_denial_response_without_the_server_extension_raises(extensions: str) -> None:
    scope = websocket_scope(extensions={})
    if extensions == "absent":  # the key is optional in ASGI
        del scope["extensions"]
    ws = WebSocket(scope)
    with pytest.raises(RuntimeError) as info:
        await ws.send_denial_response(starlette.responses.Response(status_code=403))
    assert str(info.value) == "The server doesn't support the Websocket Denial Response extension."


async def test_a_denial_response_app_receives_through_the_websocket() -> None:
    """The response app gets the socket's own ``receive``: what it reads moves the client's side."""
    received: list[Message] = []

    async def reading_http_app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async def handler(ws: WebSocket) -> None:
        await ws.send_denial_response(reading_http_app)
        assert (ws.client_state, ws.application_state) == (
            WebSocketState.CONNECTED,
            WebSocketState.DISCONNECTED,
        )

    fake = await run_plain(handler)
    assert fake.app_error is None
    assert received == [{"type": "websocket.connect"}]
    assert fake.sent == [
        {"type": "websocket.http.response.start", "status": 403, "headers": []},
        {"type": "websocket.http.response.body", "body": b"no"},
    ]


# -- Starlette parity ---------------------------------------------------------------------------


async def test_a_starlette_session_produces_the_same_messages_and_states() -> None:
    """The same handler code, run on Starlette's WebSocket and ours, talks the same ASGI."""

    async def session(ws: Any) -> list[Any]:
        notes: list[Any] = [ws.client_state.name, ws.application_state.name]
        await ws.accept(subprotocol="chat", headers=[(b"x-a", b"1")])
        notes.append(await ws.receive_text())
        notes.append(await ws.receive_json())
        await ws.send_text("t")
        await ws.send_bytes(b"b")
        await ws.send_json({"é": [1, 2.5, None]})
        await ws.send_json([1], mode="binary")
        async for item in ws.iter_text():
            notes.append(item)
        notes += [ws.client_state.name, ws.application_state.name]
        await ws.close(1001, "later")
        notes += [ws.client_state.name, ws.application_state.name]
        return notes

    results = []
    for cls in (starlette.websockets.WebSocket, WebSocket):
        notes: list[Any] = []

        async def app(
            scope: Scope, receive: Receive, send: Send, cls: Any = cls, notes: list[Any] = notes
        ) -> None:
            notes.extend(await session(cls(scope, receive, send)))

        async with serve_app(app, websocket_scope(subprotocols=["chat"]), hypercorn_style=False) as fake:
            await fake.accepted()
            await fake.send_data("hello")
            await fake.send_data('{"n": 1}')
            await fake.send_data("x")
            await fake.send_data("y")
            await fake.disconnect(1000)
        assert fake.app_error is None
        results.append((notes, fake.sent))
    (starlette_notes, starlette_sent), (our_notes, our_sent) = results
    assert our_notes == starlette_notes
    # One deliberate difference: a close after the client left is not sent to the server.
    assert starlette_sent[-1]["type"] == "websocket.close"
    assert our_sent == starlette_sent[:-1]


def test_exceptions_match_starlettes_shapes() -> None:
    ours, theirs = WebSocketDisconnect(1001, None), starlette.websockets.WebSocketDisconnect(1001, None)
    assert (ours.code, ours.reason, ours.args) == (theirs.code, theirs.reason, theirs.args)
    assert WebSocketDisconnect().code == 1000
    assert issubclass(WebSocketDisconnected, RuntimeError)
    assert not issubclass(WebSocketDisconnected, WebSocketDisconnect)
    assert [s.value for s in WebSocketState] == [s.value for s in starlette.websockets.WebSocketState]


# -- invalid JSON from the client ----------------------------------------------------------------


EXPECTING_NAME = "Expecting property name enclosed in double quotes"


@pytest.mark.parametrize(
    ("mode", "payload", "problem", "position"),
    [
        ("text", "{oops", EXPECTING_NAME, 1),
        ("text", "[" * 100_000, "Nested too deeply", 0),
        ("text", "[" * 5000 + "]" * 5000, "Nested too deeply", 0),
        ("binary", b"{oops", EXPECTING_NAME, 1),
        ("binary", b"[" * 100_000, "Nested too deeply", 0),
        ("binary", b'{"caf\xc3(": 1}', "Invalid UTF-8 (invalid continuation byte)", 5),
    ],
)
async def test_invalid_json_raises_one_documented_value_error(
    mode: str, payload: str | bytes, problem: str, position: int
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        with pytest.raises(InvalidJSON) as info:
            await ws.receive_json(mode=mode)
        assert (info.value.msg, info.value.pos) == (problem, position)
        assert isinstance(info.value, json.JSONDecodeError)  # what Starlette code catches
        assert isinstance(info.value, ValueError)
        assert await ws.receive_json(mode=mode) == {"next": "one"}  # the bad frame was consumed
        await ws.close()

    async with serve_app(app) as server:
        await server.accepted()
        await server.send_data(payload)
        await server.send_data('{"next": "one"}' if mode == "text" else b'{"next": "one"}')
        await server.expect_close(1000)


async def test_invalid_json_ends_iter_json_and_a_structured_block_closes_1007() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        with pytest.raises(InvalidJSON):
            async with ws:
                await ws.accept()
                async for document in ws.iter_json():
                    await ws.send_json(document)

    async with serve_app(app) as server:
        await server.accepted()
        await server.send_data("[1]")
        assert (await server.expect_sent("websocket.send"))["text"] == "[1]"
        await server.send_data("[1,")
        await server.expect_close(1007, "invalid JSON")
        await server.disconnect(1007)


# -- rejection in structured mode ----------------------------------------------------------------


@pytest.mark.parametrize("rejection", ["close", "denial"])
async def test_a_rejected_handshake_ends_the_block_without_waiting_for_a_disconnect(rejection: str) -> None:
    """The fake server, like Starlette's TestClient, never sends a disconnect after a rejection."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, close_timeout=60)  # a wait would outlast the test's deadline
        async with ws:
            assert (await ws.receive())["type"] == "websocket.connect"
            if rejection == "close":
                await ws.close(1008)
            else:
                await ws.send_denial_response(starlette.responses.PlainTextResponse("no", status_code=403))

    async with serve_app(app) as server:
        await server.connect()
        first = await server.next_sent()
        assert first["type"] == (
            "websocket.close" if rejection == "close" else "websocket.http.response.start"
        )
        await server.wait_app()  # fails after the driver's deadline (5 s) if the block waits


@pytest.mark.parametrize("data", [b"ab", bytearray(b"ab"), memoryview(b"ab")])
async def test_send_bytes_sends_bytes_whatever_bytes_like_it_is_given(data: bytes) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await ws.send_bytes(data)
        await ws.close()

    async with serve_app(app) as server:
        await server.accepted()
        sent = await server.expect_sent("websocket.send")
        assert type(sent["bytes"]) is bytes and sent["bytes"] == b"ab"
        await server.expect_close(1000)
        await server.disconnect(1000)
    assert server.app_error is None
