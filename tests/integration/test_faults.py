"""Faults against a real server: clients that vanish, handlers that raise, Redis that dies.

Each test runs ``serve()`` in-process (``served(app)``), so the server's tasks live in the test's
own trio run and ``tests.leaks.no_leaked_tasks`` can count them: after every fault the run's live
tasks must come back to what they were before it, and a fresh client must still get an echo.
Clients are raw sockets (``tests.integration.attacks``): they can stop at any byte, and a reset
(SO_LINGER 0) is how a crashed client or a dropped network looks to the server.  Where a test
needs the server to have reached a point (read the request, started writing), it watches the
server's socket queues in /proc rather than sleeping.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from tests.integration import attacks
from tests.integration.redis_server import RedisServer
from tests.integration.served import router_with_an_echo, served
from tests.leaks import no_leaked_tasks
from trio_asgi_ws import WebSocket
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.routing import Router

DEADLINE = 5.0
DENIAL_BODY = 8 * attacks.MiB
"""Far more than a small receive window and the loopback send buffer hold: the write stays open."""
SMALL_RCVBUF = 4096
LEAK_WITHIN = 2.0
"""Seconds a fault's leftover tasks get to end: cleanup here takes milliseconds, a leak forever."""


class Boom(Exception):
    """The unexpected error a handler raises in these tests."""


# -- raw clients and what the server's sockets show ---------------------------------------------


def upgrade_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def connect(port: int, *, rcvbuf: int | None = None) -> attacks.RawConnection:
    """A TCP connection to the server, nothing sent yet (``status`` 0: no handshake)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is sized for it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with trio.fail_after(DEADLINE):
        await sock.connect(("127.0.0.1", port))
    return attacks.RawConnection(trio.SocketStream(sock), status=0, headers={})


def server_queues(port: int, client_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) of the server's socket for the client on ``client_port``.

    ``None`` once the server has let go of the connection.
    """
    return attacks.tcp_queues(os.getpid(), port).get(client_port)


async def wait_until(predicate: Callable[[], bool], within: float = DEADLINE) -> None:
    """Poll ``predicate()`` until true (the kernel's socket queues fire no event)."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def next_data_frame(conn: attacks.RawConnection) -> attacks.Frame | None:
    """The server's next frame that is not a ping (serve() pings every connection at once)."""
    received = await conn.receive_frame()
    while received is not None and received.opcode == attacks.OP_PING:
        received = await conn.receive_frame()
    return received


async def echo_answers(port: int) -> None:
    """A fresh client gets its echo and a clean close: the server is still serving."""
    with trio.fail_after(DEADLINE):
        async with await attacks.handshake(port, "/echo") as conn:
            await conn.send(attacks.frame(attacks.OP_TEXT, b"still there?"))
            echoed = await next_data_frame(conn)
            assert echoed is not None
            assert (echoed.opcode, echoed.payload) == (attacks.OP_TEXT, b"still there?")
            await conn.send(attacks.close_frame(1000))
            closed = await attacks.read_close(conn, within=DEADLINE)
            assert closed.code == 1000
            assert closed.tcp_closed


async def response_body(conn: attacks.RawConnection) -> bytes:
    """The body of the HTTP response ``conn`` got instead of a 101 (``content-length`` bytes)."""
    size = int(conn.headers["content-length"])
    with trio.fail_after(DEADLINE):
        while len(conn.buffer) < size:
            data = await conn.stream.receive_some()
            assert data, f"EOF after {bytes(conn.buffer)!r}"
            conn.buffer += data
    return bytes(conn.buffer)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


# -- 1. clients that vanish -----------------------------------------------------------------------

# Rejections and failed sends exercise fix 8 in _hypercorn_fixes: hypercorn puts
# ``websocket.disconnect`` in the app's one-slot queue from inside the app's own send or its final
# send(None), which waited forever when a message the app never reads filled the slot.
KEEP_ALIVE = 1
"""hypercorn's keep_alive_timeout for the vanishing clients' server (its default is 5 s).

A connection that ends before its request is complete is held that long: hypercorn's idle timer
is stopped by a complete request only.  Bounded, so not a leak; shortened to stay within
``LEAK_WITHIN``."""


@dataclass
class Gate:
    """Holds ``/gated``'s handler before its accept until the test opens it."""

    entered: trio.Event = field(default_factory=trio.Event)
    opened: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)


async def _large_denial(
    scope: object, receive: object, send: Callable[[dict[str, object]], Awaitable[None]]
) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(DENIAL_BODY).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": b"x" * DENIAL_BODY})


def vanishing_app(gate: Gate) -> Router:
    app = Router()

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    async def gated(ws: WebSocket) -> None:
        try:
            gate.entered.set()
            await gate.opened.wait()
            await ws.accept()
            async for text in ws.iter_text():
                await ws.send_text(text)
        finally:
            gate.ended.set()

    async def deny(ws: WebSocket) -> None:
        await ws.send_denial_response(_large_denial)

    async def close_before_accept(ws: WebSocket) -> None:
        await ws.close(4000)

    for path, endpoint in [("/echo", echo), ("/deny", deny), ("/refuse", close_before_accept)]:
        app.add_websocket_route(path, endpoint)
        app.add_websocket_route(path + "-plain", endpoint, structured=False)
    app.add_websocket_route("/gated", gated)
    return app


async def reset_mid_frame(port: int, gate: Gate) -> None:
    await attacks.reset_mid_frame(port, "/echo")


def reset_while_the_server_sends(path: str) -> Callable[[int, Gate], Awaitable[None]]:
    """The echo of a big message is stuck on a client that stopped reading (and sent more); reset."""

    async def vanish(port: int, gate: Gate) -> None:
        conn = await attacks.handshake(port, path, rcvbuf=SMALL_RCVBUF)
        await conn.send(attacks.frame(attacks.OP_TEXT, b"y" * (900 * attacks.KiB)))
        for _ in range(3):
            await conn.send(attacks.frame(attacks.OP_TEXT, b"more"))
        await wait_until(lambda: (server_queues(port, conn.local_port) or (0, 0))[0] > 0)
        with trio.fail_after(DEADLINE):
            await trio.testing.wait_all_tasks_blocked()  # the server has read all it will
        await conn.abort()

    return vanish


async def reset_mid_request(port: int, gate: Gate) -> None:
    """Half the upgrade request, read by the server, then a reset."""
    conn = await connect(port)
    request = upgrade_request(port, "/echo")
    await conn.send(request[: len(request) // 2])
    await wait_until(lambda: server_queues(port, conn.local_port) == (0, 0))  # held, and all read
    await conn.abort()


async def reset_before_the_handler_accepts(port: int, gate: Gate) -> None:
    """The whole request; the client resets while the handler has not accepted; then it accepts."""
    conn = await connect(port)
    client_port = conn.local_port
    await conn.send(upgrade_request(port, "/gated"))
    with trio.fail_after(DEADLINE):
        await gate.entered.wait()
    await conn.abort()
    await wait_until(lambda: server_queues(port, client_port) is None)  # the server saw the reset
    gate.opened.set()
    with trio.fail_after(DEADLINE):
        await gate.ended.wait()


async def reset_with_the_101_unread(port: int, gate: Gate) -> None:
    conn = await connect(port)
    await conn.send(upgrade_request(port, "/echo"))
    with trio.fail_after(DEADLINE):
        await trio.lowlevel.wait_readable(conn.stream.socket)  # the 101 is here: don't read it
    await conn.abort()


def reset_during_the_denial(path: str) -> Callable[[int, Gate], Awaitable[None]]:
    """The server is writing a denial response too big for the client's window; reset."""

    async def vanish(port: int, gate: Gate) -> None:
        conn = await connect(port, rcvbuf=SMALL_RCVBUF)
        await conn.send(upgrade_request(port, path))
        await wait_until(lambda: (server_queues(port, conn.local_port) or (0, 0))[0] > 0)
        await conn.abort()

    return vanish


def reset_after_the_refusal(path: str) -> Callable[[int, Gate], Awaitable[None]]:
    """The client reads the refusal (403), and resets once the handler has finished."""

    async def vanish(port: int, gate: Gate) -> None:
        conn = await attacks.handshake(port, path, check=False)
        assert conn.status == 403
        await response_body(conn)
        with trio.fail_after(DEADLINE):
            await trio.testing.wait_all_tasks_blocked()  # the handler has returned
        await conn.abort()

    return vanish


@pytest.mark.parametrize(
    "vanish",
    [
        pytest.param(reset_mid_frame, id="reset mid-frame"),
        pytest.param(reset_while_the_server_sends("/echo"), id="reset while the server sends"),
        pytest.param(reset_while_the_server_sends("/echo-plain"), id="reset while the server sends, plain"),
        pytest.param(reset_mid_request, id="reset mid-request"),
        pytest.param(reset_before_the_handler_accepts, id="reset before accept"),
        pytest.param(reset_with_the_101_unread, id="reset with the 101 unread"),
        pytest.param(reset_during_the_denial("/deny"), id="reset during a denial response"),
        pytest.param(reset_during_the_denial("/deny-plain"), id="reset during a denial response, plain"),
        pytest.param(reset_after_the_refusal("/refuse"), id="reset after a close before accept"),
        pytest.param(reset_after_the_refusal("/refuse-plain"), id="reset after a close before accept, plain"),
        pytest.param(
            reset_after_the_refusal("/nowhere"), id="reset after the router refused an unknown path"
        ),
    ],
)
async def test_a_client_that_vanishes_leaves_no_task_and_no_error_behind(
    vanish: Callable[[int, Gate], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    async with served(vanishing_app(gate), keep_alive_timeout=KEEP_ALIVE) as server:
        async with no_leaked_tasks(LEAK_WITHIN):
            await vanish(server.port, gate)
        async with no_leaked_tasks(LEAK_WITHIN):
            await echo_answers(server.port)
    assert errors_logged(caplog) == []  # a client leaving is not the server's error


# -- 2. handlers that raise -----------------------------------------------------------------------

STEPS = ("accept", "receive", "send", "receive", "send")
"""What the handler under test awaits, in order; it raises just before step ``fail_at``."""
FAIL_POINTS = {
    0: "before accept",
    1: "after accept",
    2: "after the first receive",
    3: "after the first send",
    4: "after the second receive",
    5: "after the last send",
}


def raising_app(fail_at: int, *, structured: bool) -> Router:
    app = router_with_an_echo()

    async def handler(ws: WebSocket) -> None:
        received = ""
        for index, step in enumerate(STEPS):
            if index == fail_at:
                raise Boom(f"raised {FAIL_POINTS[fail_at]}")
            if step == "accept":
                await ws.accept()
            elif step == "receive":
                received = await ws.receive_text()
            else:
                await ws.send_text(received)
        raise Boom(f"raised {FAIL_POINTS[fail_at]}")

    app.add_websocket_route("/fail", handler, structured=structured)
    return app


@pytest.mark.parametrize("structured", [True, False], ids=["structured", "plain"])
@pytest.mark.parametrize(
    "fail_at",
    [
        pytest.param(
            index,
            id=where,
        )
        for index, where in FAIL_POINTS.items()
    ],
)
async def test_a_handler_raising_at_any_await_closes_1011_or_answers_500_and_logs_once(
    fail_at: int, structured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(raising_app(fail_at, structured=structured)) as server:
        async with no_leaked_tasks(LEAK_WITHIN):
            conn = await attacks.handshake(server.port, "/fail", check=False)
            async with conn:
                if fail_at == 0:  # before accept: HTTP 500 (hypercorn supports denial responses)
                    assert conn.status == 500
                    assert await response_body(conn) == b"Internal Server Error"
                    with trio.fail_after(DEADLINE):
                        await trio.testing.wait_all_tasks_blocked()  # the handler has returned
                else:
                    assert conn.status == 101
                    await conn.send(attacks.frame(attacks.OP_TEXT, b"one"))
                    await conn.send(attacks.frame(attacks.OP_TEXT, b"two"))
                    sent = STEPS[:fail_at].count("send")
                    for expected in (b"one", b"two")[:sent]:
                        echoed = await next_data_frame(conn)
                        assert echoed is not None and echoed.payload == expected
                    closed = await attacks.read_close(conn, within=DEADLINE)
                    assert closed.code == 1011, closed.describe()
                    assert closed.tcp_closed, closed.describe()
        async with no_leaked_tasks(LEAK_WITHIN):
            await echo_answers(server.port)
    logged = errors_logged(caplog)
    assert len(logged) == 1, logged
    assert logged[0].startswith("Error in WebSocket endpoint handler for /fail")
    assert f"Boom: raised {FAIL_POINTS[fail_at]}" in logged[0]


# -- 3. Redis killed and restarted while publishing -----------------------------------------------


@dataclass
class Publisher:
    """Publishes 0, 1, 2, ... on a topic every ``interval``; notes which were lost and when."""

    hub: Broadcast
    topic: str
    interval: float = 0.005
    published: int = 0
    lost: list[int] = field(default_factory=list)
    while_down: list[int] = field(default_factory=list)
    redis_down: bool = False

    async def run(self) -> None:
        while True:
            number, down, before = self.published, self.redis_down, self.hub.lost
            await self.hub.publish(self.topic, str(number))
            self.published += 1
            if self.hub.lost > before:
                self.lost.append(number)
            if down and self.redis_down:
                self.while_down.append(number)
            await trio.sleep(self.interval)


def forwarding_app(hub: Broadcast) -> Router:
    app = router_with_an_echo()

    @app.websocket("/topic/{name}")
    async def subscriber(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.forward, ws.path_params["name"], ws)
            async for _ in ws.iter_text():
                pass  # the client never talks; this sees it leave
            nursery.cancel_scope.cancel()

    return app


async def numbers(conn: attacks.RawConnection, until: Callable[[int], bool], seen: list[int]) -> None:
    """Read the forwarded numbers into ``seen`` until one satisfies ``until``."""
    while True:
        received = await next_data_frame(conn)
        assert received is not None and received.opcode == attacks.OP_TEXT, received
        seen.append(int(received.payload))
        if until(seen[-1]):
            return


async def test_redis_killed_and_restarted_while_publishing_loses_only_what_it_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        RedisServer() as redis,
        open_broadcast(redis.url) as hub,
        served(forwarding_app(hub)) as server,
    ):
        await hub.publish("warm-up", "")  # coredis opens its publishing connection on first use
        publisher = Publisher(hub, "prices")
        seen: list[int] = []
        async with (
            no_leaked_tasks(LEAK_WITHIN),  # the subscriber, from its handshake to its close
            await attacks.handshake(server.port, "/topic/prices") as conn,
        ):
            async with trio.open_nursery() as nursery:
                await wait_until(lambda: hub.subscribers("prices") == 1)
                nursery.start_soon(publisher.run)
                with trio.fail_after(3 * DEADLINE):
                    await numbers(conn, lambda n: n >= 20, seen)  # delivery runs
                    async with no_leaked_tasks(LEAK_WITHIN):  # nor do the outage and reconnection
                        await redis.stop()
                        publisher.redis_down = True  # from here to start() no publish can succeed
                        await hub.wait_for_status("reconnecting")
                        down_since = publisher.published
                        await wait_until(lambda: publisher.published >= down_since + 20)
                        assert hub.status == "reconnecting"
                        publisher.redis_down = False
                        await redis.start()
                        await hub.wait_for_status("connected")
                        resumed_from = publisher.published
                        await numbers(conn, lambda n: n >= resumed_from + 20, seen)
                nursery.cancel_scope.cancel()
            await conn.send(attacks.close_frame(1000))
            closed = await attacks.read_close(conn, within=DEADLINE)
            assert closed.code == 1000
        assert hub.subscribers("prices") == 0  # its handler ended, and unsubscribed

        # At most once: no duplicate, no reordering, nothing counted lost was delivered.
        assert seen == sorted(set(seen)), seen
        assert not set(seen) & set(publisher.lost)
        # Everything published while Redis was down was lost, and counted.
        assert len(publisher.while_down) >= 20
        assert set(publisher.while_down) <= set(publisher.lost)
        assert hub.lost == len(publisher.lost)
        # Delivery resumed: everything published since the hub reconnected arrived, in order.
        assert [n for n in seen if n >= resumed_from] == list(range(resumed_from, seen[-1] + 1))
        await echo_answers(server.port)
    assert "broadcast resumed" in caplog.text
    assert errors_logged(caplog) == []
