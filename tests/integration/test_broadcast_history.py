"""Message ids, topic history and resume (``since=``), the same on every backend.

Each test runs on ``memory://``, on a real redis-server and on a real local Redis Cluster of
three masters (``redis+cluster://``, see ``broadcast_backends``).  Topics are fresh per test: a
Redis stream outlives its hub.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from tests.integration.broadcast_backends import EVERY_BACKEND
from trio_asgi_ws.backends.base import id_order
from trio_asgi_ws.backends.memory import MemoryBackend
from trio_asgi_ws.broadcast import START, Broadcast, BroadcastMessage, open_broadcast
from trio_asgi_ws.routing import Router
from trio_asgi_ws.testing import connect

DEADLINE = 15.0


@pytest.fixture(params=list(EVERY_BACKEND))
def backend(request: pytest.FixtureRequest) -> Any:
    """An async context manager giving a broadcast URL of the backend under test."""
    return EVERY_BACKEND[request.param]


def fresh(name: str = "room") -> str:
    return f"{name}:{uuid.uuid4().hex[:12]}"


async def take(sub: Any, count: int) -> list[BroadcastMessage]:
    with trio.fail_after(DEADLINE):
        return [await sub.receive() for _ in range(count)]


def numbers(messages: list[BroadcastMessage]) -> list[int]:
    return [message.json()["n"] for message in messages]


async def test_every_message_carries_an_id_that_orders_it_within_its_topic(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url) as hub, hub.subscribe(topic) as sub:
        for n in range(5):
            await hub.publish(topic, {"n": n})
        got = await take(sub, 5)
    assert numbers(got) == [0, 1, 2, 3, 4]
    orders = [id_order(message.id) for message in got]
    assert orders == sorted(orders) and len(set(orders)) == 5


async def test_joining_with_start_gets_the_last_n_messages_then_live(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url, history=5) as hub:
        for n in range(3):
            await hub.publish(topic, {"n": n})
        async with hub.subscribe(topic, since=START) as sub:  # fewer than N: all of them
            assert sub.recovered is True
            await hub.publish(topic, {"n": 3})
            assert numbers(await take(sub, 4)) == [0, 1, 2, 3]
        for n in range(4, 12):
            await hub.publish(topic, {"n": n})
        async with hub.subscribe(topic, since=START) as sub:  # the newest N, and a gap before
            assert sub.recovered is False
            assert numbers(await take(sub, 5)) == [7, 8, 9, 10, 11]
            with pytest.raises(trio.WouldBlock):
                sub.receive_nowait()


async def test_resuming_from_an_id_in_the_history_delivers_exactly_what_followed(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url, history=20) as hub:
        async with hub.subscribe(topic) as first:
            for n in range(6):
                await hub.publish(topic, {"n": n})
            seen = await take(first, 3)  # the client saw 0..2, then its connection dropped
        for n in range(6, 8):
            await hub.publish(topic, {"n": n})
        async with hub.subscribe(topic, since=seen[-1].id, max_buffer=2) as again:
            assert again.recovered is True
            await hub.publish(topic, {"n": 8})
            assert numbers(await take(again, 6)) == [3, 4, 5, 6, 7, 8]  # more than max_buffer
            assert again.dropped == 0
            with pytest.raises(trio.WouldBlock):
                again.receive_nowait()


async def test_resuming_from_an_id_older_than_the_history_says_so(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url, history=3) as hub:
        async with hub.subscribe(topic) as first:
            await hub.publish(topic, {"n": 0})
            (old,) = await take(first, 1)
        for n in range(1, 300):  # far past N, so that Redis's approximate trim also let 0 go
            await hub.publish(topic, {"n": n})
        async with hub.subscribe(topic, since=old.id) as again:
            assert again.recovered is False
            got = numbers(await take(again, 3))
            assert got == list(range(got[0], got[0] + 3)) and got[0] > 1
        async with hub.subscribe(topic, since="1-1") as foreign:  # an id this topic never had
            assert foreign.recovered is False


async def test_a_topic_without_history_recovers_only_when_nothing_was_missed(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url) as hub:
        async with hub.subscribe(topic) as first:
            await hub.publish(topic, {"n": 0})
            (last,) = await take(first, 1)
        async with hub.subscribe(topic, since=last.id) as again:
            # Redis knows the topic's last id; memory:// keeps nothing for such a topic.
            assert again.recovered is (url != "memory://")
        await hub.publish(topic, {"n": 1})
        async with hub.subscribe(topic, since=last.id) as late:
            assert late.recovered is False
            # Nothing comes from a history that keeps nothing.  (n=1 itself may still arrive
            # live: Redis can deliver it to the hub's pub/sub connection before the hub's
            # unsubscription from the last round reaches Redis.)
            assert late.replayed == 0


async def test_history_sizes_can_differ_by_topic(backend: Any) -> None:
    rooms, ticks = fresh("room"), fresh("tick")

    def sizes(topic: str) -> int:
        return 4 if topic.startswith("room:") else 0

    async with backend() as url, open_broadcast(url, history=sizes) as hub:
        for n in range(2):
            await hub.publish(rooms, {"n": n})
            await hub.publish(ticks, {"n": n})
        async with hub.subscribe(rooms, since=START) as kept, hub.subscribe(ticks, since=START) as not_kept:
            assert numbers(await take(kept, 2)) == [0, 1]
            assert not_kept.recovered is False
            with pytest.raises(trio.WouldBlock):
                not_kept.receive_nowait()


async def test_a_resume_under_steady_publishing_has_no_gap_and_no_duplicate(backend: Any) -> None:
    """Subscriptions resumed one after another while messages keep coming: the switch from the
    history to live delivery races with publishes, on every backend."""
    topic = fresh()
    total = 300
    async with backend() as url, open_broadcast(url, history=total) as hub, AsyncExitStack() as stack:
        published = trio.Event()

        async def publisher() -> None:
            for n in range(total):
                await hub.publish(topic, {"n": n})
                if n % 5 == 0:
                    await trio.sleep(0.001)
            published.set()

        first = await stack.enter_async_context(hub.subscribe(topic, max_buffer=total))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            received = {first: numbers(await take(first, 1))}
            expected_start = {first: 0}
            last = (await take(first, 1))[0]
            received[first].append(last.json()["n"])
            while not published.is_set():
                sub = await stack.enter_async_context(hub.subscribe(topic, since=last.id, max_buffer=total))
                assert sub.recovered is True
                expected_start[sub] = last.json()["n"] + 1
                received[sub] = []
                if last.json()["n"] == total - 1:
                    break
                last = (await take(sub, 1))[0]
                received[sub].append(last.json()["n"])
        assert len(received) > 3, "too few resumes to have raced"
        for sub, got in received.items():
            with trio.fail_after(DEADLINE):
                while not got or got[-1] != total - 1:
                    got.append((await sub.receive()).json()["n"])
            assert got == list(range(expected_start[sub], total))
            with pytest.raises(trio.WouldBlock):
                sub.receive_nowait()


async def test_forward_sends_the_history_then_live_and_reports_recovery(backend: Any) -> None:
    topic = fresh()
    async with backend() as url, open_broadcast(url, history=10) as hub:
        for n in range(3):
            await hub.publish(topic, {"n": n})
        reports: list[bool | None] = []
        app = Router()

        @app.websocket("/")
        async def handler(websocket: Any) -> None:
            await websocket.accept()
            async with trio.open_nursery() as nursery:
                sub = await nursery.start(partial(hub.forward, topic, websocket, since=START))
                reports.append(sub.recovered)
                await websocket.receive_text()
                nursery.cancel_scope.cancel()

        async with connect(app, "/") as ws:
            with trio.fail_after(DEADLINE):
                await hub.publish(topic, {"n": 3})
                assert [(await ws.receive_json())["n"] for _ in range(4)] == [0, 1, 2, 3]
            await ws.send_text("bye")
        assert reports == [True]


def test_a_since_that_is_not_an_id_is_refused_at_subscribe() -> None:
    hub = Broadcast(MemoryBackend())
    for bad in ("", "12", "a-b", "1-2-3", " 1-2", 5):
        expected = r"^not a broadcast message id: .* \(expected '<ms>-<seq>', e\.g\. '0-0'\)$"
        with pytest.raises(ValueError, match=expected):
            hub.subscribe("t", since=bad)  # type: ignore[arg-type]


def test_a_bad_history_size_is_refused_at_open() -> None:
    for bad in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match=r"^history must be a non-negative int, got "):
            open_broadcast("memory://", history=bad)


async def test_forward_resuming_while_messages_keep_coming_sends_each_once(backend: Any) -> None:
    """The hub's own sending (inline here, the test client has no direct writes) must not send
    the late live copies of messages the socket already got from the history."""
    topic = fresh()
    total = 200
    async with backend() as url, open_broadcast(url, history=total) as hub, hub.subscribe(topic) as probe:
        app = Router()

        @app.websocket("/")
        async def handler(websocket: Any) -> None:
            await websocket.accept()
            since = websocket.query_params["since"]
            await hub.forward(topic, websocket, since=since, max_buffer=total)

        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                for n in range(total):
                    await hub.publish(topic, {"n": n})
                    if n % 5 == 0:
                        await trio.sleep(0.001)

            nursery.start_soon(publisher)
            seen = await take(probe, 20)
            async with connect(app, f"/?since={seen[-1].id}") as ws:
                with trio.fail_after(DEADLINE):
                    got = [(await ws.receive_json())["n"] for _ in range(total - 20)]
                assert got == list(range(20, total))
                with trio.move_on_after(0.3):
                    extra = await ws.receive_json()
                    pytest.fail(f"a duplicate: {extra}")


async def test_a_late_copy_of_a_replayed_message_is_not_sent_by_the_hub_itself() -> None:
    """Redis may bring a replayed message's live copy after the socket's forward task has sent
    the history and gone idle; the hub, delivering to idle sockets itself, must drop it too."""
    async with open_broadcast("memory://", history=10) as hub, hub.subscribe("t") as probe:
        for n in range(3):
            await hub.publish("t", {"n": n})
        first, _, last = await take(probe, 3)
        app = Router()
        links: list[Any] = []

        @app.websocket("/")
        async def handler(websocket: Any) -> None:
            await websocket.accept()
            async with trio.open_nursery() as nursery:
                sub = await nursery.start(partial(hub.forward, "t", websocket, since=first.id))
                links.append(sub)
                await websocket.receive_text()
                nursery.cancel_scope.cancel()

        async with connect(app, "/") as ws:
            with trio.fail_after(DEADLINE):
                assert [(await ws.receive_json())["n"] for _ in range(2)] == [1, 2]
            await trio.testing.wait_all_tasks_blocked()
            assert links[0]._link.idle  # the hub now sends to the socket itself
            await hub._deliver(last)  # the late copy
            await hub.publish("t", {"n": 3})
            with trio.fail_after(DEADLINE):
                assert (await ws.receive_json())["n"] == 3
            await ws.send_text("bye")


async def test_an_id_from_another_memory_hub_is_never_taken_for_one_of_this_hubs() -> None:
    async with (
        open_broadcast("memory://", history=5) as first,
        open_broadcast("memory://", history=5) as second,
    ):
        for hub in (first, second):
            async with hub.subscribe("t") as sub:
                await hub.publish("t", "x")
                await hub.publish("t", "y")
                ids = [(await sub.receive()).id for _ in range(2)]
        # Same topic, same counters, hubs opened in the same millisecond: the ids still differ.
        async with second.subscribe("t", since=ids[0]) as resumed:
            assert resumed.recovered is True
        async with first.subscribe("t", since=ids[0]) as foreign:
            assert foreign.recovered is False
