"""The broadcast hub (memory backend) under random subscribe / unsubscribe / publish / read schedules.

One driver task subscribes, unsubscribes, publishes and pauses in a random order, so the model
knows exactly which messages each subscription was offered: those published on its topic while
it was subscribed.  Subscriptions read at their own pace: a reader task iterating (or calling
``receive()``) with a delay per message, stopped (cancelled) at random, or none at all, leaving
the driver to drain with ``receive_nowait()``.  Every policy and buffer size is mixed in.  After
the hub closes, every reader must have ended, and for each subscription:

- what it received is in publication order, without duplicates, from its own topic only, and
  drawn from what it was offered (cancelling a reader loses nothing);
- ``delivered`` counts what it received, ``buffered`` what is left, ``peak_buffered`` stays within
  ``max_buffer`` (plus the one message a waiting reader is handed directly), and
  ``delivered + dropped == offered``: exactly, for every policy (for ``close``, up to the message
  that overflowed it, after which it is no longer subscribed);
- ``block`` and ``close`` drop nothing; ``drop_oldest`` always keeps the newest message and
  ``drop_newest`` (like ``close`` and ``block``) the first one;
- a ``close`` subscription ends with ``SubscriberTooSlow`` exactly when it overflowed, and its
  readers see everything buffered before that;
- presence (``hub.subscribers``) matches the model throughout, and no task outlives the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
from hypothesis import event, given
from hypothesis import strategies as st

from tests.strategies import live_tasks, property_settings, run_on_mock_clock
from trio_asgi_ws.broadcast import (
    Broadcast,
    BroadcastMessage,
    Overflow,
    SubscriberTooSlow,
    Subscription,
    open_broadcast,
)

TOPICS = ("a", "b")
POLICIES: tuple[Overflow, ...] = ("drop_oldest", "drop_newest", "close", "block")

# -- the schedule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    topic: str
    max_buffer: int
    overflow: Overflow
    reader_delay: float | None  # None: no reader task (the driver drains now and then)
    iterate: bool  # the reader uses ``async for``, else ``await receive()``


@dataclass(frozen=True)
class Unsubscribe:
    which: int  # picks a live subscription, modulo their number


@dataclass(frozen=True)
class Publish:
    topic: str
    count: int


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Drain:
    which: int


@dataclass(frozen=True)
class StopReader:
    which: int


Step = Subscribe | Unsubscribe | Publish | Pause | Drain | StopReader

subscribes = st.builds(
    lambda topic, max_buffer, overflow, delay, iterate: Subscribe(
        topic, max_buffer, overflow, 0.0 if overflow == "block" and delay is None else delay, iterate
    ),
    st.sampled_from(TOPICS),
    st.sampled_from([1, 2, 3, 8]),
    st.sampled_from(POLICIES),
    st.sampled_from([None, 0.0, 0.001, 0.01, 0.05]),
    st.booleans(),
)
indices = st.integers(0, 7)
steps: st.SearchStrategy[Step] = st.sampled_from(
    [subscribes] * 3
    + [st.builds(Publish, st.sampled_from(TOPICS), st.integers(1, 12))] * 4
    + [
        st.builds(Unsubscribe, indices),
        st.builds(Pause, st.sampled_from([0.0, 0.002, 0.02, 0.1])),
        st.builds(Drain, indices),
        st.builds(StopReader, indices),
    ]
).flatmap(lambda strategy: strategy)

# -- running a schedule --------------------------------------------------------------------------


@dataclass(eq=False)
class Tracked:
    """One subscription and what the model expects of it."""

    spec: Subscribe
    sub: Subscription
    offered: list[int] = field(default_factory=list)
    received: list[tuple[str, int]] = field(default_factory=list)
    subscribed: bool = True  # in the model: entered, not left, not ended by an overflow
    overflowed_at: int | None = None  # the publication that overflowed a close-policy subscription
    reader_scope: trio.CancelScope | None = None
    reader_done: bool = True
    reader_stopped: bool = False
    too_slow_raised: bool = False
    lowest_buffered: int = 0  # as a reader sees it right after each message
    errors: list[BaseException] = field(default_factory=list)

    def take(self, message: BroadcastMessage) -> None:
        self.received.append((message.topic, int(str(message.data))))
        self.lowest_buffered = min(self.lowest_buffered, self.sub.buffered)

    def drain(self) -> None:
        while True:
            try:
                self.take(self.sub.receive_nowait())
            except trio.WouldBlock:
                return


async def read(tracked: Tracked, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    spec = tracked.spec
    tracked.reader_done = False
    try:
        with trio.CancelScope() as tracked.reader_scope:
            task_status.started()
            if spec.iterate:
                async for message in tracked.sub:
                    tracked.take(message)
                    await trio.sleep(spec.reader_delay or 0)
            else:
                while True:
                    tracked.take(await tracked.sub.receive())
                    await trio.sleep(spec.reader_delay or 0)
    except StopAsyncIteration:
        pass
    except SubscriberTooSlow:
        tracked.too_slow_raised = True
    except Exception as error:
        tracked.errors.append(error)
    finally:
        tracked.reader_done = True


def check_presence(hub: Broadcast, tracked: list[Tracked]) -> None:
    for topic in TOPICS:
        expected = sum(t.subscribed and t.spec.topic == topic for t in tracked)
        assert hub.subscribers(topic) == expected, (topic, expected)


class Driver:
    """Carries out a schedule's steps one at a time, keeping the model up to date."""

    def __init__(self, hub: Broadcast, readers: trio.Nursery) -> None:
        self.hub = hub
        self.readers = readers
        self.tracked: list[Tracked] = []
        self.published = 0

    async def step(self, step: Step) -> None:
        tracked = self.tracked
        live = [t for t in tracked if t.subscribed]
        if isinstance(step, Subscribe):
            subscription = self.hub.subscribe(step.topic, max_buffer=step.max_buffer, overflow=step.overflow)
            t = Tracked(step, await subscription.__aenter__())
            tracked.append(t)
            if step.reader_delay is not None:
                await self.readers.start(read, t)
        elif isinstance(step, Publish):
            for _ in range(step.count):
                await self.publish(step.topic)
        elif isinstance(step, Unsubscribe) and live:
            await self.leave(live[step.which % len(live)])
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        elif isinstance(step, Drain) and tracked:
            t = tracked[step.which % len(tracked)]
            if t.reader_done:
                t.drain()
        elif isinstance(step, StopReader) and tracked:
            t = tracked[step.which % len(tracked)]
            if t.reader_scope is not None and t.spec.overflow != "block":  # block needs its reader
                t.reader_scope.cancel()
                t.reader_stopped = True
        check_presence(self.hub, tracked)

    async def publish(self, topic: str) -> None:
        receivers = [t for t in self.tracked if t.subscribed and t.spec.topic == topic]
        await self.hub.publish(topic, str(self.published))
        for t in receivers:
            if t.sub.too_slow and t.overflowed_at is None:
                t.overflowed_at, t.subscribed = self.published, False
            else:
                t.offered.append(self.published)
        self.published += 1

    async def leave(self, t: Tracked) -> None:
        await t.sub.__aexit__(None, None, None)
        t.subscribed = False


async def run_schedule(schedule: list[Step]) -> list[Tracked]:
    baseline = live_tasks()
    with trio.fail_after(3600):
        # Leaving this line closes the hub first; the readers must then end by themselves.
        async with trio.open_nursery() as readers, open_broadcast("memory://") as hub:
            driver = Driver(hub, readers)
            for step in schedule:
                await driver.step(step)
            for t in driver.tracked:  # some leave on their own, the rest end with the hub
                if t.subscribed and t.spec.max_buffer % 2:
                    await driver.leave(t)
    for t in driver.tracked:
        assert t.reader_done
        t.drain()
    assert live_tasks() == baseline
    return driver.tracked


def check_subscription(t: Tracked) -> None:
    sub, spec = t.sub, t.spec
    assert not t.errors, t.errors
    assert {topic for topic, _ in t.received} <= {spec.topic}
    got = [index for _, index in t.received]
    assert got == sorted(set(got)), f"out of order or duplicated: {got}"
    assert set(got) <= set(t.offered), "received something it was not offered"
    assert (sub.delivered, sub.buffered) == (len(got), 0)
    if spec.overflow == "block" and t.lowest_buffered < 0:
        event("known bug seen: block policy's buffered read -1 by a reader")  # see the xfail below
    else:
        assert t.lowest_buffered >= 0, f"a reader saw buffered={t.lowest_buffered}"
    # A message sent while the reader waits in receive() goes to it directly, so one more than
    # max_buffer can be on its way at once (and is counted in buffered, as not yet received).
    assert sub.peak_buffered <= spec.max_buffer + (spec.reader_delay is not None)
    assert sub.delivered + sub.dropped == len(t.offered), (sub.delivered, sub.dropped, t.offered)
    if spec.overflow in ("block", "close"):
        assert got == t.offered and sub.dropped == 0
    if t.offered and spec.overflow == "drop_oldest":
        assert got[-1] == t.offered[-1], "drop_oldest lost the newest message"
    if t.offered and spec.overflow != "drop_oldest":
        assert got[0] == t.offered[0], f"{spec.overflow} lost the first message"
    assert sub.too_slow == (t.overflowed_at is not None)
    if spec.reader_delay is not None and not t.reader_stopped:  # a reader that read to the end
        assert t.too_slow_raised == sub.too_slow
    if sub.too_slow:
        assert spec.overflow == "close"
    event(
        f"{spec.overflow}: {'dropped some' if sub.dropped else 'overflowed' if sub.too_slow else 'lost none'}"
    )


@property_settings(1000)
@given(st.lists(steps, min_size=1, max_size=25))
def test_every_subscriber_gets_its_topic_in_order_and_counts_every_message(schedule: list[Step]) -> None:
    tracked = run_on_mock_clock(lambda: run_schedule(schedule))
    for t in tracked:
        check_subscription(t)


@pytest.mark.xfail(
    strict=True,
    reason="question for the lead: the message that overflows a close-policy subscription is "
    "counted neither in delivered nor in dropped, so delivered + dropped == published - 1 for it",
)
@property_settings(30)
@given(max_buffer=st.integers(1, 4), extra=st.integers(1, 4))
def test_a_close_policy_overflow_counts_the_message_it_lost(max_buffer: int, extra: int) -> None:
    async def main() -> Subscription:
        async with (
            open_broadcast() as hub,
            hub.subscribe("t", max_buffer=max_buffer, overflow="close") as sub,
        ):
            for i in range(max_buffer + extra):
                await hub.publish("t", str(i))
            while sub.buffered:
                await sub.receive()
            return sub

    sub = run_on_mock_clock(main)
    assert sub.too_slow
    assert sub.delivered + sub.dropped == max_buffer + 1  # published while it was subscribed


@pytest.mark.xfail(
    strict=True,
    reason="bug: under the block policy, _offer_blocking counts a message as buffered only after "
    "its awaited send; a reader that was waiting runs first and counts it delivered, so buffered "
    "reads -1 (a `while sub.buffered: sub.receive_nowait()` catch-up loop then gets WouldBlock)",
)
@property_settings(30)
@given(max_buffer=st.integers(1, 3), count=st.integers(1, 12))
def test_buffered_never_reads_negative_under_the_block_policy(max_buffer: int, count: int) -> None:
    seen: list[int] = []

    async def main() -> None:
        async with (
            open_broadcast() as hub,
            hub.subscribe("t", max_buffer=max_buffer, overflow="block") as sub,
            trio.open_nursery() as nursery,
        ):

            async def reader() -> None:
                async for _ in sub:
                    seen.append(sub.buffered)
                    if len(seen) == count:
                        return

            nursery.start_soon(reader)
            for i in range(count):
                await hub.publish("t", str(i))

    run_on_mock_clock(main)
    assert min(seen) >= 0, seen
