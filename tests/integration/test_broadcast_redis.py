"""Broadcast through a real redis-server: across hubs, across processes, and through a restart."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import trio
import trio.testing

from tests.integration.broadcast_backends import single_redis
from tests.integration.conftest import open_client
from tests.integration.redis_server import RedisServer
from tests.integration.served import drain_stderr, start_cli, stop_process
from trio_asgi_ws.broadcast import BroadcastStatus, figures, open_broadcast

DEADLINE = 15.0


async def test_two_hubs_on_one_redis_share_topics() -> None:
    async with single_redis() as url, open_broadcast(url) as here, open_broadcast(url) as there:
        assert here.status == there.status == "connected"
        assert here.status is BroadcastStatus.CONNECTED
        async with there.subscribe("room:1") as far, here.subscribe("room:1") as near:
            await here.publish("room:1", {"n": 1})
            await here.publish("room:1", b"\x00bin")
            with trio.fail_after(DEADLINE):
                assert [(await far.receive()).data for _ in range(2)] == ['{"n":1}', b"\x00bin"]
                assert [(await near.receive()).data for _ in range(2)] == ['{"n":1}', b"\x00bin"]


async def test_a_redis_hub_refuses_the_block_policy_at_once_and_says_what_to_use_instead() -> None:
    """One task reads Redis for every topic: a full block subscriber would stall them all."""
    async with single_redis() as url, open_broadcast(url) as hub:
        with pytest.raises(
            ValueError,
            match=r"^overflow='block' is refused by RedisBackend: one task delivers every topic, so one "
            r"full 'block' subscriber would stall delivery of all topics in this process; use "
            r"overflow='close' \(nothing lost until SubscriberTooSlow ends it\) or 'drop_oldest', or a "
            r"memory:// hub for a lossless in-process pipeline$",
        ):
            hub.subscribe("t", overflow="block")
        assert hub.topics == {}
        async with hub.subscribe("t", max_buffer=2, overflow="close") as sub:  # the alternative works
            await hub.publish("t", "x")
            with trio.fail_after(DEADLINE):
                assert (await sub.receive()).data == "x"


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_opening_a_hub_on_an_unreachable_redis_raises_connection_error(scheme: str) -> None:
    async with RedisServer() as redis:
        url = f"{scheme}://127.0.0.1:{redis.port}"
    with pytest.raises(ConnectionError, match=rf"^cannot reach Redis at {re.escape(url)}: "):
        async with open_broadcast(url):
            pass


async def test_a_redis_restart_keeps_subscribers_and_delivery_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RedisServer() as redis, open_broadcast(redis.url) as hub, hub.subscribe("t") as sub:
        await hub.publish("t", "before")
        with trio.fail_after(DEADLINE):
            assert (await sub.receive()).data == "before"
            await redis.stop()
            await hub.wait_for_status("reconnecting")
            lost_before = figures()["lost"]
            await hub.publish("t", "during")  # at most once: lost, counted, logged
            assert hub.lost == 1
            assert figures()["lost"] == lost_before + 1  # what the metrics export
            assert figures()["hubs"] == {"reconnecting": 1}
            await redis.start()
            await hub.wait_for_status("connected")
            await hub.publish("t", "after")
            assert (await sub.receive()).data == "after"
        assert hub.subscribers("t") == 1
        assert "unreachable" in caplog.text
        assert "broadcast resumed" in caplog.text


def chat_member(port: int, room: str, name: str) -> Any:
    return open_client(f"ws://127.0.0.1:{port}/ws/{room}?name={name}")


async def until(ws: Any, predicate: Any) -> dict[str, Any]:
    """The next chat message for which ``predicate`` holds (others, e.g. join notices, are skipped)."""
    while True:
        message = json.loads(await ws.get_message())
        message.pop("id")  # the chat sends each message with its id
        if predicate(message):
            return message  # type: ignore[no-any-return]


async def test_two_server_processes_share_a_chat_room_through_redis_even_across_a_restart() -> None:
    async with RedisServer() as redis:
        env = {"BROADCAST_URL": redis.url}
        first, first_port, _ = await start_cli("examples.chat:app", env=env)
        second, second_port, _ = await start_cli("examples.chat:app", env=env)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain_stderr, first)
                nursery.start_soon(drain_stderr, second)
                with trio.fail_after(DEADLINE):
                    async with (
                        chat_member(first_port, "lobby", "ann") as ann,
                        chat_member(second_port, "lobby", "bob") as bob,
                    ):
                        await until(ann, lambda m: m.get("system") == "bob joined lobby")
                        await ann.send_message("hello from process one")
                        got = await until(bob, lambda m: "text" in m)
                        assert got == {"from": "ann", "text": "hello from process one"}

                        await redis.stop()
                        await redis.start()
                        # Delivery is at most once during the outage: resend until one arrives.
                        arrived = trio.Event()

                        async def keep_saying() -> None:
                            for i in range(1000):
                                await bob.send_message(f"after restart {i}")
                                with trio.move_on_after(0.2):
                                    await arrived.wait()
                                    return

                        async with trio.open_nursery() as talk:
                            talk.start_soon(keep_saying)
                            got = await until(ann, lambda m: m.get("from") == "bob")
                            arrived.set()
                        assert got["text"].startswith("after restart")
                nursery.cancel_scope.cancel()
        finally:
            for process in (first, second):
                await stop_process(process)
