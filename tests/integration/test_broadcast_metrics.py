"""The broadcast figures on a real server's ``/metrics``: the chat example's hub, served with
``metrics_port``, moved by real clients.  Counters are compared with the first scrape: they
include what hubs of earlier tests in this process counted (counters never go down)."""

from __future__ import annotations

import trio

from examples import chat
from tests.integration.conftest import open_client
from tests.integration.metrics_scrape import Samples, free_port, scrape, value, wait_for
from tests.integration.served import served
from trio_asgi_ws.metrics import PREFIX

DEADLINE = 10.0


async def test_the_chat_hub_moves_the_broadcast_metrics() -> None:
    port = free_port()
    async with served(chat.app, metrics_port=port) as server:
        before = await scrape(port)
        assert value(before, PREFIX + "broadcast_hubs", status="connected") == 1
        assert value(before, PREFIX + "broadcast_subscriptions") == 0

        def moved(samples: Samples, name: str) -> float:
            return value(samples, PREFIX + name) - value(before, PREFIX + name)

        with trio.fail_after(DEADLINE):
            async with (
                open_client(server.url("/ws/attic?name=ann")) as ann,
                open_client(server.url("/ws/attic?name=bob")) as bob,
            ):
                await bob.send_message("hello")
                while "hello" not in await ann.get_message():
                    pass
                during = await wait_for(port, lambda s: moved(s, "broadcast_delivered_total") >= 5)
                assert value(during, PREFIX + "broadcast_subscriptions") == 2
                assert moved(during, "broadcast_published_total") == 3  # 2 joins, 1 text
                assert moved(during, "broadcast_received_total") == 3
                assert value(during, PREFIX + "broadcast_fullest_buffer_ratio") < 1
            after = await wait_for(
                port,
                lambda s: (
                    value(s, PREFIX + "broadcast_subscriptions") == 0
                    and moved(s, "broadcast_published_total") == 5
                ),  # and 2 leaves
            )
            async with open_client(server.url("/ws/attic?name=cy")) as cy:  # joins: the history
                for _ in range(5 + 1):
                    await cy.get_message()
            replayed = await wait_for(port, lambda s: moved(s, "broadcast_replayed_total") >= 6)
        assert moved(after, "broadcast_delivered_total") >= 6
        # Every chat join replays the room's history: bob got ann's join, cy all 5 messages.
        assert moved(replayed, "broadcast_replayed_total") == 1 + 5
        assert moved(replayed, "broadcast_lost_total") == 0
