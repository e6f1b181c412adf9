"""A hub's figures: ``Broadcast.stats()``, ``topic_stats()`` and ``open_hubs()``."""

from __future__ import annotations

import pytest
import trio

from trio_asgi_ws._broadcast_stats import Figures, merge_figures
from trio_asgi_ws.broadcast import START, TopicStats, figures, open_broadcast, open_hubs


async def test_stats_count_publishes_deliveries_drops_by_policy_and_what_waits() -> None:
    async with open_broadcast("memory://", history=5) as hub:
        empty = hub.stats()
        assert (empty.status, empty.published, empty.received, empty.delivered) == ("connected", 0, 0, 0)
        assert (empty.dropped, empty.subscriptions, empty.buffered, empty.fullest) == ({}, 0, 0, 0.0)
        async with (
            hub.subscribe("a", max_buffer=2, overflow="drop_oldest") as oldest,
            hub.subscribe("a", max_buffer=4, overflow="drop_newest"),
        ):
            for n in range(3):
                await hub.publish("a", n)
            await hub.publish("nobody", "x")
            oldest.receive_nowait()
            stats = hub.stats()
            assert (stats.published, stats.received, stats.delivered) == (4, 4, 1)
            assert stats.dropped == {"drop_oldest": 1, "drop_newest": 0}
            assert (stats.subscriptions, stats.buffered, stats.fullest) == (2, 1 + 3, 0.75)
        async with hub.subscribe("a", max_buffer=1, overflow="close") as closing:
            await hub.publish("a", "1")
            await hub.publish("a", "2")  # overflows: the subscription ends, still open for reading
            assert closing.too_slow
            assert hub.stats().subscriptions == 1
        async with hub.subscribe("a", since=START) as resumed:
            assert resumed.replayed == 5
        stats = hub.stats()  # closed subscriptions keep counting in the totals
        assert (stats.published, stats.delivered, stats.replayed, stats.subscriptions) == (6, 1, 5, 0)
        assert stats.dropped == {"drop_oldest": 1, "drop_newest": 0, "close": 1}
        assert stats.topics == {} and stats.lost == 0


async def test_per_topic_figures_only_for_topics_the_app_labels() -> None:
    def label(topic: str) -> str | None:
        return topic.split(":")[0] if topic.startswith(("chat:", "ticker:")) else None

    async with open_broadcast("memory://", topic_label=label) as hub:
        async with hub.subscribe("chat:1") as one, hub.subscribe("chat:2"), hub.subscribe("user:7"):
            await hub.publish("chat:1", "hi")
            await hub.publish("ticker:x", "1")  # nobody subscribes: published, nothing else
            await hub.publish("user:7", "private")
            one.receive_nowait()
            assert hub.stats().topics == {
                "chat": TopicStats(subscribers=2, messages=1, delivered=1, dropped=0, buffered=0),
                "ticker": TopicStats(messages=1),
            }
        assert hub.stats().topics["chat"] == TopicStats(subscribers=0, messages=1, delivered=1)


async def test_topic_stats_describe_one_room_in_this_process() -> None:
    async with open_broadcast("memory://") as hub:
        assert hub.topic_stats("room") == TopicStats()
        async with hub.subscribe("room", max_buffer=1, overflow="drop_newest") as sub, hub.subscribe("room"):
            await hub.publish("room", "1")
            await hub.publish("room", "2")
            sub.receive_nowait()
            assert hub.topic_stats("room") == TopicStats(
                subscribers=2, messages=2, delivered=1, dropped=1, buffered=2
            )
        await hub.publish("room", "3")  # no subscribers: not counted for the room
        assert hub.topic_stats("room") == TopicStats()


async def test_open_hubs_lists_the_hubs_whose_block_is_running() -> None:
    assert open_hubs() == []
    async with open_broadcast("memory://") as first, open_broadcast("memory://") as second:
        assert set(open_hubs()) == {first, second}
    assert open_hubs() == []
    with pytest.raises(RuntimeError, match="boom"):
        async with open_broadcast("memory://"):
            raise RuntimeError("boom")
    assert open_hubs() == []
    await trio.lowlevel.checkpoint()


async def test_the_process_figures_sum_open_hubs_and_keep_what_closed_hubs_counted() -> None:
    """What the metrics export (``broadcast.figures()``): counters never go down when a hub
    closes; gauges are the open hubs' alone; workers' figures add up (``merge_figures``)."""
    start = figures()  # hubs of earlier tests in this process count too

    def moved(now: Figures) -> Figures:
        return {
            name: now[name] - start[name]
            for name in ("published", "received", "delivered", "replayed", "lost")
        }

    async with open_broadcast(
        "memory://", topic_label=lambda t: "rooms" if t.startswith("room:") else None
    ) as one:
        async with (
            open_broadcast("memory://", history=2) as two,
            one.subscribe("room:1", max_buffer=1, overflow="drop_newest") as slow,
        ):
            for n in range(3):
                await one.publish("room:1", n)
            slow.receive_nowait()
            async with two.subscribe("x"), two.subscribe("y", since=START):
                await two.publish("x", "1")
                now = figures()
                assert moved(now) == {
                    "published": 4,
                    "received": 4,
                    "delivered": 1,
                    "replayed": 0,
                    "lost": 0,
                }
                assert now["dropped"]["drop_newest"] - start["dropped"].get("drop_newest", 0) == 2
                assert (now["subscriptions"], now["buffered"], now["fullest"]) == (3, 1, 1 / 64)
                assert now["hubs"] == {"connected": 2}
                assert now["topics"]["rooms"]["subscriptions"] == 1
                assert merge_figures([now, now])["buffered"] == 2  # two workers
                retired = merge_figures([now], gauges=False)["topics"]["rooms"]  # an exited one
                assert (
                    "subscriptions" not in retired
                    and retired["published"] == now["topics"]["rooms"]["published"]
                )
                assert (
                    now["topics"]["rooms"]["published"] - start["topics"].get("rooms", {}).get("published", 0)
                    == 3
                )
        after_two = figures()  # its counters stay; its gauges go
        assert moved(after_two)["published"] == 4
        assert (after_two["subscriptions"], after_two["hubs"]) == (0, {"connected": 1})
    both = merge_figures([after_two, after_two])
    assert both["published"] == 2 * after_two["published"]
    assert both["hubs"] == {"connected": 2} and both["fullest"] == after_two["fullest"]
    gone = merge_figures([after_two], gauges=False)  # a worker that has exited
    assert (gone["published"], gone["subscriptions"], gone["hubs"]) == (after_two["published"], 0, {})


async def test_figures_add_up_over_subscriptions_policies_labels_and_closed_ones() -> None:
    start = figures()

    def label(topic: str) -> str | None:
        return topic.split(":")[0] if ":" in topic else None

    async with open_broadcast("memory://", history=5, topic_label=label) as hub:
        for n in range(3):
            await hub.publish("room:a", n)
        for n in range(2):
            await hub.publish("room:b", n)
        async with (
            hub.subscribe("room:a", since=START, max_buffer=1) as a,
            hub.subscribe("room:b", since=START, max_buffer=1) as b,
            hub.subscribe("room:b", max_buffer=2, overflow="drop_newest") as b_newest,
            hub.subscribe("quiet:x"),
        ):
            for n in range(3):
                await hub.publish("room:a", n)
                await hub.publish("room:b", n)
            assert hub.topic_stats("room:b") == TopicStats(
                subscribers=2, messages=3, delivered=0, dropped=2 + 1, buffered=1 + 2
            )
            a.receive_nowait()  # a replayed message
            b.receive_nowait()
            b.receive_nowait()
            stats = hub.stats()
            assert (stats.replayed, stats.delivered) == (3 + 2, 3)
            assert stats.dropped == {"drop_oldest": 2 + 2, "drop_newest": 1}
            assert stats.topics["room"] == TopicStats(
                subscribers=3, messages=11, delivered=3, dropped=5, buffered=1 + 1 + 2
            )
            assert stats.topics["quiet"] == TopicStats(subscribers=1)  # subscribed, never published
            assert b_newest.buffered == 2
        stats = hub.stats()  # all four closed: their final counts add up
        assert (stats.replayed, stats.delivered, stats.subscriptions) == (5, 3, 0)
        assert stats.topics["room"] == TopicStats(subscribers=0, messages=11, delivered=3, dropped=5)
    after = figures()["topics"]["room"]  # the closed hub's per-label counters stay
    before = start["topics"].get("room", {})
    assert {key: after[key] - before.get(key, 0) for key in ("published", "delivered", "dropped")} == {
        "published": 11,
        "delivered": 3,
        "dropped": 5,
    }
