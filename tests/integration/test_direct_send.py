"""The ``trio_asgi_ws.direct_send`` fan-out path against a real ``serve()`` and raw clients.

The server runs in-process (``served``), so the tests can count what the hub did: how many frames
went out directly, whole or in part, and whether the forward tasks ran at all.  The clients are
raw sockets that parse every frame, so an interleaved or truncated frame fails the test.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from tests.driver import TaskSteps
from tests.integration.attacks import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Frame,
    RawConnection,
    frame,
    handshake,
)
from tests.integration.conftest import ServeFactory
from tests.integration.served import served
from tests.leaks import no_leaked_tasks
from trio_asgi_ws import WebSocket
from trio_asgi_ws._direct_send import EXTENSION, PARTIAL, REFUSED, WHOLE, DirectSend
from trio_asgi_ws.broadcast import Broadcast, open_broadcast
from trio_asgi_ws.routing import Router

FORWARD = "forward"


def room_app(hub: Broadcast, **forward_options: Any) -> Router:
    """``/room``: forward topics "room" and "side" to the socket; on ``say N SIZE``, send N text
    messages of SIZE bytes from the handler too.  ``/close``: forward "room", then close (4000)
    as soon as the client sends anything, and keep forwarding for a while.  ``/ext``: report
    the extension."""
    app = Router()

    async def start_forward(nursery: trio.Nursery, ws: WebSocket, topic: str = "room") -> None:
        forward = partial(hub.forward, topic, ws, **forward_options)
        await nursery.start(forward, name=FORWARD)

    @app.websocket("/room")
    async def room(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            await start_forward(nursery, ws)
            await start_forward(nursery, ws, "side")
            await ws.send_text("ready")
            async for text in ws.iter_text():
                _, count, size = text.split(" ")
                for i in range(int(count)):
                    await ws.send_text(f"{i:06d}" + "m" * (int(size) - 6))
            nursery.cancel_scope.cancel()

    @app.websocket("/twice")
    async def twice(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            await start_forward(nursery, ws)
            await start_forward(nursery, ws)
            await ws.send_text("ready")
            async for _ in ws.iter_text():
                pass
            nursery.cancel_scope.cancel()

    @app.websocket("/close", structured=False)  # in a structured block, close() ends the block
    async def close_soon(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            await start_forward(nursery, ws)
            await ws.send_text("ready")
            await ws.receive_text()
            await ws.close(4000)
            await trio.sleep(0.1)  # forward lives on: the hub must not write after the close
            nursery.cancel_scope.cancel()

    @app.websocket("/ext")
    async def ext(ws: WebSocket) -> None:
        await ws.accept()
        extension = ws.scope["extensions"].get(EXTENSION)
        usable = isinstance(extension, DirectSend) and extension.usable
        await ws.send_json({"offered": extension is not None, "usable": usable})

    return app


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """What every ``DirectSend.write`` returned: ``WHOLE``, ``PARTIAL`` or ``REFUSED``."""
    counts: Counter[int] = Counter()
    original: Callable[[DirectSend, bytes], int] = DirectSend.write

    def counting(self: DirectSend, data: bytes) -> int:
        result = original(self, data)
        counts[result] += 1
        return result

    monkeypatch.setattr(DirectSend, "write", counting)
    return counts


async def next_frame(connection: RawConnection) -> Frame | None:
    """The server's next frame that is not a ping (None once the TCP connection ended)."""
    while (received := await connection.receive_frame()) is not None and received.opcode == OP_PING:
        pass
    return received


def first_payload(received: Frame | None) -> bytes:
    """The payload of a connection's first message, inflated if it was compressed."""
    assert received is not None
    if not received.rsv1:
        return received.payload
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(received.payload + b"\x00\x00\xff\xff")


async def join(port: int, path: str = "/room", **options: Any) -> RawConnection:
    connection = await handshake(port, path, **options)
    assert first_payload(await next_frame(connection)) == b"ready"
    return connection


async def ext_report(port: int, **options: Any) -> Any:
    async with await handshake(port, "/ext", **options) as connection:
        return json.loads(first_payload(await next_frame(connection)))


async def test_serve_offers_direct_send_and_a_compressed_connection_cannot_use_it() -> None:
    async with open_broadcast() as hub, served(room_app(hub)) as server:
        assert await ext_report(server.port) == {"offered": True, "usable": True}
    async with open_broadcast() as hub, served(room_app(hub), compression="deflate") as server:
        assert await ext_report(server.port, extensions="permessage-deflate") == {
            "offered": True,
            "usable": False,
        }
        assert await ext_report(server.port) == {"offered": True, "usable": True}
        async with await join(server.port, extensions="permessage-deflate") as client:
            await hub.publish("room", "hello " * 100)
            received = await next_frame(client)
            assert received is not None and received.rsv1  # compressed: sent the ASGI way


async def test_plain_hypercorn_does_not_offer_it_and_the_hub_still_delivers(serve: ServeFactory) -> None:
    async with open_broadcast() as hub:
        server = await serve(room_app(hub))
        assert await ext_report(server.port) == {"offered": False, "usable": False}
        async with await join(server.port) as client:
            await hub.publish("room", "hello")
            received = await next_frame(client)
            assert received is not None and received.payload == b"hello"


SMALL = [0, 1, 125, 126, 1000]
LARGE = [65_535, 65_536, 300_000]


def text_of(size: int) -> str:
    """``size`` bytes of UTF-8, two-byte characters included."""
    return "é" * (size // 2) + "x" * (size % 2)


def bytes_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"z" * (size % 256)


async def test_frames_written_directly_arrive_whole_in_order_and_wake_no_forward_task(
    writes: Counter[int],
) -> None:
    async with open_broadcast() as hub, served(room_app(hub)) as server:
        clients = [await join(server.port) for _ in range(3)]
        steps = TaskSteps(FORWARD)
        trio.lowlevel.add_instrument(steps)
        try:
            for size in SMALL:  # an idle socket's send buffer takes them whole
                await hub.publish("room", text_of(size))
                await hub.publish("room", bytes_of(size))
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert (writes[WHOLE], writes[PARTIAL], writes[REFUSED]) == (3 * 2 * len(SMALL), 0, 0)
        assert steps.steps == 0
        for size in LARGE:  # in part, some of them: the forward task flushes the tails
            await hub.publish("room", text_of(size))
            await hub.publish("room", bytes_of(size))
        for client in clients:
            for size in SMALL + LARGE:
                text = await next_frame(client)
                binary = await next_frame(client)
                assert text is not None and text.opcode == OP_TEXT and text.fin
                assert text.payload.decode() == text_of(size)
                assert binary is not None and binary.opcode == OP_BINARY and binary.fin
                assert binary.payload == bytes_of(size)
            await client.aclose()


async def read_all(client: RawConnection, hub_count: int, own_count: int, pause: float) -> tuple[
    list[bytes], list[bytes]
]:
    """Read (``pause`` seconds per frame) until ``hub_count`` binary and ``own_count`` text
    messages came, each in a single whole frame."""
    hub_messages: list[bytes] = []
    own: list[bytes] = []
    while len(hub_messages) < hub_count or len(own) < own_count:
        received = await next_frame(client)
        assert received is not None and received.fin
        if received.opcode == OP_BINARY:
            hub_messages.append(received.payload)
        else:
            assert received.opcode == OP_TEXT
            own.append(received.payload)
        await trio.sleep(pause)
    return hub_messages, own


def numbered(i: int, size: int) -> bytes:
    return f"{i:06d}".encode() * (size // 6)


async def test_direct_frames_never_split_the_handlers_own_big_messages(writes: Counter[int]) -> None:
    """The handler sends big messages (hypercorn writes each in several pieces, holding its send
    lock in between) while small ones are published: a direct write never lands mid-frame."""
    async with open_broadcast() as hub, served(room_app(hub)) as server, trio.open_nursery() as nursery:
        client = await join(server.port, rcvbuf=65536)
        results: list[tuple[list[bytes], list[bytes]]] = []

        async def reader() -> None:
            results.append(await read_all(client, 200, 30, 0))

        nursery.start_soon(reader)
        await client.send(frame(OP_TEXT, b"say 30 300000"))
        for i in range(200):
            await hub.publish("room", numbered(i, 1200))
            await trio.sleep(0.002)
    ((hub_messages, own),) = results
    assert hub_messages == [numbered(i, 1200) for i in range(200)]
    assert own == [f"{i:06d}".encode() + b"m" * (300_000 - 6) for i in range(30)]
    assert writes[WHOLE] > 0
    await client.aclose()


async def test_partly_written_frames_are_finished_before_any_other_frame(writes: Counter[int]) -> None:
    """A slow reader with a small window, two topics forwarded to it, and pings: big frames go
    out in part, and each tail is flushed before another frame starts, by the forward task or
    by the next write on the socket."""
    big = 200_000
    async with open_broadcast() as hub, served(
        room_app(hub, max_buffer=1000), ping_interval=0.01
    ) as server, trio.open_nursery() as nursery:
        client = await join(server.port, rcvbuf=8192)
        results: list[tuple[list[bytes], list[bytes]]] = []

        async def reader() -> None:
            results.append(await read_all(client, 60, 0, 0.001))

        nursery.start_soon(reader)
        for i in range(60):
            await hub.publish("room" if i % 2 else "side", numbered(i, big))
            await trio.sleep(0.005)
    ((hub_messages, _),) = results
    assert sorted(hub_messages) == [numbered(i, big) for i in range(60)]
    for topic in (0, 1):  # each topic in order
        mine = [message for message in hub_messages if int(message[:6]) % 2 == topic]
        assert mine == sorted(mine)
    assert writes[PARTIAL] > 0
    await client.aclose()


async def test_a_frame_left_in_part_is_finished_before_the_next_subscription_writes(
    writes: Counter[int],
) -> None:
    """One socket subscribed twice to a topic: each message is written for the first
    subscription, maybe in part, and then at once (no checkpoint between) for the second."""
    big = 100_000
    async with open_broadcast() as hub, served(room_app(hub)) as server, trio.open_nursery() as nursery:
        client = await join(server.port, path="/twice", rcvbuf=8192)
        results: list[tuple[list[bytes], list[bytes]]] = []

        async def reader() -> None:
            results.append(await read_all(client, 40, 0, 0.001))

        nursery.start_soon(reader)
        for i in range(20):
            await hub.publish("room", numbered(i, big))
            await trio.sleep(0.01)
    ((hub_messages, _),) = results
    assert hub_messages == [numbered(i // 2, big) for i in range(40)]
    assert writes[PARTIAL] > 0
    await client.aclose()


async def test_nothing_is_written_after_the_handler_closes(writes: Counter[int]) -> None:
    """The client keeps reading, so the socket stays idle and the hub writes to it directly up
    to the moment the handler closes (and its forward task lives on): then nothing follows the
    close frame."""
    async with open_broadcast() as hub, served(room_app(hub)) as server, trio.open_nursery() as nursery:
        client = await join(server.port, path="/close")
        frames: list[Frame] = []

        async def read_until_the_close() -> None:
            while (received := await next_frame(client)) is not None:
                frames.append(received)
                if received.opcode == OP_CLOSE:
                    return

        async def publish_forever() -> None:
            while True:
                await hub.publish("room", "x" * 1000)
                await trio.sleep(0.001)

        nursery.start_soon(publish_forever)
        async with trio.open_nursery() as reading:
            reading.start_soon(read_until_the_close)
            await trio.sleep(0.05)
            await client.send(frame(OP_TEXT, b"close now"))
        *data, close = frames
        assert close.opcode == OP_CLOSE and close.close_code == 4000
        assert data and all(received.payload == b"x" * 1000 for received in data)
        assert writes[WHOLE] >= len(data) > 10
        await trio.sleep(0.15)  # the hub keeps publishing, the forward task keeps living
        await client.send(frame(OP_CLOSE, b"\x0f\xa0"))
        assert await next_frame(client) is None  # nothing after the close frame; then EOF
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_a_stalled_client_falls_back_to_its_buffer_and_is_dropped_while_the_others_get_all(
    writes: Counter[int],
) -> None:
    async with (
        open_broadcast() as hub,
        served(room_app(hub, max_buffer=20), send_timeout=1.0) as server,
        no_leaked_tasks(),  # every connection's tasks end, the stalled one's included
    ):
        open_files = len(os.listdir("/proc/self/fd"))
        readers = [await join(server.port) for _ in range(4)]
        stalled = await join(server.port, rcvbuf=4096)
        got: list[list[bytes]] = [[] for _ in readers]

        async def read(index: int) -> None:
            while len(got[index]) < 300:
                received = await next_frame(readers[index])
                assert received is not None
                got[index].append(received.payload)

        async with trio.open_nursery() as nursery:
            for index in range(len(readers)):
                nursery.start_soon(read, index)
            for i in range(300):
                await hub.publish("room", f"{i:04d}".encode() * 1000)
        expected = [f"{i:04d}".encode() * 1000 for i in range(300)]
        assert all(messages == expected for messages in got)
        assert writes[REFUSED] + writes[PARTIAL] > 0  # the stalled socket's
        for _ in range(100):  # dropped after the 1 s send timeout: its handler ends
            if hub.subscribers("room") == len(readers):
                break
            await trio.sleep(0.05)
        assert hub.subscribers("room") == len(readers)
        for client in [*readers, stalled]:
            await client.aclose()
        for _ in range(100):  # the server closes its side as each handler ends
            if len(os.listdir("/proc/self/fd")) <= open_files:
                break
            await trio.sleep(0.05)
        assert len(os.listdir("/proc/self/fd")) <= open_files


async def test_direct_writes_count_as_sent_messages_in_the_metrics(writes: Counter[int]) -> None:
    """Frames the hub writes itself are the connection's sent messages (payload bytes, as the
    ASGI path counts them), for ``messages_sent_total`` and the connection log alike."""
    from tests.integration.metrics_scrape import free_port, scrape, value
    from trio_asgi_ws.metrics import PREFIX

    port = free_port()
    async with open_broadcast() as hub, served(room_app(hub), metrics_port=port) as server:
        clients = [await join(server.port) for _ in range(2)]  # each got "ready" the ASGI way
        sizes = (10, 200, 70_000)  # 2-, 4- and 10-byte frame headers
        for size in sizes:
            await hub.publish("room", bytes_of(size))
        for client in clients:
            for size in sizes:
                frame = await next_frame(client)
                assert frame is not None and len(frame.payload) == size
        assert writes[WHOLE] + writes[PARTIAL] == 2 * len(sizes)  # all written directly
        samples = await scrape(port)
        assert value(samples, PREFIX + "messages_sent_total") == 2 * (1 + len(sizes))
        assert value(samples, PREFIX + "sent_bytes_total") == 2 * (len("ready") + sum(sizes))
        for client in clients:
            await client.aclose()
