"""``trio_asgi_ws.integrations.starlette`` in a Starlette app under a real ``python -m trio_asgi_ws``.

The app is ``tests.integration.framework_apps:starlette_app``; the clients are trio-websocket.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import starlette.endpoints
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from tests.integration.conftest import open_client
from tests.integration.framework_apps import describe, starlette_app
from tests.integration.framework_server import (
    DEADLINE,
    assert_plain_ticker_outlives_its_client,
    catches_reports,
    cli_server,
    measure_send_only_handler,
)
from trio_asgi_ws.integrations.starlette import StructuredEndpoint, WebSocketRoute

TARGET = "tests.integration.framework_apps:starlette_app"


@pytest.mark.parametrize("prefix", ["", "/mounted"])
async def test_endpoint_gets_the_structured_websocket_with_starlettes_path_params_and_lifespan_state(
    prefix: str,
) -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url(f"{prefix}/describe/lobby/3?x=1")) as ws:
                assert json.loads(await ws.get_message()) == {
                    "class": "trio_asgi_ws.websockets.WebSocket",
                    "path_params": {"room": ["lobby", "str"], "seat": [3, "int"]},  # Starlette's :int
                    "query": {"x": "1"},
                    "hub": "Broadcast",  # the hub opened in the app's lifespan
                }
                await ws.send_message("echo me")
                assert await ws.get_message() == "echo me"
        server.assert_no_errors()


async def test_send_only_endpoint_is_cancelled_when_its_client_leaves() -> None:
    async with cli_server(TARGET) as server:
        event, after = await measure_send_only_handler(server, "/ticker")
        assert event["ended"] == "Cancelled"  # cancelled, not ended by a failed send
        # The bound documented in docs/websocket.md is takeover_delay + 2 sends (~0.09 s here);
        # the assertion only has to show that it ended, so it is generous.
        assert after < DEADLINE, after
        server.assert_no_errors()


async def test_control_starlettes_own_websocket_keeps_sending_after_its_client_left() -> None:
    """Why the test above needs the integration: the same handler on Starlette's own WebSocket
    under hypercorn sends into the void and never ends."""
    async with cli_server(TARGET) as server:
        await assert_plain_ticker_outlives_its_client(server)


async def test_except_starlette_websocketdisconnect_never_runs_and_the_block_ends_quietly() -> None:
    async with cli_server(TARGET) as server:
        first, second = await catches_reports(server)
        assert first["clause"] == "passing through: trio_asgi_ws.exceptions.WebSocketDisconnect"
        assert second["clause"] == "finally"
        server.assert_no_errors()  # the disconnect ended the block: no 1011, nothing logged


async def test_starlette_websocket_exception_after_accept_closes_with_its_code() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/refuse/after")) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
        assert (info.value.reason.code, info.value.reason.reason) == (4001, "refused by the app")
        server.assert_no_errors()


async def test_starlette_websocket_exception_before_accept_rejects_the_handshake() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectionRejected) as info:
            async with open_client(server.url("/refuse/before")):
                pass
        assert info.value.status_code == 403
        server.assert_no_errors()


async def test_endpoint_error_closes_with_1011_and_is_logged_once_with_its_traceback() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/fails")) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
        assert info.value.reason.code == 1011
        logged = await server.wait_for_log("Error in WebSocket endpoint fails for /fails")
        assert len(logged) == 1
        await server.wait_for_log("ValueError: the endpoint failed on purpose")
        assert not [line for line in server.log if "Error in ASGI" in line]  # not re-raised to hypercorn


async def test_trio_asgi_ws_websocket_endpoint_class_runs_on_the_route() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/shout")) as ws:
                await ws.send_message("quiet")
                assert await ws.get_message() == "QUIET"
        server.assert_no_errors()


@pytest.mark.parametrize(
    ("path", "origin", "status"),
    [
        ("/describe/a/1", "https://evil.example", 403),  # cross-site WebSocket hijacking
        ("/describe/a/1", "http://127.0.0.1:{port}", 101),  # the app's own pages
        ("/pages-from-anywhere", "https://evil.example", 101),  # allowed_origins=["*"]
    ],
)
async def test_origin_policy_is_the_routers(path: str, origin: str, status: int) -> None:
    async with cli_server(TARGET) as server:
        headers = [("Origin", origin.format(port=server.port))]
        with trio.fail_after(DEADLINE):
            if status == 403:
                with pytest.raises(ConnectionRejected) as info:
                    async with open_client(server.url(path), extra_headers=headers):
                        pass
                assert info.value.status_code == 403
                await server.wait_for_log(
                    "Rejected WebSocket /describe/a/1 from origin 'https://evil.example'"
                )
            else:
                async with open_client(server.url(path), extra_headers=headers) as ws:
                    assert json.loads(await ws.get_message())["class"] == "trio_asgi_ws.websockets.WebSocket"


def test_route_refuses_starlettes_own_endpoint_class_and_non_callables() -> None:
    with pytest.raises(TypeError, match=r"trio_asgi_ws\.endpoints\.WebSocketEndpoint"):
        WebSocketRoute("/x", starlette.endpoints.WebSocketEndpoint)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async function"):
        WebSocketRoute("/x", "not a function")  # type: ignore[arg-type]


def test_route_keeps_starlettes_names_and_endpoint() -> None:
    assert starlette_app.url_path_for("describe", room="a", seat=1) == "/describe/a/1"
    route = WebSocketRoute("/d/{room}", describe)
    assert (route.name, route.endpoint) == ("describe", describe)


def test_importing_trio_asgi_ws_imports_neither_fastapi_nor_starlette() -> None:
    code = textwrap.dedent(
        """
        import sys
        import trio_asgi_ws, trio_asgi_ws.routing, trio_asgi_ws.broadcast, trio_asgi_ws.server
        import trio_asgi_ws.testing, trio_asgi_ws.endpoints, trio_asgi_ws.integrations
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("fastapi", "starlette"))
        assert not loaded, loaded
        import trio_asgi_ws.integrations.starlette
        assert "starlette" in sys.modules and "fastapi" not in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


async def test_sigterm_closes_a_send_only_starlette_endpoint_with_1001() -> None:
    async with cli_server(TARGET) as server:
        with trio.fail_after(DEADLINE):
            async with open_client(server.url("/ticker")) as ws:
                assert await ws.get_message() == "tick"
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
            assert await server.process.wait() == 0
        assert info.value.reason.code == 1001
        server.assert_no_errors()


async def test_structured_endpoint_refuses_other_scopes_and_a_missing_endpoint() -> None:
    async def receive() -> dict[str, object]:
        raise AssertionError("nothing may be received")

    async def send(message: object) -> None:
        raise AssertionError("nothing may be sent")

    runner = StructuredEndpoint(None, name="none")
    with pytest.raises(RuntimeError, match="no endpoint of its own"):
        await runner({"type": "websocket", "path": "/"}, receive, send)
    with pytest.raises(ValueError, match="got a 'http' scope"):
        await runner.run({"type": "http", "path": "/"}, receive, send, describe)
