"""``trio_asgi_ws.integrations.fastapi`` in a FastAPI app under a real ``python -m trio_asgi_ws``.

The app is ``tests.integration.framework_apps:fastapi_app``; the clients are trio-websocket.
"""

from __future__ import annotations

import inspect
import json

import pytest
import starlette.websockets
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from tests.integration.conftest import open_client
from tests.integration.framework_apps import params
from tests.integration.framework_server import (
    DEADLINE,
    assert_plain_ticker_outlives_its_client,
    catches_reports,
    cli_server,
    measure_send_only_handler,
    next_event,
    observing,
)
from trio_asgi_ws import WebSocket
from trio_asgi_ws.integrations.fastapi import structured

TARGET = "tests.integration.framework_apps:fastapi_app"


async def test_path_query_header_and_depends_parameters_reach_a_structured_endpoint() -> None:
    async with cli_server(TARGET) as server:
        async with observing(server) as events:
            with trio.fail_after(DEADLINE):
                url = server.url("/params/7?q=query&token=secret")
                async with open_client(url, extra_headers=[("X-Token", "header-value")]) as ws:
                    assert json.loads(await ws.get_message()) == {
                        "class": "trio_asgi_ws.websockets.WebSocket",
                        "item_id": [7, "int"],  # converted by FastAPI from the annotation
                        "q": "query",
                        "x_token": "header-value",
                        "user": "ann",  # from Depends(current_user), itself given ?token=
                        "db": "session-1",  # from a dependency with yield
                    }
                    await ws.send_message("echo me")
                    assert await ws.get_message() == "echo me"
                # the yield dependency's teardown runs once the block is over, not cancelled by it
                assert (await next_event(events, "params"))["event"] == "session teardown"
        server.assert_no_errors()


@pytest.mark.parametrize(
    "query",
    [
        "token=secret",  # q missing: FastAPI's validation error
        "q=query&token=wrong",  # Depends(current_user) raises fastapi.WebSocketException
    ],
)
async def test_fastapi_rejects_bad_parameters_before_the_endpoint_runs(query: str) -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRejected) as info:
            url = server.url(f"/params/7?{query}")
            async with open_client(url, extra_headers=[("X-Token", "header-value")]):
                pass
        assert info.value.status_code == 403  # FastAPI's 1008 close before accept
        server.assert_no_errors()


async def test_send_only_endpoint_is_cancelled_when_its_client_leaves() -> None:
    async with cli_server(TARGET) as server:
        event, after = await measure_send_only_handler(server, "/ticker")
        assert event["ended"] == "Cancelled"
        assert after < DEADLINE, after  # generous: the documented bound is ~0.09 s here
        server.assert_no_errors()


async def test_control_fastapis_own_websocket_keeps_sending_after_its_client_left() -> None:
    async with cli_server(TARGET) as server:
        await assert_plain_ticker_outlives_its_client(server)


async def test_except_fastapi_websocketdisconnect_never_runs_and_the_block_ends_quietly() -> None:
    async with cli_server(TARGET) as server:
        first, second = await catches_reports(server)
        assert first["clause"] == "passing through: trio_asgi_ws.exceptions.WebSocketDisconnect"
        assert second["clause"] == "finally"
        server.assert_no_errors()


async def test_fastapi_websocket_exception_closes_with_its_code_or_rejects() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/refuse/after")) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_client(server.url("/refuse/before")):
                    pass
        assert (closed.value.reason.code, closed.value.reason.reason) == (4001, "refused by the app")
        assert rejected.value.status_code == 403
        server.assert_no_errors()


async def test_structured_endpoint_survives_include_router() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/included/describe/lobby/3")) as ws:
                described = json.loads(await ws.get_message())
                await ws.send_message("echo me")
                assert await ws.get_message() == "echo me"
        assert described["class"] == "trio_asgi_ws.websockets.WebSocket"
        assert described["path_params"] == {"room": ["lobby", "str"], "seat": ["3", "str"]}
        server.assert_no_errors()


async def test_a_dependency_that_accepted_first_fails_the_call_before_the_endpoint() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/accepted-by-dependency")) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()  # "never" is never sent
        await server.wait_for_log("RuntimeError: FastAPI's WebSocket was already used")


def test_fastapi_sees_starlettes_websocket_in_the_signature_and_the_rest_unchanged() -> None:
    original = inspect.signature(params.__wrapped__)  # type: ignore[attr-defined]
    seen = inspect.signature(params)
    assert seen.parameters["websocket"].annotation is starlette.websockets.WebSocket
    assert list(seen.parameters) == list(original.parameters)
    assert [p.default for p in seen.parameters.values()] == [p.default for p in original.parameters.values()]
    assert params.__name__ == "params"


def test_structured_needs_exactly_one_websocket_parameter() -> None:
    async def none(room: str) -> None: ...

    async def two(a: WebSocket, b: WebSocket) -> None: ...

    with pytest.raises(TypeError, match="found none"):
        structured(none)
    with pytest.raises(TypeError, match="found 2: a, b"):
        structured(two)
    with pytest.raises(TypeError, match="decorates an async function"):
        structured(WebSocket)  # type: ignore[arg-type]


def test_structured_with_options_resolves_string_annotations() -> None:
    # This module has ``from __future__ import annotations``: every annotation is a string.
    @structured(websocket_options={"max_buffered_messages": 8}, allowed_origins=["*"])
    async def endpoint(websocket: WebSocket, room: str) -> None: ...

    parameters = inspect.signature(endpoint).parameters
    assert parameters["websocket"].annotation is starlette.websockets.WebSocket
    assert parameters["room"].annotation == "str"  # left for FastAPI to evaluate


async def test_the_tutorials_connection_manager_keeps_a_gone_socket_and_fails_the_next_broadcaster() -> None:
    """What docs/frameworks.md warns about: its ``except fastapi.WebSocketDisconnect`` never runs."""
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/manager/ann")) as ann:
                async with open_client(server.url("/manager/bob")) as bob:
                    await bob.send_message("bye")
                    assert await ann.get_message() == "bob: bye"
                    assert await bob.get_message() == "bob: bye"
                await ann.send_message("anyone?")
                assert await ann.get_message() == "ann: anyone?"  # ann is first in the list
                with pytest.raises(ConnectionClosed) as info:
                    await ann.get_message()  # the send to bob's socket failed in ann's handler
        assert info.value.reason.code == 1011
        logged = await server.wait_for_log("WebSocketDisconnected")
        assert logged, server.log


async def test_structured_refuses_what_is_not_an_untouched_fastapi_websocket() -> None:
    async def endpoint(websocket: WebSocket) -> None:
        raise AssertionError("the endpoint must not run")

    async def receive() -> dict[str, object]:
        raise AssertionError("nothing may be received")

    async def send(message: object) -> None:
        raise AssertionError("nothing may be sent")

    entry = structured(endpoint)
    with pytest.raises(TypeError, match="expected FastAPI's WebSocket, got str"):
        await entry(websocket="not a websocket")
    framework_websocket = starlette.websockets.WebSocket({"type": "websocket", "path": "/"}, receive, send)
    del framework_websocket._receive  # a Starlette that no longer keeps the raw callables
    with pytest.raises(RuntimeError, match="keeps no _receive/_send"):
        await entry(websocket=framework_websocket)
