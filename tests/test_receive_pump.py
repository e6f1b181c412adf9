"""``ReceivePump`` on its own: the reader role, the takeover, the bounds, the disconnect.

Each test drives one pump (with the run's watcher, ``_watcher.py``) with a scripted handler and a
trio memory channel as the server's ``receive()``, on a ``MockClock`` that moves only when the test
jumps it: every step of the takeover is checked at its boundary (just before the look nothing
happens, at it the pump takes over), and every path is asserted to have been taken (who read each
message from the server, whether the reader's read was cancelled), never inferred from timing.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from trio_asgi_ws._pump import _HANDOVER, ReceivePump
from trio_asgi_ws._types import Message
from trio_asgi_ws._watcher import _WATCHER, LONGEST_LOOK_INTERVAL, LOOK_INTERVAL, watch

DELAY = 1.0  # takeover_delay
LINGER = 10.0


def data(text: str) -> Message:
    return {"type": "websocket.receive", "text": text, "bytes": None}


def texts(messages: list[Message]) -> list[str]:
    return [message.get("text") or message["type"] for message in messages]


@dataclass
class Rig:
    """One pump, the server channel behind it, and a record of what happened."""

    clock: trio.testing.MockClock
    pump: ReceivePump
    to_server: trio.MemorySendChannel[Message]
    readers: list[str] = field(default_factory=list)  # "handler" or "pump", per message read
    server_reads_cancelled: int = 0
    in_receive: bool = False
    disconnects: list[Message] = field(default_factory=list)
    gone: int = 0
    overflows: int = 0
    _from_server: trio.MemoryReceiveChannel[Message] = field(init=False, repr=False)

    async def handler_receive(self) -> Message:
        """What ``WebSocket.receive`` does with the pump."""
        self.in_receive = True
        try:
            if self.pump.relaying:
                return await self.pump.receive_relayed()
            return await self.server_receive_as("handler")
        finally:
            self.in_receive = False
            self.pump.departures += 1

    def handler_send(self) -> None:
        """What ``WebSocket.send`` does with the pump (while no task of the handler receives)."""
        if self.pump.departure_sent != self.pump.departures:
            self.pump.departure_sent = self.pump.departures
        else:
            self.pump.handler_sent()

    async def handler_receive_during_hand_back(self, text: str) -> Message:
        """Receive while the buffer is empty and the pump reads: the hand-back, then ``text``."""
        got: list[Message] = []
        cancelled_before = self.server_reads_cancelled

        async def handler() -> None:
            got.append(await self.handler_receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler)
            await self.step(0)
            assert self.server_reads_cancelled == cancelled_before + 1  # the pump's read, cancelled
            assert not self.pump.relaying
            self.to_server.send_nowait(data(text))
        return got[0]

    async def wait_through_a_look(self, look_in: float, leave_after: float = 0.0) -> None:
        """Wait in receive() while the pump looks ``look_in`` from now (a wasted look), then
        get a message ``leave_after`` later and leave."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handler_receive)
            await self.step(look_in)
            await self.step(leave_after)
            self.to_server.send_nowait(data("x"))

    async def server_receive_as(self, who: str) -> Message:
        try:
            message = await self._from_server.receive()
        except trio.Cancelled:
            self.server_reads_cancelled += 1
            raise
        self.readers.append(who)
        return message

    async def step(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, then let every task run until all block."""
        await trio.testing.wait_all_tasks_blocked()
        self.clock.jump(seconds)
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def pump_rig(**options: Any) -> AsyncIterator[Rig]:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    to_server, from_server = trio.open_memory_channel[Message](math.inf)
    rig: Rig

    async def server_receive() -> Message:
        current = trio.lowlevel.current_task()
        return await rig.server_receive_as("pump" if current.name == READER_NAME else "handler")

    settings: dict[str, Any] = {
        "max_messages": 4,
        "max_bytes": 100,
        "takeover_delay": DELAY,
        "linger": LINGER,
    }
    settings.update(options)
    pump = ReceivePump(
        server_receive,
        handler_in_receive=lambda: rig.in_receive,
        on_disconnect=lambda message: rig.disconnects.append(message),
        on_gone=lambda: setattr(rig, "gone", rig.gone + 1),
        on_overflow=lambda: setattr(rig, "overflows", rig.overflows + 1),
        **settings,
    )
    rig = Rig(clock, pump, to_server)
    rig._from_server = from_server

    async with trio.open_nursery() as nursery:
        pump.attach(nursery, "/rig")
        yield rig
        pump.stop()
        nursery.cancel_scope.cancel()


READER_NAME = "trio_asgi_ws pump /rig"


def readers_running() -> int:
    """How many reader tasks the pump has started and not yet finished."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack, count = [root], 0
    while stack:
        task = stack.pop()
        count += task.name == READER_NAME
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()  # moves only when a test jumps it


# -- taking the reader role over -------------------------------------------------------------


async def test_the_pump_takes_over_exactly_takeover_delay_after_start(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        rig.to_server.send_nowait(data("a"))
        await rig.step(DELAY * 0.999)
        assert not rig.pump.relaying and rig.readers == []
        await rig.step(DELAY * 0.001)
        assert rig.pump.relaying and rig.readers == ["pump"]
        assert texts([await rig.handler_receive()]) == ["a"]  # from the buffer


async def test_nothing_happens_before_start(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        rig.to_server.send_nowait(data("a"))
        assert texts([await rig.handler_receive()]) == ["a"]  # a read before accept arms nothing
        rig.to_server.send_nowait(data("b"))
        await rig.step(DELAY * 100)
        assert not rig.pump.relaying and rig.readers == ["handler"]


async def test_a_handler_that_keeps_reading_keeps_the_fast_path(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        for i in range(10):
            await rig.step(DELAY * 0.6)  # away for less than the delay, then back
            rig.to_server.send_nowait(data(str(i)))
            assert texts([await rig.handler_receive()]) == [str(i)]
        assert rig.readers == ["handler"] * 10
        assert not rig.pump.relaying


async def test_a_read_meanwhile_rearms_for_a_whole_delay_from_the_look(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY * 0.5)
        rig.to_server.send_nowait(data("a"))
        await rig.handler_receive()  # read at 0.5: the deadline stays at 1.0 (already armed)
        await rig.step(DELAY * 0.5)  # the look at 1.0 sees a read since arming: re-arm to 2.0
        rig.to_server.send_nowait(data("b"))
        await rig.step(DELAY * 0.999)
        assert rig.readers == ["handler"]
        await rig.step(DELAY * 0.001)
        assert rig.readers == ["handler", "pump"]


async def test_a_handler_in_receive_at_a_look_is_looked_at_again_a_look_interval_later(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(0)  # the first look: away since the accept, looked at again at DELAY
        # In receive() at that look: the next one is LOOK_INTERVAL later, whatever it does meanwhile.
        await rig.wait_through_a_look(DELAY, leave_after=DELAY * 0.5)
        await rig.step(LOOK_INTERVAL - DELAY * 0.5 - DELAY * 0.001)
        rig.to_server.send_nowait(data("b"))
        await rig.step(0)
        assert rig.readers == ["handler"] and readers_running() == 0
        await rig.step(DELAY * 0.001)  # the look: away, and it left since the last look
        await rig.step(DELAY * 0.999)
        assert rig.readers == ["handler"]
        await rig.step(DELAY * 0.001)  # away at two looks DELAY apart: taken over
        assert rig.readers == ["handler", "pump"] and readers_running() == 1


async def test_looks_at_a_handler_found_in_receive_back_off_to_the_longest_interval(
    clock: trio.testing.MockClock,
) -> None:
    """Looks at 0, 2, 6, 14, 30, 46 (each interval doubled from LOOK_INTERVAL, up to the longest):
    a handler that leaves receive() just after the look at 30 gets its reader at 46 + DELAY."""
    assert (LOOK_INTERVAL, LONGEST_LOOK_INTERVAL) == (2.0, 16.0)
    async with pump_rig() as rig, trio.open_nursery() as nursery:
        nursery.start_soon(rig.handler_receive)
        await rig.step(0)
        rig.pump.start()
        for interval in (0, 2, 4, 8, 16):  # in receive() at the looks at 0, 2, 6, 14 and 30
            await rig.step(interval)
        await rig.step(0.5)
        rig.to_server.send_nowait(data("a"))
        await rig.step(0)  # read at 30.5, then away for good
        await rig.step(46 - 30.5 - DELAY * 0.001)
        rig.to_server.send_nowait(data("b"))
        await rig.step(0)
        assert rig.readers == ["handler"] and not rig.pump.relaying
        await rig.step(DELAY * 0.001)  # the look at 46: away
        await rig.step(DELAY * 0.999)
        assert rig.readers == ["handler"]
        await rig.step(DELAY * 0.001)  # away at two looks DELAY apart: taken over
        assert rig.readers == ["handler", "pump"]


async def test_a_look_that_finds_a_new_departure_waits_a_whole_delay_from_then(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(0)  # looked at 0: away
        rig.pump.departures += 1  # it was in receive() and left again between the looks
        await rig.step(DELAY)  # the look: a new departure, so another DELAY from now
        await rig.step(DELAY * 0.999)
        rig.to_server.send_nowait(data("a"))
        await rig.step(0)
        assert rig.readers == []
        await rig.step(DELAY * 0.001)
        assert rig.readers == ["pump"]


async def test_after_a_hand_back_a_handler_away_again_gets_a_reader_within_the_look_bound(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY)  # taken over at the second look
        got = await rig.handler_receive_during_hand_back("a")
        assert texts([got]) == ["a"]
        await rig.step(0)
        assert readers_running() == 0  # the reader task ends with the hand-back
        await rig.step(LOOK_INTERVAL - DELAY * 0.001)  # the next look is at DELAY + LOOK_INTERVAL
        rig.to_server.send_nowait(data("b"))
        await rig.step(0)
        assert rig.readers == ["handler"]
        await rig.step(DELAY * 0.001)  # the look: away since the hand-back
        await rig.step(DELAY)
        assert rig.readers == ["handler", "pump"]


async def test_a_look_that_comes_early_does_not_take_over_early(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(0)  # looked at 0: away; due again at DELAY
        await rig.step(DELAY * 0.5)

        class Other:
            def look(self, now: float) -> float:
                return math.inf

        watch(Other())  # a registration wakes the watcher: it looks at everyone, early
        await rig.step(0)
        assert not rig.pump.relaying
        await rig.step(DELAY * 0.499)
        assert not rig.pump.relaying
        await rig.step(DELAY * 0.001)
        assert rig.pump.relaying


# -- the handler's sends ---------------------------------------------------------------------


async def in_receive_through_the_first_looks(rig: Rig) -> None:
    """Start, and wait in receive() through the watcher's second look: it looks no more."""
    rig.pump.start()
    await rig.step(0)
    await rig.wait_through_a_look(DELAY)  # leaves at DELAY with message "x"
    assert rig.readers == ["handler"]


async def test_a_handler_that_keeps_sending_gets_a_reader_takeover_delay_after_its_second_send(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        await in_receive_through_the_first_looks(rig)
        rig.handler_send()  # the first send after leaving: notes the departure only
        await rig.step(DELAY * 5)
        rig.handler_send()  # the second: notes the time
        await rig.step(DELAY * 0.999)
        rig.handler_send()
        await rig.step(0)
        assert not rig.pump.relaying and readers_running() == 0
        await rig.step(DELAY * 0.001)
        rig.handler_send()  # takeover_delay after the second
        assert rig.pump.relaying
        rig.to_server.send_nowait(data("a"))
        await rig.step(0)
        assert rig.readers == ["handler", "pump"]
        rig.handler_send()  # the pump reads already: nothing more happens
        await rig.step(0)
        assert readers_running() == 1


async def test_a_handler_that_sends_from_the_accept_on_is_timed_from_its_second_send(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        await rig.step(DELAY * 5)  # a clock well past zero
        rig.handler_send()  # the accept: noted
        rig.pump.start()
        rig.handler_send()  # the second send: timed from now
        assert not rig.pump.relaying
        await rig.step(DELAY * 0.5)
        rig.handler_send()
        assert not rig.pump.relaying
        await rig.step(DELAY * 0.5)  # the watcher's second look and this send: both due now
        rig.handler_send()
        assert rig.pump.relaying


async def test_a_handler_that_answers_each_message_once_never_gets_a_reader_by_sending(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        await in_receive_through_the_first_looks(rig)
        for i in range(5):
            rig.handler_send()  # the answer
            await rig.step(DELAY * 2)
            rig.to_server.send_nowait(data(str(i)))
            await rig.handler_receive()
        assert rig.readers == ["handler"] * 6 and readers_running() == 0


async def test_a_receive_between_sends_starts_the_count_again(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        await in_receive_through_the_first_looks(rig)
        rig.handler_send()
        rig.handler_send()  # sending since now
        await rig.step(DELAY)
        rig.to_server.send_nowait(data("a"))
        await rig.handler_receive()
        rig.handler_send()  # a departure again: only noted
        rig.handler_send()  # the time, again
        await rig.step(DELAY * 0.999)
        rig.handler_send()
        assert not rig.pump.relaying
        await rig.step(DELAY * 0.001)
        rig.handler_send()
        assert rig.pump.relaying


async def test_sends_start_no_reader_before_start_or_after_stop(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        for _ in range(3):
            rig.handler_send()
            await rig.step(DELAY * 2)
        assert not rig.pump.relaying
        rig.pump.start()
        rig.pump.stop()
        for _ in range(3):
            rig.handler_send()
            await rig.step(DELAY * 2)
        assert not rig.pump.relaying and readers_running() == 0


# -- the watcher -----------------------------------------------------------------------------


async def test_the_watcher_holds_a_connection_only_from_start_to_stop(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        assert _WATCHER.get(None) is None  # no watcher before the first connection needs one
        rig.pump.start()
        watcher = _WATCHER.get()
        assert len(watcher) == 1
        rig.pump.start()  # twice is once
        assert len(watcher) == 1
        rig.pump.stop()
        assert len(watcher) == 0
        rig.pump.stop()  # twice is once
        rig.pump.start()  # after stop: the block is ending, nothing to watch
        assert len(watcher) == 0
        await rig.step(DELAY * 2)
        assert readers_running() == 0 and not rig.pump.relaying
        # Parked without a deadline: an idle run is not woken by it.
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == math.inf


async def test_a_stopped_pump_with_a_reader_running_is_not_looked_at_again(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY)
        assert readers_running() == 1
        rig.pump.stop()
        assert len(_WATCHER.get()) == 0
        rig.to_server.send_nowait(data("a"))
        await rig.step(0)
        assert rig.readers == ["pump"]  # the running reader carries on until the block ends


# -- giving the role back --------------------------------------------------------------------


async def test_the_handler_takes_the_role_back_by_cancelling_the_pumps_read(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY)
        assert rig.pump.relaying and rig.server_reads_cancelled == 0  # the pump waits in receive()
        got = await rig.handler_receive_during_hand_back("a")
        assert texts([got]) == ["a"] and rig.readers == ["handler"]  # read directly after the marker


async def test_buffered_messages_come_first_then_the_role_comes_back_in_order(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY)
        for text in "abc":
            rig.to_server.send_nowait(data(text))
        await rig.step(0)
        assert rig.readers == ["pump"] * 3
        got = [await rig.handler_receive() for _ in range(3)]
        assert rig.server_reads_cancelled == 0  # the buffer was not empty: no hand-back yet
        rig.to_server.send_nowait(data("d"))
        await rig.step(0)
        assert rig.readers == ["pump"] * 4  # the pump still reads while the handler is away
        got += [await rig.handler_receive(), await rig.handler_receive_during_hand_back("e")]
        assert texts(got) == ["a", "b", "c", "d", "e"]
        assert rig.server_reads_cancelled == 1 and rig.readers[-1] == "handler"


@pytest.mark.parametrize("when", ["before_the_marker", "after_the_marker"])
async def test_a_handler_receive_cancelled_during_the_hand_back_loses_nothing(
    clock: trio.testing.MockClock, when: str
) -> None:
    async with pump_rig() as rig:
        rig.pump.start()
        await rig.step(DELAY)
        with trio.CancelScope() as scope:
            if when == "before_the_marker":
                scope.cancel()  # it asks for the role back, then its first wait is cancelled
                await rig.handler_receive()
            else:  # it got the marker and waits on the server itself: that read is cancelled

                async def cancel_when_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_when_blocked)
                    await rig.handler_receive()
        await rig.step(0)
        assert rig.server_reads_cancelled == (1 if when == "before_the_marker" else 2)
        # Before the marker, the pump queued it for a handler that then left: a stale marker,
        # which the next receive takes and skips.
        rig.to_server.send_nowait(data("a"))
        rig.to_server.send_nowait(data("b"))
        got = [await rig.handler_receive(), await rig.handler_receive()]
        assert texts(got) == ["a", "b"]
        assert rig.readers == ["handler", "handler"]


# -- the buffer's bounds ---------------------------------------------------------------------


async def overflow_after(rig: Rig, messages: list[Message]) -> int:
    """Let the pump take over and feed ``messages``; how many it buffered before overflowing."""
    rig.pump.start()
    while not rig.pump.relaying:  # a second rig in a test may wait for the watcher's next look
        await rig.step(DELAY)
    for message in messages:
        rig.to_server.send_nowait(message)
    await rig.step(0)
    return rig.readers.count("pump") - rig.overflows


@pytest.mark.parametrize("max_messages", [1, 2, 4])
async def test_exactly_max_messages_fit(clock: trio.testing.MockClock, max_messages: int) -> None:
    async with pump_rig(max_messages=max_messages) as rig:
        await overflow_after(rig, [data(str(i)) for i in range(max_messages)])
        assert rig.overflows == 0 and rig.pump.relaying
        rig.to_server.send_nowait(data("one too many"))
        await rig.step(0)
        assert rig.overflows == 1
        assert not rig.pump.relaying or rig.pump._queued_messages == max_messages
        got = [await rig.handler_receive() for _ in range(max_messages)]
        assert texts(got) == [str(i) for i in range(max_messages)]


async def test_exactly_max_bytes_fit_counting_text_and_bytes(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=10, max_bytes=10) as rig:
        binary: Message = {"type": "websocket.receive", "bytes": b"12345", "text": None}
        await overflow_after(rig, [data("abcde"), binary])  # 5 + 5 == max_bytes
        assert rig.overflows == 0
        rig.to_server.send_nowait(data("x"))  # one byte over
        await rig.step(0)
        assert rig.overflows == 1


async def test_text_is_counted_by_its_length(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=10, max_bytes=10) as rig:
        await overflow_after(rig, [data("a" * 9), data("b")])
        assert rig.overflows == 0
        rig.to_server.send_nowait(data(""))  # an empty message still fits
        await rig.step(0)
        assert rig.overflows == 0


async def test_one_message_larger_than_max_bytes_fits_an_empty_buffer_only(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig(max_messages=10, max_bytes=10) as rig:
        await overflow_after(rig, [data("x" * 50)])
        assert rig.overflows == 0
        assert texts([await rig.handler_receive()]) == ["x" * 50]
    async with pump_rig(max_messages=10, max_bytes=10) as rig:
        await overflow_after(rig, [data("a"), data("x" * 50)])
        assert rig.overflows == 1


async def test_the_bounds_free_up_as_the_handler_reads(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=2, max_bytes=4) as rig:
        await overflow_after(rig, [data("ab"), data("cd")])
        assert texts([await rig.handler_receive()]) == ["ab"]
        rig.to_server.send_nowait(data("ef"))  # fits again: one message, 2 bytes were freed
        await rig.step(0)
        assert rig.overflows == 0
        assert texts([await rig.handler_receive(), await rig.handler_receive()]) == ["cd", "ef"]


async def test_reading_frees_exactly_one_message_and_its_bytes(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=3, max_bytes=100) as rig:
        await overflow_after(rig, [data("a"), data("b"), data("c")])
        await rig.handler_receive()  # two left: one more fits, not two
        rig.to_server.send_nowait(data("d"))
        await rig.step(0)
        assert rig.overflows == 0
        rig.to_server.send_nowait(data("e"))
        await rig.step(0)
        assert rig.overflows == 1
    async with pump_rig(max_messages=10, max_bytes=10) as rig:
        await overflow_after(rig, [data("aaa"), data("bbb"), data("ccc")])
        await rig.handler_receive()  # 6 bytes left: 4 more fit, 5 do not
        rig.to_server.send_nowait(data("dddd"))
        await rig.step(0)
        assert rig.overflows == 0
        rig.to_server.send_nowait(data("e"))
        await rig.step(0)
        assert rig.overflows == 1


async def test_a_message_without_payload_counts_no_bytes(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=10, max_bytes=1) as rig:
        bogus: Message = {"type": "websocket.connect"}
        await overflow_after(rig, [data("a"), bogus])
        assert rig.overflows == 0 and rig.readers == ["pump", "pump"]


async def test_an_overflow_stops_the_pump_reading(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=1) as rig:
        await overflow_after(rig, [data("a"), data("b"), data("c")])
        assert rig.overflows == 1
        assert rig.readers == ["pump", "pump"]  # "c" is left with the server


async def test_an_unexpected_message_is_queued_and_the_role_given_back(clock: trio.testing.MockClock) -> None:
    async with pump_rig(max_messages=1) as rig:
        bogus: Message = {"type": "websocket.connect"}
        await overflow_after(rig, [bogus, bogus, bogus])
        assert rig.overflows == 0 and rig.readers == ["pump"]  # stopped after the first
        assert await rig.handler_receive() == bogus
        assert not rig.pump.relaying
        assert await rig.handler_receive() == bogus
        assert rig.readers == ["pump", "handler"]


# -- the disconnect --------------------------------------------------------------------------

DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1001}


async def test_a_disconnect_with_nothing_buffered_ends_the_block_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        await overflow_after(rig, [DISCONNECT])
        assert rig.disconnects == [DISCONNECT] and rig.gone == 1
        assert await rig.handler_receive() == DISCONNECT  # still queued for a reader


async def test_buffered_messages_hold_the_end_back_for_a_reading_handler(
    clock: trio.testing.MockClock,
) -> None:
    async with pump_rig() as rig:
        await overflow_after(rig, [data("a"), data("b"), DISCONNECT])
        assert rig.disconnects == [DISCONNECT] and rig.gone == 0
        await rig.step(LINGER * 0.9)
        assert texts([await rig.handler_receive()]) == ["a"]  # reading restarts the linger
        await rig.step(LINGER * 0.9)
        assert rig.gone == 0
        assert texts([await rig.handler_receive(), await rig.handler_receive()]) == ["b", DISCONNECT["type"]]


async def test_a_handler_away_for_the_linger_is_ended_anyway(clock: trio.testing.MockClock) -> None:
    async with pump_rig() as rig:
        await overflow_after(rig, [data("a"), DISCONNECT])
        await rig.step(LINGER * 0.999)
        assert rig.gone == 0
        await rig.step(LINGER * 0.001)
        assert rig.gone == 1


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_messages": 0}, "max_messages must be at least 1, got 0"),
        ({"max_bytes": 0}, "max_bytes must be at least 1, got 0"),
        ({"takeover_delay": -1}, "takeover_delay must be >= 0 seconds, got -1"),
        ({"takeover_delay": math.nan}, "takeover_delay must be >= 0 seconds, got nan"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    async def receive() -> Message:
        raise AssertionError

    settings: dict[str, Any] = {"max_messages": 1, "max_bytes": 1, "takeover_delay": 0, "linger": 0}
    settings.update(options)
    with pytest.raises(ValueError, match=f"^{message}$"):
        ReceivePump(
            receive,
            handler_in_receive=lambda: False,
            on_disconnect=lambda message: None,
            on_gone=lambda: None,
            on_overflow=lambda: None,
            **settings,
        )


def test_the_handover_marker_is_not_a_message_a_client_could_send() -> None:
    assert _HANDOVER["type"] == "trio_asgi_ws.handover"
