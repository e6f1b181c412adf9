"""The broadcast hub (memory backend) under random subscribe / unsubscribe / publish / read schedules.

One driver task subscribes, unsubscribes, publishes and pauses in a random order, so the model
knows exactly which messages each subscription was offered: those published on its topic while
it was subscribed.  Subscriptions read at their own pace: a reader task iterating (or calling
``receive()``) with a delay per message, stopped (cancelled) at random, or none at all, leaving
the driver to drain with ``receive_nowait()``.  Every policy and buffer size is mixed in.  After
the hub closes, every reader must have ended, and for each subscription:

- what it received is in publication order, without duplicates, from its own topic only, and
  drawn from what it was offered (cancelling a reader loses nothing);
- ``delivered`` counts what it received, ``buffered`` what is left (never negative, as a reader
  sees it), ``peak_buffered`` stays within ``max_buffer`` (a message handed to a waiting reader
  is never buffered), and ``delivered + dropped + discarded == offered`` exactly, for every
  policy: ``offered`` is what was published on its topic while it was subscribed (for ``close``,
  up to and including the message that overflowed it, which counts as dropped), ``discarded``
  what was still buffered when its subscriber left it;
- ``block`` drops nothing, ``close`` only the message that overflowed it; ``drop_oldest`` always
  keeps the newest message and ``drop_newest`` (like ``close`` and ``block``) the first one;
- it ends as the model says, both for its reader (if one read to the end) and for a final
  ``receive_nowait()``: ``trio.ClosedResourceError`` if its subscriber left it,
  ``SubscriberTooSlow`` if it overflowed under ``close``, else ``trio.EndOfChannel`` (the hub
  closed; ``async for`` stops quietly);
- presence (``hub.subscribers``) matches the model throughout, and no task outlives the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    left: bool = False  # its subscriber left it (``__aexit__``)
    discarded: int = 0  # what was still buffered when it was left
    reader_scope: trio.CancelScope | None = None
    reader_done: bool = True
    reader_stopped: bool = False
    reader_end: str | None = None  # how the reader learnt that the subscription ended
    lowest_buffered: int = 0  # as a reader sees it right after each message
    errors: list[BaseException] = field(default_factory=list)

    def take(self, message: BroadcastMessage) -> None:
        self.received.append((message.topic, int(str(message.data))))
        self.lowest_buffered = min(self.lowest_buffered, self.sub.buffered)

    def drain(self) -> str:
        """Read what is buffered with ``receive_nowait()``; return why it stopped."""
        while True:
            try:
                self.take(self.sub.receive_nowait())
            except trio.WouldBlock:
                return "empty"
            except BaseException as error:  # sorted by ending(), which re-raises the rest
                return ending(error)

    @property
    def expected_end(self) -> str:
        if self.left:
            return "closed"
        return "too slow" if self.overflowed_at is not None else "end of channel"


def ending(error: BaseException) -> str:
    """How a subscription reported its end, by the exception its reader got."""
    if isinstance(error, trio.EndOfChannel):
        return "end of channel"
    if isinstance(error, SubscriberTooSlow):
        return "too slow"
    if isinstance(error, trio.ClosedResourceError):
        return "closed"
    raise error


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
                tracked.reader_end = "end of channel"  # async for stops quietly at the end
            else:
                while True:
                    tracked.take(await tracked.sub.receive())
                    await trio.sleep(spec.reader_delay or 0)
    except (trio.EndOfChannel, SubscriberTooSlow, trio.ClosedResourceError) as error:
        tracked.reader_end = ending(error)
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
            t.offered.append(self.published)
            if t.sub.too_slow and t.overflowed_at is None:
                t.overflowed_at, t.subscribed = self.published, False
        self.published += 1

    async def leave(self, t: Tracked) -> None:
        t.discarded = t.sub.buffered
        await t.sub.__aexit__(None, None, None)
        t.subscribed, t.left = False, True
        assert t.sub.buffered == 0


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
        assert t.drain() == t.expected_end
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
    assert t.lowest_buffered >= 0, f"a reader saw buffered={t.lowest_buffered}"
    assert sub.peak_buffered <= spec.max_buffer
    assert sub.delivered + sub.dropped + t.discarded == len(t.offered), (
        sub.delivered,
        sub.dropped,
        t.discarded,
        t.offered,
    )
    kept = t.offered[: len(t.offered) - t.discarded]  # what its subscriber could still read
    if spec.overflow == "block":
        assert got == kept and sub.dropped == 0
    if spec.overflow == "close":
        assert got == kept[: len(kept) - sub.too_slow] and sub.dropped == sub.too_slow
    if kept and spec.overflow == "drop_oldest" and not t.discarded:
        assert got[-1] == t.offered[-1], "drop_oldest lost the newest message"
    if got and spec.overflow != "drop_oldest":
        assert got[0] == t.offered[0], f"{spec.overflow} lost the first message"
    assert sub.too_slow == (t.overflowed_at is not None)
    if spec.reader_delay is not None and not t.reader_stopped:  # a reader that read to the end
        assert t.reader_end == t.expected_end
    if sub.too_slow:
        assert spec.overflow == "close"
    lost = "dropped some" if sub.dropped else "discarded some" if t.discarded else "lost none"
    event(f"{spec.overflow}: {lost}; ended by {t.expected_end}")


@property_settings(1000)
@given(st.lists(steps, min_size=1, max_size=25))
def test_every_subscriber_gets_its_topic_in_order_and_counts_every_message(schedule: list[Step]) -> None:
    tracked = run_on_mock_clock(lambda: run_schedule(schedule))
    for t in tracked:
        check_subscription(t)


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
