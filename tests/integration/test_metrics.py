"""Every metric of ``trio_asgi_ws.metrics`` moved by real clients against a real served app.

Each test serves a ``Router`` with ``serve(..., metrics_port=...)`` in-process, does what should
move one figure, and reads it back from the server's own ``/metrics`` port over HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, ConnectionRejected

from tests.integration import attacks
from tests.integration.conftest import DEADLINE, open_client
from tests.integration.metrics_scrape import free_port, get, scrape, value, wait_for
from tests.integration.served import router_with_an_echo, served
from trio_asgi_ws import WebSocket
from trio_asgi_ws.metrics import METRICS, PREFIX
from trio_asgi_ws.routing import Router

P = PREFIX


def app_for_metrics() -> Router:
    app = router_with_an_echo()

    @app.websocket("/close/{code:int}")
    async def close(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        await ws.close(ws.path_params["code"])

    @app.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        await ws.close()

    @app.websocket("/fail")
    async def fail(ws: WebSocket) -> None:
        raise RuntimeError("before accept")

    @app.websocket("/only-from", allowed_origins=["https://good.example"])
    async def only_from(ws: WebSocket) -> None:
        await ws.accept()

    @app.websocket("/talker")
    async def talker(ws: WebSocket) -> None:  # sends without receiving: the pump takes over
        await ws.accept()
        while True:
            await ws.send_text("tick")
            await trio.sleep(0.06)  # longer than takeover_delay, so the second send takes over

    @app.websocket("/slow", websocket_options={"max_buffered_messages": 2})
    async def slow(ws: WebSocket) -> None:  # never reads again: the client overflows its buffer
        await ws.accept()
        while True:
            await ws.send_text("busy")
            await trio.sleep(0.06)

    return app


class metrics_server(served):
    """``served(app, metrics_port=<free>)`` with ``metrics_port`` kept; no pings by default
    (trio-websocket 0.12 fails answering one that arrives while it is closing)."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.metrics_port = free_port()
        options.setdefault("ping_interval", None)
        super().__init__(app, metrics_port=self.metrics_port, **options)


async def test_metrics_port_serves_every_metric_in_prometheus_text_format() -> None:
    async with metrics_server(app_for_metrics()) as server:
        status, headers, body = await get(server.metrics_port)
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        families = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE")}
        assert families == set(METRICS)
        assert (await get(server.metrics_port, "/other"))[0] == 404
        assert (await get(server.metrics_port, method="POST"))[0] == 405


async def test_a_conversation_moves_accepted_open_messages_bytes_and_closes() -> None:
    async with metrics_server(app_for_metrics()) as server:
        async with open_client(server.url("/echo")) as ws:
            for text in ("hello", "naïve €"):  # 5 B, then 10 B in UTF-8 (7 characters)
                await ws.send_message(text)
                assert await ws.get_message() == text
            live = await scrape(server.metrics_port)
            assert value(live, P + "connections_open") == 1
            assert value(live, P + "messages_received_total") == 2  # counted while still open
        samples = await wait_for(
            server.metrics_port, lambda s: value(s, P + "closes_total", code="1000", side="client") == 1
        )
    assert value(samples, P + "connections_open") == 0
    assert value(samples, P + "connections_accepted_total") == 1
    assert value(samples, P + "messages_received_total") == 2
    assert value(samples, P + "messages_sent_total") == 2
    assert value(samples, P + "received_bytes_total") == 15
    assert value(samples, P + "sent_bytes_total") == 15


async def test_a_server_close_is_counted_with_its_code_on_the_server_side() -> None:
    async with metrics_server(app_for_metrics()) as server:
        async with open_client(server.url("/close/4001")) as ws:
            await ws.send_message("close please")
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await wait_for(
            server.metrics_port, lambda s: value(s, P + "closes_total", code="4001", side="server") == 1
        )


async def test_an_abrupt_reset_is_a_1006_from_the_client() -> None:
    async with metrics_server(app_for_metrics()) as server:
        async with await attacks.handshake(server.port, "/echo") as conn:
            await conn.abort()
        await wait_for(
            server.metrics_port, lambda s: value(s, P + "closes_total", code="1006", side="client") == 1
        )


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        ("/nowhere", (), "no_route"),
        ("/only-from", (("Origin", "https://evil.example"),), "origin"),
        ("/deny", (), "denial"),
        ("/fail", (), "error"),
    ],
)
async def test_rejections_are_counted_by_reason(
    path: str, headers: tuple[tuple[str, str], ...], reason: str
) -> None:
    async with metrics_server(app_for_metrics()) as server:
        with pytest.raises(ConnectionRejected):
            async with open_client(server.url(path), extra_headers=list(headers)):
                pass
        samples = await wait_for(
            server.metrics_port,
            lambda s: value(s, P + "connections_rejected_total", reason=reason) == 1,
        )
    rejected = [key for key in samples if key[0] == P + "connections_rejected_total"]
    assert len(rejected) == 1  # that reason and no other
    assert value(samples, P + "connections_accepted_total") == 0


async def test_a_new_websocket_during_shutdown_is_rejected_for_shutdown() -> None:
    app = app_for_metrics()
    release = trio.Event()

    @app.websocket("/linger")
    async def linger(ws: WebSocket) -> None:  # holds the shutdown open until the test releases it
        await ws.accept()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await release.wait()

    async with metrics_server(app, graceful_timeout=DEADLINE) as server:
        try:
            async with open_client(server.url("/linger")):
                server.trigger.set()  # the shutdown waits for /linger's handler: the listener stays up
                with pytest.raises(ConnectionRejected):  # refused by the shutdown (HTTP 403)
                    async with open_client(server.url("/echo")):
                        pass
                await wait_for(
                    server.metrics_port,
                    lambda s: value(s, P + "connections_rejected_total", reason="shutdown") == 1,
                )
        finally:
            release.set()


async def test_a_send_only_handler_moves_pump_takeovers() -> None:
    async with metrics_server(app_for_metrics()) as server, open_client(server.url("/talker")) as ws:
        for _ in range(4):
            assert await ws.get_message() == "tick"
        await wait_for(server.metrics_port, lambda s: value(s, P + "pump_takeovers_total") >= 1)


async def test_a_client_outrunning_the_receive_buffer_moves_overflows_and_closes_1008() -> None:
    async with metrics_server(app_for_metrics()) as server:
        async with open_client(server.url("/slow")) as ws:
            with trio.fail_after(DEADLINE), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.send_message("flood")
                    await trio.sleep(0.01)
            assert closed.value.reason.code == 1008
        samples = await wait_for(
            server.metrics_port, lambda s: value(s, P + "closes_total", code="1008", side="server") == 1
        )
    assert value(samples, P + "receive_buffer_overflows_total") == 1


async def test_an_oversized_message_is_a_drop_for_oversize() -> None:
    async with metrics_server(app_for_metrics(), max_message_size=1024) as server:
        result = await attacks.oversized_message_attack(server.port, 64 * 1024, path="/echo", chunk=4096)
        assert result.close.code == 1009
        samples = await wait_for(
            server.metrics_port, lambda s: value(s, P + "connections_dropped_total", reason="oversize") == 1
        )
    assert value(samples, P + "closes_total", code="1009", side="server") == 1


async def test_a_malformed_frame_is_a_drop_for_protocol_error() -> None:
    async with metrics_server(app_for_metrics()) as server:
        async with await attacks.handshake(server.port, "/echo") as conn:
            await conn.send(attacks.frame(attacks.OP_TEXT, b"caf\xc3("))
            assert (await attacks.read_close(conn, within=DEADLINE)).code == 1007
        await wait_for(
            server.metrics_port,
            lambda s: value(s, P + "connections_dropped_total", reason="protocol_error") == 1,
        )


async def test_a_client_that_never_reads_is_a_drop_for_send_timeout() -> None:
    async with (
        metrics_server(app_for_metrics(), send_timeout=0.5) as server,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(  # the echo gets stuck sending to it (or it is dropped while writing)
            lambda task_status: attacks.never_read_client(
                server.port, "/echo", message_size=256 * 1024, text=True, task_status=task_status
            )
        )
        samples = await wait_for(
            server.metrics_port,
            lambda s: value(s, P + "connections_dropped_total", reason="send_timeout") == 1,
        )
        nursery.cancel_scope.cancel()
    assert value(samples, P + "closes_total", code="1006", side="server") == 1


async def test_a_silent_client_is_a_drop_for_read_timeout() -> None:
    async with (
        metrics_server(app_for_metrics(), read_timeout=1, ping_interval=None) as server,
        await attacks.handshake(server.port, "/echo") as conn,
    ):
        await wait_for(
            server.metrics_port,
            lambda s: value(s, P + "connections_dropped_total", reason="read_timeout") == 1,
        )
        assert (await attacks.read_close(conn, within=DEADLINE)).tcp_closed
