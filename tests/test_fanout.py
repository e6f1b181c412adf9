"""The hub's fan-out paths, in-process: frame encoding, direct writes and the inline sender."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol

from tests.driver import TaskSteps, websocket_scope
from trio_asgi_ws import WebSocket
from trio_asgi_ws._direct_send import EXTENSION, PARTIAL, REFUSED, WHOLE, DirectSend, encode_frame
from trio_asgi_ws._fanout import STALL_AFTER
from trio_asgi_ws._types import Message
from trio_asgi_ws.broadcast import BroadcastMessage, open_broadcast


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_encode_frame_matches_wsproto_for_text_and_binary(size: int) -> None:
    server = FrameProtocol(client=False, extensions=[])
    text = "é" * (size // 2) + "x" * (size % 2)
    assert encode_frame({"type": "websocket.send", "text": text}) == server.send_data(text, fin=True)
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    assert encode_frame({"type": "websocket.send", "bytes": data}) == server.send_data(data, fin=True)
    assert encode_frame({"type": "websocket.send", "bytes": bytearray(data)}) == encode_frame(
        {"type": "websocket.send", "bytes": data}
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "websocket.send"}, "^a websocket.send message needs 'text' or 'bytes'$"),
        ({"type": "websocket.send", "text": None, "bytes": None}, "^a websocket.send message needs"),
        ({"type": "websocket.send", "text": b"x"}, "^'text' must be str, got bytes$"),
    ],
)
def test_encode_frame_refuses_a_message_without_text_or_bytes(message: Message, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        encode_frame(message)


class ScriptedDirectSend(DirectSend):
    """A direct writer whose socket takes what the test says: ``results`` per write.

    ``wire`` is what reached the socket, by either path, in order (the ASGI sends append too).
    """

    def __init__(self) -> None:
        self.usable = True
        self.results: list[int] = []
        self.written: list[bytes] = []
        self.wire: list[str] = []
        self.tail = False
        self.flushes = 0

    def write(self, frame: bytes) -> int:
        result = self.results.pop(0) if self.results else WHOLE
        if result:
            self.written.append(frame)
            self.wire.append(frame[2:].decode())
            self.tail = result == PARTIAL
        return result

    @property
    def pending(self) -> bool:
        return self.tail

    async def flush(self) -> None:
        self.flushes += 1
        self.tail = False
        await trio.lowlevel.checkpoint()


async def direct_socket(sent: list[Message], direct: ScriptedDirectSend) -> WebSocket:
    """An accepted socket offering ``direct``, whose ASGI ``send`` records and never blocks."""

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            direct.wire.append(message["text"])

    scope = websocket_scope()
    scope["extensions"] = {EXTENSION: direct}
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    sent.clear()
    return ws


def text_frame(text: str) -> bytes:
    return encode_frame({"type": "websocket.send", "text": text})


async def test_an_idle_socket_gets_frames_directly_and_a_refused_one_keeps_its_order() -> None:
    """After a refusal the message is buffered, and so is every later one (even if the socket
    could take it) until the forward task has sent the buffer: order is kept."""
    sent: list[Message] = []
    direct = ScriptedDirectSend()
    ws = await direct_socket(sent, direct)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscription = await nursery.start(hub.forward, "t", ws)
        await trio.testing.wait_all_tasks_blocked()
        direct.results = [WHOLE, REFUSED]
        await hub.publish("t", "0")
        assert direct.written == [text_frame("0")]
        for text in ("1", "2", "3"):  # 1 refused; 2 and 3 buffered behind it (delivered with
            # no checkpoint in between, which would let forward run)
            await hub._deliver(BroadcastMessage.encode("t", text))
        assert (direct.written, subscription.buffered) == ([text_frame("0")], 2)  # 1: taken by forward
        await trio.testing.wait_all_tasks_blocked()
        assert [message["text"] for message in sent] == ["1", "2", "3"]
        await hub.publish("t", "4")  # the buffer is empty again: direct once more
        assert direct.written == [text_frame("0"), text_frame("4")]
        for i in range(5, 40):  # whatever the interleaving, the socket sees them in order
            direct.results = [REFUSED] if i % 3 == 0 else []
            await hub.publish("t", str(i))
        await trio.testing.wait_all_tasks_blocked()
        assert direct.wire == [str(i) for i in range(40)]
        assert (subscription.delivered, subscription.dropped, subscription.buffered) == (40, 0, 0)
        nursery.cancel_scope.cancel()


async def test_a_partial_write_wakes_the_forward_task_to_flush_and_later_messages_wait() -> None:
    sent: list[Message] = []
    direct = ScriptedDirectSend()
    ws = await direct_socket(sent, direct)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscription = await nursery.start(hub.forward, "t", ws)
        await trio.testing.wait_all_tasks_blocked()
        direct.results = [PARTIAL]
        await hub.publish("t", "0")
        await hub._deliver(BroadcastMessage.encode("t", "1"))  # before forward runs: buffered
        assert (direct.written, subscription.buffered) == ([text_frame("0")], 1)
        await trio.testing.wait_all_tasks_blocked()
        assert direct.flushes == 1
        assert [message["text"] for message in sent] == ["1"]
        await hub.publish("t", "2")
        assert direct.written == [text_frame("0"), text_frame("2")]
        nursery.cancel_scope.cancel()


async def test_a_socket_that_is_not_usable_gets_messages_the_asgi_way() -> None:
    sent: list[Message] = []
    direct = ScriptedDirectSend()
    direct.usable = False  # e.g. permessage-deflate was agreed
    ws = await direct_socket(sent, direct)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        await nursery.start(hub.forward, "t", ws)
        await hub.publish("t", "0")
        await trio.testing.wait_all_tasks_blocked()
        assert (direct.written, [message["text"] for message in sent]) == ([], ["0"])
        nursery.cancel_scope.cancel()


async def test_an_inline_send_that_fails_is_retried_by_the_forward_task_which_meets_the_error() -> None:
    """An error from a socket's send belongs to its own handler, not to the hub's sender."""

    class Boom(Exception):
        pass

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    failures = [Boom("first"), Boom("second")]

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            raise failures.pop(0)

    ws = WebSocket(websocket_scope(), receive, send)
    await ws.accept()
    async with open_broadcast() as hub:
        with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="second")):
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(hub.forward, "t", ws))
                await hub.publish("t", "x")
        await hub.publish("t", "the hub still works")
    assert failures == []


async def test_a_stalled_inline_send_delays_the_others_once_then_never_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    arrivals: dict[str, list[tuple[str, float]]] = {"slow": [], "fast": []}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    def socket_send(name: str) -> Any:
        async def send(message: Message) -> None:
            if name == "slow" and message["type"] == "websocket.send":
                await gate.wait()
            arrivals[name].append((message.get("text", ""), trio.current_time()))

        return send

    sockets = {}
    for name in ("slow", "fast"):
        sockets[name] = WebSocket(websocket_scope(), receive, socket_send(name))
        await sockets[name].accept()
        arrivals[name].clear()
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        slow = await nursery.start(hub.forward, "t", sockets["slow"])
        await nursery.start(hub.forward, "t", sockets["fast"])
        start = trio.current_time()
        for i in range(50):
            await hub.publish("t", str(i))
            await trio.sleep(0.001)
        await trio.sleep(1)
        fast = arrivals["fast"]
        assert [text for text, _ in fast] == [str(i) for i in range(50)]
        delays = [at - (start + 0.001 * i) for i, (_, at) in enumerate(fast)]
        assert STALL_AFTER <= max(delays) <= 2 * STALL_AFTER + 0.002  # found stuck within two ticks
        assert max(delays[-5:]) < 0.001  # later messages are not held up at all
        assert slow.buffered == 49 and arrivals["slow"] == []
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [text for text, _ in arrivals["slow"]] == [str(i) for i in range(50)]
        nursery.cancel_scope.cancel()


async def test_closing_the_hub_while_an_inline_send_is_stuck_loses_nothing_for_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hub closes before the stuck send is found: what the sender had not sent yet (the rest
    of the stuck message's sockets, the queued messages) is buffered, and each forward sends it."""
    gate = trio.Event()
    got: dict[int, list[str]] = {0: [], 1: [], 2: []}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    def socket_send(index: int) -> Any:
        async def send(message: Message) -> None:
            if index == 1 and message["type"] == "websocket.send":
                await gate.wait()
            if message["type"] == "websocket.send":
                got[index].append(message["text"])

        return send

    sockets = [WebSocket(websocket_scope(), receive, socket_send(i)) for i in range(3)]
    for ws in sockets:
        await ws.accept()
    async with trio.open_nursery() as nursery:
        async with open_broadcast() as hub:
            for ws in sockets:
                await nursery.start(hub.forward, "t", ws)
            await hub.publish("t", "a")  # socket 1's send sticks: socket 2 waits behind it
            await hub.publish("t", "b")  # queued for the sender
            await trio.testing.wait_all_tasks_blocked()
            assert got == {0: ["a"], 1: [], 2: []}
            subscriptions = list(hub._topics["t"])
        # Closing cancelled socket 1's stuck send: "a" counts as delivered there, as a cancelled
        # send() counts as sent (hypercorn's own send cannot be cancelled, and completes).
        await trio.testing.wait_all_tasks_blocked()
        assert got == {0: ["a", "b"], 1: [], 2: ["a", "b"]}
        gate.set()
    assert got == {0: ["a", "b"], 1: ["b"], 2: ["a", "b"]}
    assert [(s.delivered, s.dropped, s.buffered) for s in subscriptions] == [(2, 0, 0)] * 3


def recording_socket(
    name: str,
    log: dict[str, list[str]],
    gates: dict[str, trio.Event] | None = None,
    delay: float = 0,
    shielded: bool = False,
) -> Any:
    """An ASGI ``send`` that appends each text to ``log[name]``, after its gate (if any) is set
    and ``delay`` seconds; ``shielded``: its wait cannot be cancelled (as hypercorn's)."""

    async def send(message: Message) -> None:
        if message["type"] != "websocket.send":
            return
        gate = (gates or {}).get(name)
        if gate is not None:
            with trio.CancelScope(shield=shielded):
                await gate.wait()
        if delay:
            await trio.sleep(delay)
        log.setdefault(name, []).append(message["text"])

    return send


async def recorded_sockets(
    names: list[str],
    log: dict[str, list[str]],
    gates: dict[str, trio.Event] | None = None,
    delay: float = 0,
    shielded: bool = False,
) -> list[WebSocket]:
    async def receive() -> Message:
        return {"type": "websocket.connect"}

    sockets = []
    for name in names:
        ws = WebSocket(websocket_scope(), receive, recording_socket(name, log, gates, delay, shielded))
        await ws.accept()
        sockets.append(ws)
    return sockets


async def test_a_socket_whose_scope_has_no_extensions_is_sent_to_inline() -> None:
    log: dict[str, list[str]] = {}

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    scope = websocket_scope()
    del scope["extensions"]
    ws = WebSocket(scope, receive, recording_socket("a", log))
    await ws.accept()
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscription = await nursery.start(hub.forward, "t", ws)
        await hub.publish("t", "x")
        await trio.testing.wait_all_tasks_blocked()
        assert (log, subscription.delivered, subscription.peak_buffered) == ({"a": ["x"]}, 1, 0)
        nursery.cancel_scope.cancel()


async def test_every_idle_direct_socket_gets_each_message() -> None:
    sent: list[Message] = []
    directs = [ScriptedDirectSend() for _ in range(3)]
    sockets = [await direct_socket(sent, direct) for direct in directs]
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        for ws in sockets:
            await nursery.start(hub.forward, "t", ws)
        for text in ("0", "1"):
            await hub.publish("t", text)
        assert [direct.written for direct in directs] == [[text_frame("0"), text_frame("1")]] * 3
        assert sent == []
        nursery.cancel_scope.cancel()


async def test_a_forwarded_block_subscription_makes_the_publisher_wait_not_the_shared_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: dict[str, list[str]] = {}
    gates = {"a": trio.Event()}
    (ws,) = await recorded_sockets(["a"], log, gates)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        await nursery.start(partial(hub.forward, "t", ws, max_buffer=2, overflow="block"))
        for text in ("0", "1", "2"):  # 0 in forward's stuck send, 1 and 2 buffered
            await hub.publish("t", text)
        with trio.move_on_after(10) as waited:
            await hub.publish("t", "3")
        assert waited.cancelled_caught  # lossless: the publisher waits for room
        gates["a"].set()
        await hub.publish("t", "3")
        await trio.testing.wait_all_tasks_blocked()
        assert log == {"a": ["0", "1", "2", "3"]}
        nursery.cancel_scope.cancel()


async def test_publishers_wait_once_64_messages_are_queued_for_the_shared_sender(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The clock stands still: the stuck send is never handed off, so the queue fills."""
    log: dict[str, list[str]] = {}
    gates = {"a": trio.Event()}
    (ws,) = await recorded_sockets(["a"], log, gates)
    published = 0
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        await nursery.start(hub.forward, "t", ws)

        async def publish_many() -> None:
            nonlocal published
            for i in range(70):
                await hub.publish("t", str(i))
                published += 1

        nursery.start_soon(publish_many)
        await trio.testing.wait_all_tasks_blocked()
        assert published == 1 + 64  # one in the stuck send, 64 queued: the 66th waits
        gates["a"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert (published, log["a"]) == (70, [str(i) for i in range(70)])
        nursery.cancel_scope.cancel()


async def test_slow_sends_that_keep_moving_are_never_handed_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: dict[str, list[str]] = {}
    names = [str(i) for i in range(10)]
    sockets = await recorded_sockets(names, log, delay=STALL_AFTER * 0.75)  # a fan-out of 7.5 ticks
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        subscriptions = [await nursery.start(partial(hub.forward, "t", ws), name="forward") for ws in sockets]
        steps = TaskSteps("forward")
        trio.lowlevel.add_instrument(steps)
        try:
            for text in ("x", "y"):
                await hub.publish("t", text)
            await trio.sleep(1)
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert log == {name: ["x", "y"] for name in names}
        assert [s.delivered for s in subscriptions] == [2] * 10
        assert steps.steps == 0  # all sent inline: no forward task was woken by a hand-off
        nursery.cancel_scope.cancel()


async def test_each_stall_is_found_and_the_watchdog_sleeps_in_between(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: dict[str, list[str]] = {}
    gates = {"a": trio.Event()}
    sockets = await recorded_sockets(["a", "b", "c"], log, gates)
    async with open_broadcast() as hub, trio.open_nursery() as nursery:
        for ws in sockets:
            await nursery.start(hub.forward, "t", ws)
        await hub.publish("t", "0")  # a stalls
        await trio.sleep(1)
        assert log == {"b": ["0"], "c": ["0"]}
        gates["a"].set()
        await trio.sleep(1)
        assert log["a"] == ["0"]
        steps = TaskSteps("trio_asgi_ws hub watchdog")
        trio.lowlevel.add_instrument(steps)
        try:
            await trio.sleep(10)  # nothing to send: the watchdog does not tick
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0
        gates["b"] = trio.Event()  # now b stalls: found again
        await hub.publish("t", "1")
        await trio.sleep(1)
        assert log == {"a": ["0", "1"], "b": ["0"], "c": ["0", "1"]}
        gates["b"].set()
        await trio.sleep(1)
        assert log == {"a": ["0", "1"], "b": ["0", "1"], "c": ["0", "1"]}  # each once, in order
        nursery.cancel_scope.cancel()


async def test_closing_the_hub_after_a_hand_off_sends_each_message_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    """a stalls and is handed off; the next sender stalls on b; the hub closes while both sends
    wait (shielded, as hypercorn's are), then they return: neither sender may carry on, and c
    gets the message exactly once (from its buffer)."""
    log: dict[str, list[str]] = {}
    gates = {"a": trio.Event(), "b": trio.Event()}
    sockets = await recorded_sockets(["a", "b", "c"], log, gates, shielded=True)

    async def release_once_the_close_waits() -> None:
        await trio.testing.wait_all_tasks_blocked()
        gates["a"].set()
        gates["b"].set()

    async with trio.open_nursery() as nursery, open_broadcast() as hub:
        subscriptions = [await nursery.start(hub.forward, "t", ws) for ws in sockets]
        await hub.publish("t", "0")
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1)  # the watchdog finds a stuck; the next sender sticks on b
        await trio.testing.wait_all_tasks_blocked()
        assert log == {}
        nursery.start_soon(release_once_the_close_waits)
    assert log == {"a": ["0"], "b": ["0"], "c": ["0"]}
    assert [(s.delivered, s.dropped, s.buffered) for s in subscriptions] == [(1, 0, 0)] * 3
