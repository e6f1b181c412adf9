"""The broadcast hub on the memory backend: policies, counters, ends, order, presence, sockets."""

from __future__ import annotations

import gc
import re
import sys
import tracemalloc
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from tests.driver import TaskSteps, serve_app, websocket_scope
from trio_asgi_ws import WebSocket
from trio_asgi_ws._fanout import STALL_AFTER
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws.backends.base import Deliver
from trio_asgi_ws.backends.memory import MemoryBackend
from trio_asgi_ws.broadcast import (
    Broadcast,
    BroadcastMessage,
    BroadcastStatus,
    Overflow,
    SubscriberTooSlow,
    Subscription,
    _backend_for,
    _running,
    open_broadcast,
)
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
        with pytest.raises(RuntimeError, match=r"^this broadcast hub is closed$"):
            await hub.publish("t", "x")
        with pytest.raises(RuntimeError, match=r"^this broadcast hub is closed$"):
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


def test_redis_and_rediss_urls_make_a_redis_backend_with_its_options() -> None:
    pytest.importorskip("coredis")
    from trio_asgi_ws.backends.redis import RedisBackend

    for url in ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/1"):
        backend = _backend_for(url, {"prefix": "app:"})
        assert isinstance(backend, RedisBackend)
        assert (backend._url, backend._prefix, backend.status) == (url, "app:", "connecting")
    assert isinstance(_backend_for("memory://", {}), MemoryBackend)


@pytest.mark.parametrize("missing", ["coredis", "anyio"])
def test_a_redis_url_without_the_redis_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "trio_asgi_ws.backends.redis", raising=False)
    with pytest.raises(
        ModuleNotFoundError,
        match=r"^redis:// needs the redis extra: pip install "
        r"'trio_asgi_ws\[redis\]' \(missing: " + missing + r"\)$",
    ) as caught:
        open_broadcast("redis://127.0.0.1:6379/0")
    assert caught.value.name == missing


def test_backends_import_only_their_shared_module_never_the_hub() -> None:
    """One-way imports: broadcast imports the backends; they import backends.base, not broadcast."""
    import ast
    from pathlib import Path

    import trio_asgi_ws.backends

    for module in Path(trio_asgi_ws.backends.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").endswith("broadcast"), module.name
                assert node.level != 2 or node.module != "broadcast", module.name
            elif isinstance(node, ast.Import):
                assert all(not alias.name.endswith("broadcast") for alias in node.names), module.name


async def test_subscriptions_default_to_64_messages_and_drop_oldest() -> None:
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        sub = hub.subscribe("t")
        assert (sub.topic, sub.max_buffer, sub.overflow) == ("t", 64, "drop_oldest")
        forwarded = await nursery.start(hub.forward, "t", await accepted_socket([]))
        assert (forwarded.topic, forwarded.max_buffer, forwarded.overflow) == ("t", 64, "drop_oldest")
        nursery.cancel_scope.cancel()


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


async def until_a_stuck_send_is_handed_off() -> None:
    """Long enough for the hub's inline sender to find a send stuck and carry on without it."""
    await trio.sleep(3 * STALL_AFTER)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_socket_falling_behind_under_the_close_policy_is_closed_with_1013(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_broadcast() as hub:
        app = hub_app(hub, max_buffer=3, overflow="close")
        async with serve_app(app, websocket_scope("/rooms/1")) as fake:
            await fake.accepted()
            assert (await fake.expect_sent("websocket.send"))["text"] == "subscribed"
            fake.send_gate = trio.Event()  # the client stops reading: sends block
            for i in range(10):
                await hub.publish("room:1", str(i))
                await trio.testing.wait_all_tasks_blocked()
            await until_a_stuck_send_is_handed_off()
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
            await fake.expect_close(1000)
            await trio.testing.wait_all_tasks_blocked()
            assert hub.subscribers("t") == 1
            nursery.start_soon(hub.publish, "t", "x")
        assert fake.app_error is None
        assert hub.topics == {}


async def test_a_socket_that_never_reads_costs_one_bounded_buffer_through_10000_publishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client stops reading: its send blocks forever; the publisher and a reader never notice
    (beyond the moment the hub takes to find the send stuck)."""
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
            await until_a_stuck_send_is_handed_off()
            assert dead.buffered == dead.peak_buffered == 50  # one message is stuck in the send
            assert dead.dropped == 10_000 - 50 - 1
            fake.send_gate.set()
            await fake.disconnect(1006)
        assert fake.app_error is None


# -- how a subscription ends -------------------------------------------------------------------

POLICIES: tuple[Overflow, ...] = ("drop_oldest", "drop_newest", "close", "block")


class Boom(Exception):
    pass


async def test_a_subscription_is_a_trio_receive_channel() -> None:
    async with open_broadcast() as hub, hub.subscribe("t") as sub:
        assert isinstance(sub, trio.abc.ReceiveChannel)
        await hub.publish("t", "x")
        assert (await sub.receive()).data == "x"


async def test_when_the_hub_closes_the_buffer_is_read_then_every_receive_raises_end_of_channel() -> None:
    opening = open_broadcast()
    hub = await opening.__aenter__()
    async with hub.subscribe("t", max_buffer=4) as sub:
        await hub.publish("t", "0")
        await hub.publish("t", "1")
        await opening.__aexit__(None, None, None)
        assert (sub.buffered, hub.subscribers("t")) == (2, 0)
        assert sub.receive_nowait().data == "0"
        assert (await sub.receive()).data == "1"
        for _ in range(2):
            with pytest.raises(trio.EndOfChannel):
                await sub.receive()
            with pytest.raises(trio.EndOfChannel):
                sub.receive_nowait()
        assert [message async for message in sub] == []  # async for ends quietly
        assert (sub.delivered, sub.dropped, sub.buffered, sub.too_slow) == (2, 0, 0, False)


async def test_a_reader_waiting_when_the_hub_closes_gets_end_of_channel() -> None:
    ends: list[BaseException] = []

    async def reader(hub: Broadcast, task_status: trio.TaskStatus[None]) -> None:
        async with hub.subscribe("t") as sub:
            task_status.started()
            try:
                await sub.receive()
            except trio.EndOfChannel as end:
                ends.append(end)

    async with trio.open_nursery() as nursery:
        async with open_broadcast() as hub:
            await nursery.start(reader, hub)
            await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert [type(end) for end in ends] == [trio.EndOfChannel]


async def test_leaving_the_block_discards_the_buffer_and_every_later_read_raises_closed_resource_error() -> (
    None
):
    async with open_broadcast() as hub:
        async with hub.subscribe("t", max_buffer=4) as sub:
            for i in range(3):
                await hub.publish("t", str(i))
            assert sub.receive_nowait().data == "0"
        assert (sub.delivered, sub.dropped, sub.buffered, sub.peak_buffered) == (1, 0, 0, 3)
        assert hub.subscribers("t") == 0
        await hub.publish("t", "after")
        assert sub.buffered == 0
        for _ in range(2):
            with pytest.raises(trio.ClosedResourceError):
                await sub.receive()
            with pytest.raises(trio.ClosedResourceError):
                sub.receive_nowait()
        with pytest.raises(trio.ClosedResourceError):
            async for _ in sub:
                pass
        assert sub.delivered == 1


async def test_a_reader_waiting_when_its_subscription_is_closed_gets_closed_resource_error() -> None:
    ends: list[BaseException] = []

    async def reader(sub: Subscription) -> None:
        try:
            await sub.receive()
        except trio.ClosedResourceError as end:
            ends.append(end)

    async with open_broadcast() as hub, hub.subscribe("t") as sub, trio.open_nursery() as nursery:
        nursery.start_soon(reader, sub)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
        sub.close()  # twice: nothing more happens
        assert hub.subscribers("t") == 0
    assert [type(end) for end in ends] == [trio.ClosedResourceError]


async def test_aclose_closes_even_when_cancelled_and_is_a_checkpoint() -> None:
    async with open_broadcast() as hub, hub.subscribe("t") as sub:
        await hub.publish("t", "x")
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.aclose()
        assert scope.cancelled_caught
        assert (hub.subscribers("t"), sub.buffered) == (0, 0)
        with pytest.raises(trio.ClosedResourceError):
            sub.receive_nowait()
        with trio.testing.assert_checkpoints():
            await sub.aclose()


async def test_leaving_a_subscription_is_not_a_checkpoint() -> None:
    async with open_broadcast() as hub:
        sub = await hub.subscribe("t").__aenter__()
        with trio.testing.assert_no_checkpoints():
            await sub.__aexit__(None, None, None)
        assert hub.subscribers("t") == 0


async def test_receive_nowait_raises_would_block_while_live_and_empty() -> None:
    async with open_broadcast() as hub, hub.subscribe("t") as sub:
        for _ in range(2):
            with pytest.raises(trio.WouldBlock):
                sub.receive_nowait()
        assert (sub.delivered, hub.subscribers("t")) == (0, 1)


async def test_reading_before_entering_or_entering_twice_raises_runtime_error() -> None:
    async with open_broadcast() as hub:
        sub = hub.subscribe("t")
        assert hub.subscribers("t") == 0  # not yet subscribed
        not_entered = r"^subscription to 't' not entered: use `async with hub\.subscribe\(\.\.\.\) as sub`$"
        with pytest.raises(RuntimeError, match=not_entered):
            await sub.receive()
        with pytest.raises(RuntimeError, match=not_entered):
            sub.receive_nowait()
        async with sub:
            assert hub.subscribers("t") == 1
            with pytest.raises(
                RuntimeError, match=r"^a subscription can be entered only once; subscribe again"
            ):
                await sub.__aenter__()
            assert hub.subscribers("t") == 1


async def test_entering_a_subscription_after_its_hub_closed_raises_runtime_error() -> None:
    async with open_broadcast() as hub:
        sub = hub.subscribe("t")
    with pytest.raises(RuntimeError, match=r"^this broadcast hub is closed$"):
        await sub.__aenter__()
    assert hub.topics == {}


# -- exact counts at the edge of a full buffer, under every policy ------------------------------


@pytest.mark.parametrize("overflow", POLICIES)
async def test_a_buffer_filled_exactly_loses_nothing_under_every_policy(overflow: Overflow) -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow=overflow) as sub:
        for i in range(3):
            await hub.publish("t", str(i))
        assert (sub.buffered, sub.peak_buffered, sub.dropped, sub.delivered, sub.too_slow) == (
            3,
            3,
            0,
            0,
            False,
        )
        assert hub.subscribers("t") == 1
        assert [sub.receive_nowait().data for _ in range(3)] == ["0", "1", "2"]
        assert (sub.buffered, sub.peak_buffered, sub.delivered) == (0, 3, 3)
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", ["1", "2", "3"]), ("drop_newest", ["0", "1", "2"])]
)
async def test_one_message_over_a_full_buffer_drops_exactly_one(overflow: Overflow, kept: list[str]) -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow=overflow) as sub:
        for i in range(4):
            await hub.publish("t", str(i))
        assert (sub.buffered, sub.peak_buffered, sub.dropped, sub.too_slow) == (3, 3, 1, False)
        assert hub.subscribers("t") == 1
        assert [sub.receive_nowait().data for _ in range(3)] == kept
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
        assert (sub.delivered, sub.dropped, sub.buffered) == (3, 1, 0)


async def test_one_message_over_a_full_buffer_ends_a_close_subscription_and_counts_as_dropped() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow="close") as sub:
        for i in range(4):
            await hub.publish("t", str(i))
        assert (sub.buffered, sub.peak_buffered, sub.dropped, sub.delivered, sub.too_slow) == (
            3,
            3,
            1,
            0,
            True,
        )
        assert hub.subscribers("t") == 0
        await hub.publish("t", "4")  # no longer subscribed: not offered, not counted
        assert (sub.buffered, sub.dropped) == (3, 1)
        assert [sub.receive_nowait().data for _ in range(2)] == ["0", "1"]
        assert (await sub.receive()).data == "2"
        too_slow = r"^subscriber to 't' fell 3 messages behind$"
        for _ in range(2):
            with pytest.raises(SubscriberTooSlow, match=too_slow):
                sub.receive_nowait()
            with pytest.raises(SubscriberTooSlow, match=too_slow):
                await sub.receive()
        with pytest.raises(SubscriberTooSlow, match=too_slow):
            async for _ in sub:
                pass
        assert (sub.delivered, sub.dropped, sub.buffered) == (3, 1, 0)  # 4 published while subscribed


async def test_one_message_over_a_full_buffer_makes_a_block_publisher_wait_for_room() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=3, overflow="block") as sub:
        for i in range(3):
            await hub.publish("t", str(i))
        published = trio.Event()

        async def publish_one_more() -> None:
            await hub.publish("t", "3")
            published.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_one_more)
            await trio.testing.wait_all_tasks_blocked()
            assert not published.is_set()
            assert (sub.buffered, sub.peak_buffered, sub.dropped) == (3, 3, 0)
            assert sub.receive_nowait().data == "0"  # makes room: the waiting publish completes
        assert published.is_set()
        assert (sub.buffered, sub.peak_buffered, sub.dropped, sub.delivered) == (3, 3, 0, 1)
        assert [sub.receive_nowait().data for _ in range(3)] == ["1", "2", "3"]


@pytest.mark.parametrize("overflow", POLICIES)
async def test_a_message_handed_to_a_waiting_reader_is_never_counted_as_buffered(overflow: Overflow) -> None:
    seen: list[tuple[str | bytes, int]] = []
    async with (
        open_broadcast() as hub,
        hub.subscribe("t", max_buffer=1, overflow=overflow) as sub,
        trio.open_nursery() as nursery,
    ):

        async def reader() -> None:
            async for message in sub:
                seen.append((message.data, sub.buffered))

        nursery.start_soon(reader)
        for i in range(5):
            await trio.testing.wait_all_tasks_blocked()
            await hub.publish("t", str(i))
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [(str(i), 0) for i in range(5)]
        assert (sub.delivered, sub.dropped, sub.buffered, sub.peak_buffered) == (5, 0, 0, 0)
        nursery.cancel_scope.cancel()


async def test_a_subscription_shows_its_counters_in_its_repr() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=2, overflow="drop_newest") as sub:
        for i in range(3):
            await hub.publish("t", str(i))
        await sub.receive()
        assert repr(sub) == "<Subscription 't' drop_newest delivered=1 dropped=1 buffered=1/2>"


@pytest.mark.parametrize(
    ("max_buffer", "error"),
    [
        (0, "max_buffer must be a positive int, got 0"),
        (-1, "max_buffer must be a positive int, got -1"),
        ("3", "max_buffer must be a positive int, got '3'"),
        (2.0, "max_buffer must be a positive int, got 2.0"),
    ],
)
async def test_max_buffer_must_be_a_positive_int(max_buffer: Any, error: str) -> None:
    async with open_broadcast() as hub:
        with pytest.raises(ValueError, match=f"^{error}$"):
            hub.subscribe("t", max_buffer=max_buffer)
        async with hub.subscribe("t", max_buffer=1) as sub:  # the smallest buffer there is
            assert sub.max_buffer == 1


async def test_an_unknown_overflow_policy_is_named_in_the_error() -> None:
    async with open_broadcast() as hub:
        with pytest.raises(
            ValueError,
            match=r"^overflow must be one of drop_oldest, drop_newest, close, block; got 'explode'$",
        ):
            hub.subscribe("t", overflow="explode")  # type: ignore[arg-type]


# -- a publisher waiting on a full block subscriber ---------------------------------------------


async def test_a_full_block_subscriber_holds_up_the_publisher_but_not_the_others_subscribed() -> None:
    async with (
        open_broadcast() as hub,
        hub.subscribe("t", max_buffer=1, overflow="block") as slow,
        hub.subscribe("t", max_buffer=8) as other,
        trio.open_nursery() as nursery,
    ):
        await hub.publish("t", "0")
        nursery.start_soon(hub.publish, "t", "1")
        await trio.testing.wait_all_tasks_blocked()
        assert [other.receive_nowait().data for _ in range(2)] == ["0", "1"]  # before slow has room
        assert (slow.buffered, slow.receive_nowait().data) == (1, "0")
        await trio.testing.wait_all_tasks_blocked()
        assert (slow.buffered, slow.receive_nowait().data) == (1, "1")


@pytest.mark.parametrize("end", ["the subscriber leaves", "the hub closes"])
async def test_a_publisher_waiting_on_a_block_subscriber_returns_when_the_subscription_ends(end: str) -> None:
    published = trio.Event()

    async def publish_one_more(hub: Broadcast) -> None:
        await hub.publish("t", "1")
        published.set()

    async with trio.open_nursery() as nursery:
        opening = open_broadcast()
        hub = await opening.__aenter__()
        sub = await hub.subscribe("t", max_buffer=1, overflow="block").__aenter__()
        await hub.publish("t", "0")
        nursery.start_soon(publish_one_more, hub)
        await trio.testing.wait_all_tasks_blocked()
        assert not published.is_set()
        if end == "the subscriber leaves":
            await sub.__aexit__(None, None, None)
        await opening.__aexit__(None, None, None)
        await trio.testing.wait_all_tasks_blocked()
        assert published.is_set()
    assert (sub.delivered, sub.dropped) == (0, 0)
    if end == "the subscriber leaves":
        assert sub.buffered == 0
    else:  # what was buffered can still be read; the message it waited with was not delivered
        assert sub.receive_nowait().data == "0"
        with pytest.raises(trio.EndOfChannel):
            sub.receive_nowait()


async def test_a_block_subscriber_that_leaves_while_the_publisher_waits_for_another_misses_the_message() -> (
    None
):
    async with (
        open_broadcast() as hub,
        hub.subscribe("t", max_buffer=1, overflow="block") as full,
        hub.subscribe("t", max_buffer=4, overflow="block") as leaving,
        trio.open_nursery() as nursery,
    ):
        await hub.publish("t", "0")
        assert leaving.receive_nowait().data == "0"
        nursery.start_soon(hub.publish, "t", "1")  # waits for room in `full`, subscribed first
        await trio.testing.wait_all_tasks_blocked()
        leaving.close()
        assert full.receive_nowait().data == "0"  # room: the publish goes on, past `leaving`
        await trio.testing.wait_all_tasks_blocked()
        assert (full.buffered, full.receive_nowait().data) == (1, "1")
        assert (leaving.delivered, leaving.dropped, leaving.buffered) == (1, 0, 0)


async def test_cancelling_a_publisher_waiting_on_a_block_subscriber_delivers_nothing_more() -> None:
    async with open_broadcast() as hub, hub.subscribe("t", max_buffer=1, overflow="block") as sub:
        await hub.publish("t", "0")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.publish, "t", "1")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert (sub.buffered, sub.receive_nowait().data) == (1, "0")
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
        assert (sub.delivered, sub.dropped, sub.peak_buffered) == (1, 0, 1)


# -- the hub -------------------------------------------------------------------------------------


async def test_publish_is_a_checkpoint_even_with_no_subscribers() -> None:
    async with open_broadcast() as hub:
        with trio.testing.assert_checkpoints():
            await hub.publish("nobody", "x")


async def test_subscribers_get_each_message_in_the_order_they_subscribed() -> None:
    order: list[str] = []

    class Recording(MemoryBackend):
        async def run(
            self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            async def recording(message: BroadcastMessage) -> None:
                await deliver(message)
                order.extend(name for name, sub in subs if sub.buffered)

            await super().run(recording, task_status=task_status)

    async with _running(Recording()) as hub:
        subs = [(name, hub.subscribe("t")) for name in "cab"]
        for _, sub in subs:
            await sub.__aenter__()
        await hub.publish("t", "x")
        assert order == ["c", "a", "b"]
        assert list(hub._topics["t"]) == [sub for _, sub in subs]


async def test_a_memory_hub_is_always_connected_and_loses_nothing() -> None:
    async with open_broadcast() as hub:
        assert hub.status == "connected"
        assert hub.status is BroadcastStatus.CONNECTED
        assert str(hub.status) == "connected"
        assert hub.lost == 0
        await hub.wait_for_status("connected")  # at once
        await hub.wait_for_status(BroadcastStatus.CONNECTED)
        async with trio.open_nursery() as nursery:
            waited = trio.Event()

            async def wait_for_an_outage() -> None:
                await hub.wait_for_status("reconnecting")
                waited.set()

            nursery.start_soon(wait_for_an_outage)
            await trio.testing.wait_all_tasks_blocked()
            assert not waited.is_set()  # never comes
            nursery.cancel_scope.cancel()
        with pytest.raises(ValueError, match="'connectd' is not a valid BroadcastStatus"):
            await hub.wait_for_status("connectd")


async def test_an_error_in_the_hub_block_leaves_as_itself_and_ends_every_subscription() -> None:
    with pytest.raises(Boom) as raised:
        async with open_broadcast() as hub:
            sub = await hub.subscribe("t").__aenter__()
            await hub.publish("t", "x")
            raise Boom("body")
    assert str(raised.value) == "body"
    assert sub.receive_nowait().data == "x"
    with pytest.raises(trio.EndOfChannel):
        await sub.receive()


async def test_a_backend_that_cannot_start_raises_its_own_error_from_the_async_with() -> None:
    class Unreachable(MemoryBackend):
        async def run(
            self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            await trio.lowlevel.checkpoint()
            raise ConnectionError("no way through")

    entered = False
    with pytest.raises(ConnectionError, match=r"^no way through$"):
        async with _running(Unreachable()):
            entered = True
    assert not entered


async def test_a_backend_failing_later_cancels_the_body_and_raises_its_own_error() -> None:
    failing = trio.Event()

    class Failing(MemoryBackend):
        async def run(
            self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            await super().run(deliver, task_status=task_status)
            await failing.wait()
            raise ConnectionError("lost it")

    with pytest.raises(ConnectionError, match=r"^lost it$"):
        async with _running(Failing()) as hub, hub.subscribe("t") as sub:
            failing.set()
            await sub.receive()  # cancelled by the failure
            pytest.fail("the body should have been cancelled")


async def test_a_hub_refuses_block_subscriptions_where_its_backend_does_not_permit_them() -> None:
    class OneReader(MemoryBackend):
        permits_block = False

    async with _running(OneReader()) as hub:
        refusal = (
            "overflow='block' is refused by OneReader: one task delivers every topic, so one full "
            "'block' subscriber would stall delivery of all topics in this process; use "
            "overflow='close' (nothing lost until SubscriberTooSlow ends it) or 'drop_oldest', or a "
            "memory:// hub for a lossless in-process pipeline"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(refusal)}$"):
            hub.subscribe("t", overflow="block")
        assert hub.topics == {}
        for overflow in POLICIES[:3]:
            async with hub.subscribe("t", overflow=overflow):
                assert hub.subscribers("t") == 1


# -- forward: sockets as subscribers, whatever their send does -----------------------------------


async def accepted_socket(
    sent: list[Message], send_error: BaseException | None = None, gate: trio.Event | None = None
) -> WebSocket:
    """A plain socket, accepted, whose ASGI ``send`` records and returns at once: never a checkpoint.

    With ``gate``, each data send waits until the gate is set first (a stalled client).
    """

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        if gate is not None and message["type"] == "websocket.send" and not gate.is_set():
            await gate.wait()
        if send_error is not None and message["type"] == "websocket.send":
            raise send_error
        sent.append(message)

    ws = WebSocket(websocket_scope(), receive, send)
    await ws.accept()
    sent.clear()
    return ws


@pytest.mark.parametrize("overflow", POLICIES)
async def test_forward_through_a_send_that_never_checkpoints_delivers_everything_under_every_policy(
    overflow: Overflow,
) -> None:
    """Under block, a message handed to forward's waiting receive() used to leave ``buffered`` at -1
    until the publisher ran again: forward's catch-up loop then called receive_nowait() on an empty
    buffer and died of trio.WouldBlock (each message a coin toss: 40 here)."""
    sent: list[Message] = []
    ws = await accepted_socket(sent)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscription = await nursery.start(partial(hub.forward, "t", ws, max_buffer=2, overflow=overflow))
        for i in range(40):
            await hub.publish("t", str(i))
            await trio.testing.wait_all_tasks_blocked()
        assert [message["text"] for message in sent] == [str(i) for i in range(40)]
        assert (subscription.delivered, subscription.dropped, subscription.buffered) == (40, 0, 0)
        nursery.cancel_scope.cancel()
    assert hub.topics == {}


async def test_forward_sends_a_backlog_back_to_back_without_a_scheduler_pass_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Message] = []
    gate = trio.Event()  # the first message waits in send while five more are buffered
    ws = await accepted_socket(sent, gate=gate)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        nursery.start_soon(hub.forward, "t", ws, name="forwarder")
        await trio.testing.wait_all_tasks_blocked()
        for i in range(6):
            await hub.publish("t", str(i))
        await until_a_stuck_send_is_handed_off()  # forward then waits for the stuck send's turn
        steps = TaskSteps("forwarder")
        trio.lowlevel.add_instrument(steps)
        try:
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert [message["text"] for message in sent] == [str(i) for i in range(6)]
        assert steps.steps == 1  # woken once, sent all six, then waits in receive()
        nursery.cancel_scope.cancel()


async def test_forward_returns_when_the_hub_closes_after_sending_what_was_buffered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Message] = []
    ws = await accepted_socket(sent)
    with trio.fail_after(60):  # on the mock clock: a hang shows up at once
        async with trio.open_nursery() as nursery, open_broadcast() as hub:
            await nursery.start(hub.forward, "t", ws)
            await hub.publish("t", "0")
            await hub.publish("t", "1")
        # the hub closed first: forward sent the rest and returned, leaving the socket open
    assert sent == [{"type": "websocket.send", "text": "0"}, {"type": "websocket.send", "text": "1"}]


async def test_forward_returns_quietly_when_the_asgi_send_fails_as_the_client_leaves() -> None:
    sent: list[Message] = []
    ws = await accepted_socket(sent, send_error=OSError("client gone"))  # as ASGI spec 2.4 servers do
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        await nursery.start(hub.forward, "t", ws)
        assert hub.subscribers("t") == 1
        await hub.publish("t", "x")
        await trio.testing.wait_all_tasks_blocked()
        assert (hub.subscribers("t"), sent) == (0, [])


async def test_forward_closes_a_socket_that_falls_behind_under_close_with_1013_after_the_buffer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Message] = []
    gate = trio.Event()
    ws = await accepted_socket(sent, gate=gate)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscription = await nursery.start(partial(hub.forward, "t", ws, max_buffer=2, overflow="close"))
        await hub.publish("t", "0")  # sent inline by the hub, stuck in send
        for i in range(1, 5):  # once it is found stuck: 1, 2 buffered; 3 overflows; 4 is not offered
            await hub.publish("t", str(i))
        await until_a_stuck_send_is_handed_off()
        assert (subscription.too_slow, subscription.dropped, hub.subscribers("t")) == (True, 1, 0)
        gate.set()
    assert sent == [
        {"type": "websocket.send", "text": "0"},
        {"type": "websocket.send", "text": "1"},
        {"type": "websocket.send", "text": "2"},
        {"type": "websocket.close", "code": 1013, "reason": "too slow: fell behind the broadcast"},
    ]
