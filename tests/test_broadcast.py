"""The broadcast hub on the memory backend: policies, counters, order, presence, sockets."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
import trio
import trio.testing

from tests.driver import serve_app, websocket_scope
from trio_asgi_ws import WebSocket
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws.broadcast import BroadcastMessage, SubscriberTooSlow, open_broadcast
from trio_asgi_ws.routing import Router
from trio_asgi_ws.testing import connect


async def drain(subscription: Any) -> list[Any]:
    """Everything buffered right now, without waiting for more."""
    got = []
    while subscription.buffered:
        got.append((await subscription.receive()).data)
    return got


async def test_publish_reaches_every_subscriber_encoded_once() -> None:
    async with open_broadcast() as hub, hub.subscribe("t") as first, hub.subscribe("t") as second:
        await hub.publish("t", {"price": 1.5, "name": "Zoë"})
        await hub.publish("t", "plain")
        await hub.publish("t", b"\x00raw")
        a = [await first.receive() for _ in range(3)]
        b = [await second.receive() for _ in range(3)]
    assert [m.data for m in a] == ['{"price":1.5,"name":"Zoë"}', "plain", b"\x00raw"]
    assert all(x is y for x, y in zip(a, b, strict=True))  # one object per publish, shared
    assert a[0].asgi == {"type": "websocket.send", "text": '{"price":1.5,"name":"Zoë"}'}
    assert a[2].asgi == {"type": "websocket.send", "bytes": b"\x00raw"}
    assert a[0].json() == {"price": 1.5, "name": "Zoë"}


async def test_publishing_something_not_json_able_raises_type_error_and_delivers_nothing() -> None:
    async with open_broadcast() as hub, hub.subscribe("t") as sub:
        with pytest.raises(TypeError, match="cannot publish object"):
            await hub.publish("t", object())
        assert sub.buffered == 0


async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow="drop_oldest") as sub:
        for i in range(10):
            await hub.publish("t", str(i))
        assert (sub.buffered, sub.peak_buffered, sub.dropped) == (3, 3, 7)
        assert await drain(sub) == ["7", "8", "9"]
        assert (sub.delivered, sub.buffered) == (3, 0)


async def test_drop_newest_keeps_the_oldest_and_counts_drops() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow="drop_newest") as sub:
        for i in range(10):
            await hub.publish("t", str(i))
        assert await drain(sub) == ["0", "1", "2"]
        assert (sub.dropped, sub.delivered) == (7, 3)


async def test_close_policy_ends_the_subscription_after_its_buffer_is_read() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=2, overflow="close") as sub:
        for i in range(5):
            await hub.publish("t", str(i))
        assert sub.too_slow
        assert hub.subscribers("t") == 0  # unsubscribed at the overflow, not later
        assert [(await sub.receive()).data for _ in range(2)] == ["0", "1"]
        with pytest.raises(SubscriberTooSlow, match="fell 2 messages behind"):
            await sub.receive()


async def test_block_policy_is_lossless_and_stalls_the_publisher() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=2, overflow="block") as sub:
        published = 0

        async def publisher() -> None:
            nonlocal published
            for i in range(5):
                await hub.publish("t", str(i))
                published += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            assert published == 2  # the third publish waits for the subscriber
            got = [(await sub.receive()).data for _ in range(5)]
        assert got == ["0", "1", "2", "3", "4"]
        assert sub.dropped == 0


async def test_a_subscriber_that_never_reads_stays_bounded_and_does_not_affect_others() -> None:
    """10,000 publishes: the dead subscriber holds its 100, counts 9,900 drops; the live one gets all."""
    async with (
        open_broadcast() as hub,
        hub.subscribe("t", max_buffer=100) as dead,
        hub.subscribe("t", max_buffer=100) as live,
    ):
        received: list[int] = []

        async def read_all() -> None:
            async for message in live:
                received.append(int(message.data))
                if len(received) == 10_000:
                    return

        gc.collect()
        tracemalloc.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for i in range(10_000):
                    await hub.publish("t", str(i))
                    if i % 50 == 0:
                        await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == list(range(10_000))
        assert (dead.buffered, dead.peak_buffered, dead.dropped) == (100, 100, 9_900)
        assert peak < 2_000_000  # bounded: ~100 small messages, not 10,000
        assert live.dropped == 0


async def test_each_topic_keeps_its_own_order_for_subscribers_that_drop_nothing() -> None:
    async with (
        open_broadcast() as hub,
        hub.subscribe("a", max_buffer=500) as a,
        hub.subscribe("b", max_buffer=500) as b,
    ):
        for i in range(300):
            await hub.publish("a" if i % 3 else "b", i)
        got_a = [(await a.receive()).json() for _ in range(a.buffered)]
        got_b = [(await b.receive()).json() for _ in range(b.buffered)]
    assert got_a == [i for i in range(300) if i % 3]
    assert got_b == [i for i in range(300) if not i % 3]


async def test_presence_counts_subscribers_per_topic() -> None:
    async with open_broadcast() as hub:
        assert hub.topics == {}
        async with hub.subscribe("room:1"), hub.subscribe("room:1"), hub.subscribe("room:2"):
            assert hub.subscribers("room:1") == 2
            assert hub.topics == {"room:1": 2, "room:2": 1}
        assert hub.topics == {}
        assert hub.subscribers("room:1") == 0


async def test_closing_the_hub_ends_iterations_quietly_and_refuses_more_work() -> None:
    ended = trio.Event()
    async with open_broadcast() as hub:
        sub = hub.subscribe("t")

        async def consume() -> None:
            async with sub:
                async for _ in sub:
                    pass
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            hub._close()
        assert ended.is_set()
        with pytest.raises(RuntimeError, match="hub is closed"):
            await hub.publish("t", "x")
        with pytest.raises(RuntimeError, match="hub is closed"):
            hub.subscribe("t")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"overflow": "explode"}, "overflow must be one of drop_oldest, drop_newest, close, block"),
        ({"max_buffer": 0}, "max_buffer must be a positive int"),
    ],
)
async def test_bad_subscription_options_raise_value_error(options: dict[str, Any], match: str) -> None:
    async with open_broadcast() as hub:
        with pytest.raises(ValueError, match=match):
            hub.subscribe("t", **options)


def test_an_unknown_backend_url_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported broadcast URL 'kafka://x'"):
        open_broadcast("kafka://x")


def test_broadcast_messages_encode_by_type() -> None:
    assert BroadcastMessage.encode("t", bytearray(b"ab")).data == b"ab"
    assert BroadcastMessage.encode("t", [1, "é"]).data == '[1,"é"]'


# -- sockets as subscribers ---------------------------------------------------------------------


def hub_app(hub: Any, **forward_options: Any) -> Router:
    app = Router()

    @app.websocket("/rooms/{room}")
    async def room(ws: WebSocket) -> None:
        topic = f"room:{ws.path_params['room']}"
        await ws.accept()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: hub.forward(topic, ws, task_status=task_status, **forward_options)
            )
            await ws.send_text("subscribed")
            async for text in ws.iter_text():
                await hub.publish(topic, text)
            nursery.cancel_scope.cancel()

    return app


async def test_forward_delivers_to_sockets_and_a_disconnect_unsubscribes_at_once() -> None:
    async with open_broadcast() as hub:
        app = hub_app(hub)
        async with connect(app, "/rooms/1") as ann, connect(app, "/rooms/1") as bob:
            assert await ann.receive_text() == "subscribed"
            assert await bob.receive_text() == "subscribed"
            assert hub.subscribers("room:1") == 2
            await ann.send_text("hello")
            assert await ann.receive_text() == "hello"
            assert await bob.receive_text() == "hello"
            await bob.close()
            await trio.testing.wait_all_tasks_blocked()
            assert hub.subscribers("room:1") == 1
        assert hub.topics == {}


async def test_a_socket_falling_behind_under_the_close_policy_is_closed_with_1013() -> None:
    async with open_broadcast() as hub:
        app = hub_app(hub, max_buffer=3, overflow="close")
        async with serve_app(app, websocket_scope("/rooms/1")) as fake:
            await fake.accepted()
            assert (await fake.expect_sent("websocket.send"))["text"] == "subscribed"
            fake.send_gate = trio.Event()  # the client stops reading: sends block
            for i in range(10):
                await hub.publish("room:1", str(i))
                await trio.testing.wait_all_tasks_blocked()
            assert hub.subscribers("room:1") == 0
            fake.send_gate.set()
            texts = []
            while (message := await fake.next_sent())["type"] == "websocket.send":
                texts.append(message["text"])
            assert (message["code"], message["reason"]) == (1013, "too slow: fell behind the broadcast")
            assert texts == ["0", "1", "2", "3"]  # one in the stuck send, three buffered
            await fake.disconnect(1013)
        assert fake.app_error is None


async def test_forward_returns_quietly_when_the_socket_is_gone() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await ws.close()
        await hub.forward("t", ws)  # the socket is closed: the first send ends it

    async with open_broadcast() as hub:
        async with serve_app(app) as fake, trio.open_nursery() as nursery:
            await fake.accepted()
            await fake.expect_sent("websocket.close")
            await trio.testing.wait_all_tasks_blocked()
            assert hub.subscribers("t") == 1
            nursery.start_soon(hub.publish, "t", "x")
        assert fake.app_error is None
        assert hub.topics == {}


async def test_a_socket_that_never_reads_costs_one_bounded_buffer_through_10000_publishes() -> None:
    """The client stops reading: its send blocks forever; the publisher and a reader never notice."""
    async with open_broadcast() as hub:
        app = hub_app(hub, max_buffer=50)
        async with serve_app(app, websocket_scope("/rooms/1")) as fake, hub.subscribe("room:1") as reader:
            await fake.accepted()
            assert (await fake.expect_sent("websocket.send"))["text"] == "subscribed"
            fake.send_gate = trio.Event()  # never set while publishing: every send blocks
            (dead,) = [s for s in hub._topics["room:1"] if s is not reader]
            got = 0
            for i in range(10_000):
                await hub.publish("room:1", str(i))
                if reader.buffered:
                    got += len(await drain(reader))
            assert got == 10_000 and reader.dropped == 0
            assert dead.buffered == dead.peak_buffered == 50  # one message is stuck in the send
            assert dead.dropped == 10_000 - 50 - 1
            fake.send_gate.set()
            await fake.disconnect(1006)
        assert fake.app_error is None
