"""The hub's fan-out paths, in-process: frame encoding, direct writes and the inline sender."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol

from tests.driver import websocket_scope
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
        ({"type": "websocket.send"}, "needs 'text' or 'bytes'"),
        ({"type": "websocket.send", "text": None, "bytes": None}, "needs 'text' or 'bytes'"),
        ({"type": "websocket.send", "text": b"x"}, "'text' must be str, got bytes"),
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
        await hub.publish("t", "1")  # not written directly while the tail waits
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
