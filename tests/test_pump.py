"""Structured mode: ``async with websocket:`` and the receive pump behind it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from tests.driver import serve_app
from trio_asgi_ws import (
    WebSocket,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketException,
    WebSocketState,
)
from trio_asgi_ws._types import Receive, Scope, Send
from trio_asgi_ws._watcher import _WATCHER, LOOK_INTERVAL

Body = Callable[[WebSocket], Awaitable[None]]

VIRTUAL_TIME = True  # async tests run on the autojump clock (tests/conftest.py)


class Outcome:
    """What happened to a structured handler: how its block ended."""

    def __init__(self) -> None:
        self.exited = trio.Event()
        self.websocket: WebSocket | None = None
        self.notes: list[Any] = []


def structured_app(
    body: Body, outcome: Outcome, **options: Any
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send, **options)
        outcome.websocket = websocket
        try:
            async with websocket:
                await body(websocket)
        finally:
            outcome.exited.set()

    return app


async def accept_then_sleep(ws: WebSocket) -> None:
    await ws.accept()
    await trio.sleep_forever()


async def ticker(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        await ws.send_text("tick")
        await trio.sleep(0.001)


# -- disconnects ------------------------------------------------------------------------------


async def test_send_only_handler_is_cancelled_on_disconnect() -> None:
    outcome = Outcome()
    async with serve_app(structured_app(ticker, outcome, takeover_delay=0.01)) as fake:
        await fake.accepted()
        for _ in range(3):
            await fake.expect_sent("websocket.send")
        await fake.disconnect(1006)
        with trio.fail_after(5):
            await outcome.exited.wait()
    assert fake.app_error is None
    ws = outcome.websocket
    assert ws is not None and ws.disconnected.is_set()
    assert ws.client_state is WebSocketState.DISCONNECTED
    assert not any(m["type"] == "websocket.close" for m in fake.sent)  # nobody left to close


async def test_a_handler_that_sends_without_receiving_learns_of_a_disconnect_within_the_bound() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        outcome.notes.append(await ws.receive_text())
        while True:  # sends every millisecond: a reader takeover_delay after its second send
            await ws.send_text("tick")
            await trio.sleep(0.001)

    async with serve_app(structured_app(body, outcome, takeover_delay=0.05)) as fake:
        await fake.accepted()
        await trio.sleep(1)  # in receive() through the watcher's looks: it looks no more
        await fake.send_data("go")
        await trio.testing.wait_all_tasks_blocked()
        left_at = trio.current_time()
        await fake.disconnect(1006)
        with trio.fail_after(1):
            await outcome.exited.wait()
        assert trio.current_time() - left_at <= 0.05 + 2 * 0.001  # from leaving receive()
        assert outcome.websocket is not None and outcome.websocket.disconnected.is_set()
        assert outcome.notes == ["go"]
    assert fake.app_error is None


async def test_a_handler_idle_since_the_accept_learns_of_a_disconnect_within_takeover_delay() -> None:
    outcome = Outcome()
    async with serve_app(structured_app(accept_then_sleep, outcome, takeover_delay=0.05)) as fake:
        await fake.accepted()
        accepted_at = trio.current_time()
        await fake.disconnect(1006)
        with trio.fail_after(1):
            await outcome.exited.wait()
        # The watcher looked at the accept, and again takeover_delay later.
        assert trio.current_time() - accepted_at <= 0.05
        assert outcome.websocket is not None and outcome.websocket.disconnected.is_set()
    assert fake.app_error is None


async def test_a_handler_idle_after_receiving_learns_of_a_disconnect_within_the_look_bound() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        outcome.notes.append(await ws.receive_text())
        await trio.sleep_forever()  # neither receives nor sends

    async with serve_app(structured_app(body, outcome, takeover_delay=0.05)) as fake:
        await fake.accepted()
        await trio.sleep(1)  # waiting in receive() through the watcher's first looks
        await fake.send_data("go")
        await trio.testing.wait_all_tasks_blocked()
        left_at = trio.current_time()
        await fake.disconnect(1006)
        with trio.fail_after(LOOK_INTERVAL + 1):
            await outcome.exited.wait()
        elapsed = trio.current_time() - left_at
        # The watcher's next periodic look, then one more takeover_delay later: the worst case,
        # as its previous look (at 1.05) found the handler waiting in receive().
        assert LOOK_INTERVAL / 2 < elapsed <= LOOK_INTERVAL + 0.05
    assert outcome.notes == ["go"] and fake.app_error is None


async def test_iter_text_ends_cleanly_and_the_block_exits_without_an_exception_group() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            outcome.notes.append(text)
            await ws.send_text(text.upper())

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.send_data("a")
        assert (await fake.expect_sent("websocket.send"))["text"] == "A"
        await fake.disconnect(1001, "going")
    assert fake.app_error is None
    assert outcome.notes == ["a"]
    assert outcome.websocket is not None and outcome.websocket.disconnected.is_set()


async def test_uncaught_websocket_disconnect_ends_the_block_quietly() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.receive_text()

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.disconnect()
    assert fake.app_error is None


async def test_messages_buffered_by_the_pump_are_delivered_in_order_then_the_close_code() -> None:
    outcome = Outcome()
    pump_has_everything = trio.Event()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        # Survive the disconnect to read what was buffered; bounded, so a broken pump fails fast.
        with trio.CancelScope(shield=True), trio.fail_after(5):
            await pump_has_everything.wait()
            for _ in range(3):
                outcome.notes.append(await ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            outcome.notes.append((info.value.code, info.value.reason))
            with pytest.raises(WebSocketDisconnect):
                await ws.receive_text()

    async with serve_app(structured_app(body, outcome, takeover_delay=0)) as fake:
        await fake.accepted()
        for text in ("1", "2", "3"):
            await fake.send_data(text)
        await fake.disconnect(4002, "bye")
        ws = outcome.websocket
        assert ws is not None
        with trio.fail_after(5):
            await ws.disconnected.wait()  # the pump, not the handler, saw it
        pump_has_everything.set()
    assert fake.app_error is None
    assert outcome.notes == ["1", "2", "3", (4002, "bye")]


async def test_send_after_the_pump_saw_a_disconnect_raises_websocket_disconnect() -> None:
    outcome = Outcome()
    gone = trio.Event()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        with trio.CancelScope(shield=True):
            await gone.wait()
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.send_text("into the void")
            outcome.notes.append(info.value.code)

    async with serve_app(structured_app(body, outcome, takeover_delay=0)) as fake:
        await fake.accepted()
        await fake.disconnect(1006)
        assert outcome.websocket is not None
        await outcome.websocket.disconnected.wait()
        gone.set()
    assert outcome.notes == [1006]
    assert [m["type"] for m in fake.sent] == ["websocket.accept"]


# -- leaving the block ------------------------------------------------------------------------


async def test_leaving_the_block_closes_with_1000_and_waits_for_the_clients_close() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.expect_sent("websocket.send")
        await fake.expect_close(1000)
        await trio.testing.wait_all_tasks_blocked()
        assert not outcome.exited.is_set()  # still draining until the client's close arrives
        await fake.send_data("in flight")  # discarded
        await fake.disconnect(1000)
    assert fake.app_error is None
    assert outcome.websocket is not None
    assert outcome.websocket.application_state is WebSocketState.DISCONNECTED
    assert outcome.websocket.client_state is WebSocketState.DISCONNECTED


async def test_an_exception_in_the_block_propagates_unwrapped_and_closes_with_1011() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        raise KeyError("boom")

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        assert (await fake.expect_sent("websocket.close"))["code"] == 1011
        await fake.disconnect(1011)
    assert type(fake.app_error) is KeyError


async def test_a_user_cause_survives_unwrapping() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        try:
            {}["missing"]
        except KeyError as error:
            raise ValueError("wrapped") from error

    async with serve_app(structured_app(body, outcome, close_timeout=0.01)) as fake:
        await fake.accepted()
    assert isinstance(fake.app_error, ValueError)
    assert isinstance(fake.app_error.__cause__, KeyError)


async def test_the_close_wait_is_bounded_by_close_timeout() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()

    async with serve_app(structured_app(body, outcome, close_timeout=0.05)) as fake:
        await fake.accepted()
        await fake.expect_close(1000)
        with trio.fail_after(5):
            await outcome.exited.wait()  # the client never answered, the block still ended
    assert fake.app_error is None


async def test_outside_cancellation_still_sends_the_close() -> None:
    outcome = Outcome()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, close_timeout=0.05)
        with trio.move_on_after(0.01):
            async with ws:
                await ws.accept()
                await trio.sleep_forever()
        outcome.notes.append(ws.application_state)

    async with serve_app(app) as fake:
        await fake.accepted()
        assert (await fake.expect_sent("websocket.close"))["code"] == 1000
    assert fake.app_error is None
    assert outcome.notes == [WebSocketState.DISCONNECTED]


async def test_a_block_left_before_accept_rejects_the_connection() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        pass

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.connect()
        assert (await fake.expect_sent("websocket.close"))["code"] == 1000
    assert fake.app_error is None


async def test_structured_mode_can_start_after_accept() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        async with ws:
            async for text in ws.iter_text():
                await ws.send_text(text)

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.send_data("x")
        assert (await fake.expect_sent("websocket.send"))["text"] == "x"
        await fake.disconnect()
    assert fake.app_error is None


async def test_a_block_entered_after_accept_watches_a_send_only_handler() -> None:
    """The pump starts at once when the socket is already accepted (not at an accept to come)."""
    outcome = Outcome()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, takeover_delay=0.01)
        outcome.websocket = ws
        await ws.accept()
        async with ws:
            await trio.sleep_forever()  # never receives, never sends: only the pump can notice
        outcome.exited.set()

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.disconnect(4001)
        with trio.fail_after(5):
            await outcome.exited.wait()
    assert fake.app_error is None
    assert outcome.websocket is not None and outcome.websocket.client_state is WebSocketState.DISCONNECTED


async def test_a_second_block_after_the_first_ended_is_refused_for_the_right_reason() -> None:
    """Once a block has ended (and closed), entering again reports the disconnect, not a block."""
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        async with ws:
            await ws.accept()
        try:
            async with ws:
                pass
        except WebSocketDisconnected as error:
            errors.append(error)

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert fake.app_error is None
    assert [str(error) for error in errors] == ["Cannot enter structured mode after a disconnect."]


async def test_a_block_can_be_entered_again_while_the_client_is_still_connected() -> None:
    """The pump reference is reset on exit: a later block runs a pump of its own."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, close_timeout=0.01)
        async with ws:
            await ws.accept()
            seen.append(await ws.receive_text())
            await ws.close(4000, "first")
        async with ws:  # the client never answered the close: the socket is still connected
            seen.append("second block")

    async with serve_app(app) as fake:
        await fake.accepted()
        await fake.send_data("hello")
        await fake.expect_close(4000, "first")
        await trio.sleep(1)  # past close_timeout: the first block has ended
        await fake.disconnect(1000)
    assert fake.app_error is None
    assert seen == ["hello", "second block"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_buffered_messages": 0}, "max_messages must be at least 1"),
        ({"max_buffered_bytes": 0}, "max_bytes must be at least 1"),
        ({"takeover_delay": -1}, "takeover_delay must be >= 0"),
    ],
)
async def test_bad_pump_limits_are_rejected_on_entry(options: dict[str, Any], match: str) -> None:
    ws = WebSocket({"type": "websocket"}, **options)
    with pytest.raises(ValueError, match=match):
        await ws.__aenter__()


# -- the bounded buffer -----------------------------------------------------------------------


async def test_a_client_faster_than_the_buffer_is_closed_with_1008() -> None:
    outcome = Outcome()
    options = {"takeover_delay": 0, "max_buffered_messages": 4}
    async with serve_app(structured_app(accept_then_sleep, outcome, **options)) as fake:
        await fake.accepted()
        for i in range(6):
            await fake.send_data(f"m{i}")
        await fake.expect_close(1008, "receive buffer full")
        await fake.disconnect(1008)
    assert fake.app_error is None
    assert outcome.exited.is_set()


async def test_the_buffer_is_bounded_by_bytes_too_but_one_large_message_always_fits() -> None:
    outcome = Outcome()
    ready = trio.Event()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        await ready.wait()
        outcome.notes.append(len(await ws.receive_bytes()))
        await trio.sleep_forever()

    options = {"takeover_delay": 0, "max_buffered_bytes": 100}
    async with serve_app(structured_app(body, outcome, **options)) as fake:
        await fake.accepted()
        await fake.send_data(b"x" * 1000)  # alone in an empty buffer: accepted
        await trio.testing.wait_all_tasks_blocked()
        ready.set()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome.notes == [1000]
        await trio.sleep(0.01)  # let the pump take over again
        await fake.send_data(b"y" * 60)
        await fake.send_data(b"z" * 60)  # 120 bytes > 100: overflow
        assert (await fake.expect_sent("websocket.close"))["code"] == 1008
        await fake.disconnect(1008)
    assert fake.app_error is None


async def test_handler_that_returns_while_the_server_queue_is_full_still_ends() -> None:
    """Hypercorn case (a): the server's 10-slot queue is full when the block ends."""
    outcome = Outcome()
    leave = trio.Event()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        await leave.wait()

    async with (
        serve_app(structured_app(body, outcome, takeover_delay=60)) as fake,
        trio.open_nursery() as nursery,
    ):
        await fake.accepted()
        for i in range(10):
            fake.put_nowait(fake.data(f"m{i}"))

        async def flood_then_close() -> None:
            for i in range(10, 30):  # blocks on the full queue until the app drains it
                await fake.send_data(f"m{i}")
            await fake.disconnect(1000)

        nursery.start_soon(flood_then_close)
        await trio.testing.wait_all_tasks_blocked()
        leave.set()
        assert (await fake.expect_sent("websocket.close"))["code"] == 1000
    assert fake.app_error is None


async def test_send_only_handler_ends_when_a_flooding_client_drops() -> None:
    """Hypercorn case (b): a client floods a send-only handler, then leaves."""
    outcome = Outcome()
    async with serve_app(structured_app(ticker, outcome, takeover_delay=0.01)) as fake:
        await fake.accepted()
        for i in range(200):
            await fake.send_data(f"flood {i}")
        await fake.disconnect(1006)
        with trio.fail_after(5):
            await outcome.exited.wait()
    assert fake.app_error is None
    closes = [m for m in fake.sent if m["type"] == "websocket.close"]
    assert [c["code"] for c in closes] == [1008]


# -- the reader role --------------------------------------------------------------------------


async def test_messages_keep_their_order_across_reader_handoffs() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            outcome.notes.append(text)
            if len(outcome.notes) % 7 == 0:
                await trio.sleep(0.003)  # long enough for the pump to take over

    async with serve_app(structured_app(body, outcome, takeover_delay=0.001)) as fake:
        await fake.accepted()
        for i in range(100):
            await fake.send_data(str(i))
            if i % 10 == 0:
                await trio.sleep(0.002)
        await fake.disconnect()
    assert fake.app_error is None
    assert outcome.notes == [str(i) for i in range(100)]


async def test_a_receive_cancelled_during_a_handoff_loses_nothing() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        while len(outcome.notes) < 20:
            with trio.move_on_after(0.002):
                outcome.notes.append(await ws.receive_text())
            await trio.sleep(0.002)

    async with serve_app(structured_app(body, outcome, takeover_delay=0.001)) as fake:
        await fake.accepted()
        for i in range(20):
            await fake.send_data(str(i))
            await trio.sleep(0.003)
        await fake.disconnect()
    assert fake.app_error is None
    assert outcome.notes == [str(i) for i in range(20)]


async def test_concurrent_receivers_get_busy_resource_error_in_structured_mode() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive_text)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await ws.receive_text()
            nursery.cancel_scope.cancel()
        await ws.close()

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.expect_close(1000)
        await fake.disconnect(1000)
    assert fake.app_error is None


class TaskCounter(trio.abc.Instrument):
    """Counts tasks spawned and exited, and the steps the pump's reader and the watcher take."""

    def __init__(self) -> None:
        self.live: set[trio.lowlevel.Task] = set()
        self.pump_steps = 0
        self.watcher_steps = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live.add(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.discard(task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith("trio_asgi_ws pump"):
            self.pump_steps += 1
        elif task.name == "trio_asgi_ws watcher":
            self.watcher_steps += 1


async def test_the_disconnect_reason_from_spec_25_servers_reaches_the_handler() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.receive_text()
        except WebSocketDisconnect as error:
            outcome.notes.append((error.code, error.reason))
            raise

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.disconnect(4000, "done here")
    assert outcome.notes == [(4000, "done here")]


async def test_spec_24_send_errors_after_disconnect_end_a_send_only_handler() -> None:
    outcome = Outcome()
    server_options = {"spec_24": True}
    async with serve_app(structured_app(ticker, outcome, takeover_delay=60), **server_options) as fake:
        await fake.accepted()
        await fake.expect_sent("websocket.send")
        fake.client_gone = True  # the server's send() now raises OSError
        with trio.fail_after(5):
            await outcome.exited.wait()
    assert fake.app_error is None


async def test_unread_messages_hold_the_cancel_back_only_for_drain_timeout() -> None:
    """A handler that never reads again is still cancelled, after drain_timeout, not never."""
    outcome = Outcome()
    options = {"takeover_delay": 0, "drain_timeout": 0.05, "close_timeout": 60}
    async with serve_app(structured_app(accept_then_sleep, outcome, **options)) as fake:
        await fake.accepted()
        await fake.send_data("never read")
        await fake.disconnect()
        with trio.fail_after(5):
            await outcome.exited.wait()
    assert fake.app_error is None
    assert outcome.websocket is not None and outcome.websocket.disconnected.is_set()


async def test_websocket_exception_closes_with_its_code_and_reason() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4003, "forbidden topic")

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.accepted()
        await fake.expect_close(4003, "forbidden topic")
        await fake.disconnect(4003)
    assert fake.app_error is None


async def test_websocket_exception_before_accept_rejects_the_handshake() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        raise WebSocketException(4001, "who are you")

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.connect()
        await fake.expect_close(4001, "who are you")
    assert fake.app_error is None


async def test_an_unexpected_error_before_accept_is_answered_with_http_500() -> None:
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        raise RuntimeError("database down")

    async with serve_app(structured_app(body, outcome)) as fake:
        await fake.connect()
        start = await fake.expect_sent("websocket.http.response.start")
        assert start["status"] == 500
        assert (await fake.expect_sent("websocket.http.response.body"))["body"] == b"Internal Server Error"
    assert isinstance(fake.app_error, RuntimeError)


async def echo_counting_pump_steps(
    messages: int, gap: float, takeover_delay: float
) -> tuple[TaskCounter, float]:
    """Echo ``messages`` with ``gap`` seconds before each; count the pump's steps and every task."""
    counter = TaskCounter()
    outcome = Outcome()

    async def body(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    trio.lowlevel.add_instrument(counter)
    try:
        async with serve_app(structured_app(body, outcome, takeover_delay=takeover_delay)) as fake:
            await fake.accepted()
            start = trio.current_time()
            for i in range(messages):
                if gap:
                    await trio.sleep(gap)
                await fake.send_data(str(i))
                assert (await fake.expect_sent("websocket.send"))["text"] == str(i)
            elapsed = trio.current_time() - start
            await fake.disconnect()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert fake.app_error is None
    return counter, elapsed


async def test_an_echo_on_the_fast_path_starts_no_reader_and_leaves_no_task() -> None:
    counter, _ = await echo_counting_pump_steps(200, gap=0, takeover_delay=60)
    assert counter.pump_steps == 0  # no reader was ever started
    assert counter.watcher_steps >= 1  # the watcher ran while the connection was open...
    await trio.testing.wait_all_tasks_blocked()
    assert not counter.live  # ...and ended with it: every task spawned meanwhile has exited
    assert len(_WATCHER.get()) == 0


@pytest.mark.parametrize("gap", [0.002, 0.06])
async def test_neither_busy_nor_sparse_traffic_wakes_a_task_per_message(gap: float) -> None:
    # 0.06 s apart is longer than takeover_delay: the old pump looked about once per message.
    counter, elapsed = await echo_counting_pump_steps(200, gap=gap, takeover_delay=0.05)
    assert counter.pump_steps == 0
    # Its first look finds the handler just accepted, away, and looks again takeover_delay later;
    # then once per LOOK_INTERVAL, each maybe followed by one more look takeover_delay later.
    looks = 2 + 2 * math.ceil(elapsed / LOOK_INTERVAL)
    assert 2 <= counter.watcher_steps <= looks < 200 / 10
