"""WebSocketEndpoint: encodings, the 1003 close on bad data, on_disconnect's close code."""

from __future__ import annotations

from typing import Any

import pytest

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import WebSocket, WebSocketDisconnect
from trio_asgi_ws.endpoints import WebSocketEndpoint
from trio_asgi_ws.routing import Router, WebSocketRoute
from trio_asgi_ws.testing import connect

disconnect_codes: list[int] = []

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(f"echo {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        await websocket.disconnected.wait()  # awaiting here works: on_disconnect is shielded
        disconnect_codes.append(close_code)


class JsonEcho(WebSocketEndpoint):
    encoding = "json"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_json({"got": data})


class Raw(WebSocketEndpoint):
    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(repr(data))


class BytesOnly(WebSocketEndpoint):
    encoding = "bytes"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_bytes(data[::-1])


app = Router(
    [
        WebSocketRoute("/echo", Echo),
        WebSocketRoute("/json", JsonEcho),
        WebSocketRoute("/raw", Raw),
        WebSocketRoute("/bytes", BytesOnly),
    ]
)


async def test_text_endpoint_echoes_and_on_disconnect_gets_the_client_code() -> None:
    disconnect_codes.clear()
    async with connect(app, "/echo") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "echo hi"
        await ws.close(4100)
    assert disconnect_codes == [4100]


@pytest.mark.parametrize(
    ("path", "send", "reason"),
    [
        ("/echo", b"binary", "Expected text websocket messages, but got bytes"),
        ("/bytes", "text", "Expected bytes websocket messages, but got text"),
        ("/json", "{not json", "Malformed JSON data received."),
    ],
)
async def test_the_wrong_kind_of_data_closes_with_1003(
    path: str, send: str | bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(app, path) as ws:
        if isinstance(send, bytes):
            await ws.send_bytes(send)
        else:
            await ws.send_text(send)
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert info.value.code == 1003
    assert reason in caplog.text


async def test_json_and_raw_endpoints_decode_as_starlette_does() -> None:
    async with connect(app, "/json") as ws:
        await ws.send_json({"a": 1})
        assert await ws.receive_json() == {"got": {"a": 1}}
        await ws.send_json([2], mode="binary")
        assert await ws.receive_json() == {"got": [2]}
    async with connect(app, "/raw") as ws:
        await ws.send_text("t")
        assert await ws.receive_text() == "'t'"
        await ws.send_bytes(b"b")
        assert await ws.receive_text() == "b'b'"
    async with connect(app, "/bytes") as ws:
        await ws.send_bytes(b"abc")
        assert await ws.receive_bytes() == b"cba"


async def test_an_endpoint_class_still_works_as_a_bare_asgi_app_like_starlettes() -> None:
    codes: list[int] = []

    class Plain(WebSocketEndpoint):
        encoding = "text"

        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.send_text(data.upper())

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    async with serve_app(Plain, websocket_scope()) as fake:
        await fake.accepted()
        await fake.send_data("x")
        assert (await fake.expect_sent("websocket.send"))["text"] == "X"
        await fake.disconnect(1001)
    assert fake.app_error is None
    assert codes == [1001]


async def test_an_on_receive_error_gives_on_disconnect_1011() -> None:
    codes: list[int] = []

    class Broken(WebSocketEndpoint):
        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            raise ValueError("oops")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    async with connect(Router([WebSocketRoute("/", Broken)])) as ws:
        await ws.send_text("x")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert info.value.code == 1011
    assert codes == [1011]


def test_an_unsupported_encoding_is_rejected() -> None:
    class Weird(WebSocketEndpoint):
        encoding = "yaml"  # type: ignore[assignment]

    with pytest.raises(ValueError, match="Unsupported 'encoding' attribute 'yaml'"):
        Weird(websocket_scope(), None, None)  # type: ignore[arg-type]
