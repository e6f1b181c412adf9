"""The ``WebSocket`` state machine, plain and structured, under random clients and handlers.

Each example is one connection.  A *client* (what a conforming ASGI server delivers: the
connect, data frames, pauses, and a disconnect at a random point or only once the app has
closed; a server that raises ``OSError`` from ``send()`` once the client has gone, as spec 2.4
servers do) runs against a *handler*: a random program of API calls, each perhaps cancelled
after a random delay (zero included), some run two at a time, some letting their errors escape,
some under an outer cancellation.  The server is a message-level fake like ``tests/driver.py``,
instrumented to catch what a real server could not survive.  Every example must:

- finish (a deadlock shows up at once: the mock clock jumps to the run's ``fail_after``);
- raise only the exception types of the tree in ``websockets.py`` (and ``BusyResourceError`` for
  a second concurrent receiver), never a bare trio, OS or JSON-internal error;
- never call the server's ``receive()`` from two tasks at once or after ``websocket.disconnect``,
  never call its ``send()`` from two tasks at once, and send a valid ASGI message sequence;
- deliver data frames in order, each at most once, and every one of them to a handler that
  read up to the disconnect; send each successfully sent message exactly once;
- end with ``client_state``, ``application_state`` and ``disconnected`` agreeing with the
  messages that actually crossed the ASGI boundary, and with no task left running;
- in structured mode, leave the block within ``close_timeout`` of the body's end, with the
  close code the docs give, never raising an ``ExceptionGroup``, and re-raising a body's own
  error as itself.

Bugs these properties found (A to D below) each have a small property of their own, which
failed before the fix (issue 9) and now guards against its return.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from hypothesis import event, given
from hypothesis import strategies as st

from tests.driver import websocket_scope
from tests.strategies import live_tasks, property_settings, run_on_mock_clock
from trio_asgi_ws import (
    FrameTypeError,
    InvalidJSON,
    WebSocket,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketException,
    WebSocketState,
)
from trio_asgi_ws._types import Message, Receive, Scope, Send
from trio_asgi_ws._watcher import _WATCHER
from trio_asgi_ws.routing import WebSocketRoute

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

CLOSE_TIMEOUT = 1.0
CLIENT_PATIENCE = 30.0  # how long a client that waits for the app's close waits before leaving
RUN_BOUND = 600.0  # virtual seconds; anything that is not a deadlock finishes far sooner

CONNECTING, CONNECTED, DISCONNECTED, RESPONSE = (
    WebSocketState.CONNECTING,
    WebSocketState.CONNECTED,
    WebSocketState.DISCONNECTED,
    WebSocketState.RESPONSE,
)

# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """A data frame; its payload carries ``seq`` so order and loss can be checked."""

    seq: int
    binary: bool
    json_ok: bool

    def payload(self) -> str | bytes:
        if self.binary:
            return str(self.seq).encode() if self.json_ok else b"\xff" + str(self.seq).encode()
        return str(self.seq) if self.json_ok else f"x{self.seq}"


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Bogus:
    """A message a conforming server never sends at this point."""

    type: str


@dataclass(frozen=True)
class Client:
    events: tuple[Data | Pause | Bogus, ...]
    code: int
    reason: str | None
    waits_for_close: bool  # leave only once the app has closed (or after CLIENT_PATIENCE)
    hypercorn_style: bool  # data messages carry both "text" and "bytes", one of them None
    spec_24: bool  # send() raises OSError once the client has gone (after accept, as uvicorn does)
    send_delay: float  # the server's send() takes this long (shielded, as hypercorn's is)
    queue_size: int

    @property
    def data(self) -> list[Data]:
        return [event for event in self.events if isinstance(event, Data)]


@st.composite
def clients(draw: st.DrawFn) -> Client:
    """A conforming server's messages (``Bogus`` ones have a property of their own)."""
    kinds = draw(st.lists(st.sampled_from(["text"] * 4 + ["bytes"] * 2 + ["pause"]), max_size=14))
    events: list[Data | Pause | Bogus] = []
    for kind in kinds:
        if kind == "pause":
            events.append(Pause(draw(st.sampled_from([0.0, 0.001, 0.02, 0.1, 2.0]))))
        else:
            seq = sum(isinstance(event, Data) for event in events)
            events.append(Data(seq, binary=kind == "bytes", json_ok=draw(st.booleans())))
    return Client(
        events=tuple(events),
        code=draw(st.sampled_from([1000, 1001, 4000, 4321])),  # never 1006: that marks send failures
        reason=draw(st.sampled_from([None, "", "bye"])),
        waits_for_close=draw(st.booleans()),
        hypercorn_style=draw(st.booleans()),
        spec_24=draw(st.booleans()),
        send_delay=draw(st.sampled_from([0.0, 0.005])),
        queue_size=draw(st.sampled_from([1, 10])),
    )


class Server:
    """The ASGI server's side of one connection, checking how the app uses ``receive``/``send``."""

    def __init__(self, client: Client, *, strict_spec_24: bool = True) -> None:
        self.client = client
        # uvicorn raises OSError only once the handshake is done; the spec's text reads wider, and
        # by default so does this server (test_send_failures_before_accept_are_a_disconnect_too).
        self.strict_spec_24 = strict_spec_24
        self.accepted = False
        self.scope = websocket_scope(subprotocols=["chat"])
        self._to_app, self._inbox = trio.open_memory_channel[Message](client.queue_size)
        self.violations: list[str] = []
        self.sent: list[Message] = []
        self.connect_delivered = False
        self.disconnect_delivered = False
        self.data_delivered = 0
        self.data_sent = 0  # by the client: only once accepted
        self.send_failures = 0
        self.client_gone = False
        self.client_running = False
        self.app_closed = trio.Event()
        self.handshake_answered = trio.Event()  # by an accept, a close or a denial response
        self._receiving = 0
        self._sending = 0

    async def receive(self) -> Message:
        if self._receiving:
            self.violations.append("two tasks in the server's receive() at once")
        if self.disconnect_delivered:
            self.violations.append("receive() called after websocket.disconnect was delivered")
        self._receiving += 1
        try:
            message = await self._inbox.receive()
        finally:
            self._receiving -= 1
        if message["type"] == "websocket.connect":
            self.connect_delivered = True
        if message["type"] == "websocket.disconnect":
            self.disconnect_delivered = True
        if message["type"] == "websocket.receive":
            self.data_delivered += 1
        return message

    async def send(self, message: Message) -> None:
        if self._sending:
            self.violations.append("two tasks in the server's send() at once")
        self._sending += 1
        try:
            if self.client.send_delay:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.client.send_delay)
            if self.client_gone and self.client.spec_24 and (self.accepted or self.strict_spec_24):
                self.send_failures += 1
                raise OSError("client disconnected")
            self.sent.append(message)
            self.accepted = self.accepted or message["type"] == "websocket.accept"
            self.handshake_answered.set()
        finally:
            self._sending -= 1
        kind = message["type"]
        if kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            self.app_closed.set()

    def _data_message(self, data: Data) -> Message:
        payload = data.payload()
        message: Message = {"type": "websocket.receive"}
        key, other = ("bytes", "text") if isinstance(payload, bytes) else ("text", "bytes")
        message[key] = payload
        if self.client.hypercorn_style:
            message[other] = None
        return message

    async def run_client(self) -> None:
        """Connect; once accepted, send the events; leave (at once, or when the app has closed).

        A client can send no frame before the handshake is answered, so a handler that neither
        accepts nor rejects sees nothing until the client gives up (after ``CLIENT_PATIENCE``).
        """
        self.client_running = True
        try:
            await self._to_app.send({"type": "websocket.connect"})
            with trio.move_on_after(CLIENT_PATIENCE):
                await self.handshake_answered.wait()
            for event in self.client.events if self.accepted else ():
                if isinstance(event, Pause):
                    await trio.sleep(event.seconds)
                elif isinstance(event, Bogus):
                    await self._to_app.send({"type": event.type})
                else:
                    await self._to_app.send(self._data_message(event))
                    self.data_sent += 1
            if self.client.waits_for_close:
                with trio.move_on_after(CLIENT_PATIENCE):
                    await self.app_closed.wait()
            self.client_gone = True
            disconnect: Message = {"type": "websocket.disconnect", "code": self.client.code}
            if self.client.reason is not None:
                disconnect["reason"] = self.client.reason
            await self._to_app.send(disconnect)
        finally:
            self.client_running = False


# -- the handler -----------------------------------------------------------------------------

RECEIVES = {"receive_text", "receive_bytes", "receive_json", "receive", "iter"}
READERS = RECEIVES | {"accept"}  # accept() reads the connect first when it has not been read


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...] = ()
    cancel_after: float | None = None  # cancel the call this long after it starts
    propagate: bool = False  # let a (documented) error escape, as an unguarded handler does


@dataclass(frozen=True)
class Together:
    """Two calls from two tasks at once."""

    first: Call
    second: Call


@dataclass(frozen=True)
class Raise:
    """The handler raises: ``WebSocketException(code)`` or an error of its own."""

    code: int | None  # None: an application error


Op = Call | Together | Raise


class AppError(Exception):
    """An unexpected error in the handler itself."""


async def forbidden(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"no"})


_RAW_SENDS: list[dict[str, Any]] = [
    {"type": "websocket.http.response.start", "status": 403, "headers": []},
    {"type": "websocket.http.response.body", "body": b"x", "more_body": True},
    {"type": "websocket.http.response.body", "body": b"x"},
    {"type": "websocket.accept"},
    {"type": "websocket.bogus"},
]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a strategy with the given odds (``one_of`` ignores repeats); shrinks towards the first."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


accepts = st.builds(
    lambda sub, headers: Call("accept", (sub, headers)),
    st.sampled_from([None, None, None, "chat", "nope"]),
    st.sampled_from([None, None, None, [(b"x-a", b"1")], [("x-a", "1")]]),
)
plain_calls = weighted(
    (1, accepts),
    (6, st.sampled_from(["receive_text", "receive_text", "receive_bytes", "receive"]).map(Call)),
    (2, st.sampled_from(["text", "binary", "yaml"]).map(lambda mode: Call("receive_json", (mode,)))),
    (
        3,
        st.tuples(st.sampled_from(["text", "bytes", "json"]), st.integers(1, 5)).map(
            lambda a: Call("iter", a)
        ),
    ),
    (4, st.sampled_from(["text", "bytes", "json", "json_binary"]).map(lambda kind: Call("send", (kind,)))),
    (
        1,
        st.tuples(st.sampled_from([1000, 4000]), st.sampled_from([None, "done"])).map(
            lambda a: Call("close", a)
        ),
    ),
    (1, st.sampled_from([Call("deny"), *(Call("send_raw", (message,)) for message in _RAW_SENDS)])),
    (2, st.sampled_from([0.0, 0.01, 0.1, 1.5]).map(lambda seconds: Call("sleep", (seconds,)))),
)
cancel_delays = st.sampled_from([0.0, 0.001, 0.03, 0.2])
calls = st.builds(
    lambda call, cancel_after, propagate: Call(call.name, call.args, cancel_after, propagate),
    plain_calls,
    weighted((5, st.none()), (1, cancel_delays)),
    weighted((6, st.just(False)), (1, st.just(True))),
)
often_cancelled_calls = st.builds(
    lambda call, cancel_after: Call(call.name, call.args, cancel_after),
    plain_calls,
    weighted((1, st.none()), (1, cancel_delays)),
)
ops: st.SearchStrategy[Op] = weighted(
    (12, calls),
    (3, st.builds(Together, calls, often_cancelled_calls)),
    (1, st.builds(Raise, st.sampled_from([None, 1008, 4003]))),
)


@dataclass(frozen=True)
class Handler:
    ops: tuple[Op, ...]
    structured: bool
    accept_before_block: bool  # structured: accept in plain mode, then enter the block
    outer_cancel_at: float | None  # cancel the whole handler from outside at this time
    takeover_delay: float
    max_buffered_messages: int
    max_buffered_bytes: int


def handlers(*, structured: bool) -> st.SearchStrategy[Handler]:
    """Most handlers accept first, as real ones do; the rest reject, misuse, or accept later."""
    return st.builds(
        lambda accept_first, rest, **options: Handler(
            ops=(Call("accept", (None, None)),) * accept_first + tuple(rest), **options
        ),
        accept_first=weighted((4, st.just(True)), (1, st.just(False))),
        rest=st.lists(ops, min_size=1, max_size=12),
        structured=st.just(structured),
        accept_before_block=st.booleans() if structured else st.just(False),
        outer_cancel_at=weighted((6, st.none()), (1, st.sampled_from([0.0, 0.05, 1.2]))),
        takeover_delay=st.sampled_from([0.0, 0.01, 0.05]),
        max_buffered_messages=st.sampled_from([1, 2, 64]),
        max_buffered_bytes=st.sampled_from([2, 1024 * 1024]),
    )


# -- running one connection ------------------------------------------------------------------

_KNOWN_RUNTIME_ERRORS = re.compile(
    r'Expected ASGI message|The "mode" argument|Cannot call "(receive|send)"|Need to call "accept"'
)


def documented(error: Exception, call: Call, *, beside_a_receiver: bool) -> bool:
    """Whether ``call`` may raise ``error``, by the tree in websockets.py and docs/websocket.md."""
    if isinstance(error, RuntimeError):  # state errors, named after the ASGI messages involved
        if type(error) is RuntimeError:
            return bool(_KNOWN_RUNTIME_ERRORS.search(str(error)))
        return type(error) is WebSocketDisconnected
    if isinstance(error, trio.BusyResourceError):
        return call.name in READERS and beside_a_receiver
    if isinstance(error, FrameTypeError):
        return call.name in RECEIVES - {"receive"}
    if isinstance(error, WebSocketDisconnect):
        # Any send finds the client gone (1006) under spec 2.4, the handshake's included.
        return call.name in {"receive_text", "receive_bytes", "receive_json", "send", "send_raw", "close"} | {
            "accept",
            "deny",
        }
    if isinstance(error, InvalidJSON):
        return call.name == "receive_json" or (call.name == "iter" and call.args[0] == "json")
    if isinstance(error, ValueError):  # a subprotocol the client did not offer
        return call.name == "accept"
    if isinstance(error, TypeError):  # accept headers that are not bytes
        return call.name == "accept"
    return False


def _seq(item: Any) -> int:
    return int(re.sub(r"\D", "", item.decode("latin-1") if isinstance(item, bytes) else str(item)))


@dataclass
class Log:
    problems: list[str] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    consumed: int = 0  # data frames the handler took: returned, or raised over (wrong type, bad JSON)
    sent_ok: list[str] = field(default_factory=list)
    tags: int = 0
    cancelled: list[str] = field(default_factory=list)  # calls interrupted by a cancellation
    start_time: float = 0.0
    body_end: float | None = None
    body_error: BaseException | None = None
    escaped: BaseException | None = None
    exit_time: float | None = None
    state_at_body_end: tuple[WebSocketState, WebSocketState, bool] | None = None
    extra_tasks_after_app: int | None = None

    def got(self, item: Any) -> None:
        self.received.append(_seq(item))
        self.consumed += 1


async def perform(ws: WebSocket, call: Call, log: Log) -> None:
    name, args = call.name, call.args
    if name == "accept":
        await ws.accept(subprotocol=args[0], headers=args[1])
    elif name in ("receive_text", "receive_bytes"):
        log.got(await getattr(ws, name)())
    elif name == "receive_json":
        log.got(await ws.receive_json(mode=args[0]))
    elif name == "receive":
        message = await ws.receive()
        if message["type"] == "websocket.receive":
            log.got(message["text"] if message.get("text") is not None else message["bytes"])
    elif name == "iter":
        kind, limit = args
        count = 0
        async for item in getattr(ws, f"iter_{kind}")():
            log.got(item)
            count += 1
            if count >= limit:
                break
    elif name == "send":
        log.tags += 1
        tag = f"a{log.tags}"
        if args[0] == "text":
            await ws.send_text(tag)
        elif args[0] == "bytes":
            await ws.send_bytes(tag.encode())
        else:
            await ws.send_json({"tag": tag}, mode="binary" if args[0] == "json_binary" else "text")
        log.sent_ok.append(tag)
    elif name == "send_raw":
        await ws.send(dict(args[0]))
    elif name == "close":
        await ws.close(*args)
    elif name == "deny":
        await ws.send_denial_response(forbidden)
    else:
        await trio.sleep(args[0])


async def run_call(ws: WebSocket, call: Call, log: Log, *, beside_a_receiver: bool = False) -> None:
    connect_unread = ws.client_state is CONNECTING  # a raw "websocket.accept" can skip reading it
    with trio.CancelScope() as scope:
        if call.cancel_after is not None:
            scope.deadline = trio.current_time() + call.cancel_after
        try:
            await perform(ws, call, log)
        except trio.Cancelled:
            log.cancelled.append(call.name)
            raise
        except Exception as error:
            if not documented(error, call, beside_a_receiver=beside_a_receiver):
                log.problems.append(f"{call} raised an undocumented {error!r}")
            if call.name in RECEIVES and isinstance(error, FrameTypeError | InvalidJSON):
                if connect_unread and isinstance(error, FrameTypeError):
                    # receive_text() reading the connect itself calls it "a binary frame".
                    event("quirk seen: the connect message reported as a binary frame")
                else:
                    log.consumed += 1
            if call.propagate:
                raise


async def run_op(ws: WebSocket, op: Op, log: Log) -> None:
    if isinstance(op, Raise):
        raise AppError("handler bug") if op.code is None else WebSocketException(op.code, "raised")
    if isinstance(op, Call):
        await run_call(ws, op, log)
        return
    both_receive = op.first.name in READERS and op.second.name in READERS
    async with trio.open_nursery() as nursery:
        for call in (op.first, op.second):
            quiet = Call(call.name, call.args, call.cancel_after, propagate=False)
            nursery.start_soon(lambda c=quiet: run_call(ws, c, log, beside_a_receiver=both_receive))


async def run_body(ws: WebSocket, handler: Handler, log: Log) -> None:
    try:
        for op in handler.ops:
            await run_op(ws, op, log)
    except BaseException as error:
        log.body_error = error
        raise
    finally:
        log.body_end = trio.current_time()
        log.state_at_body_end = (ws.client_state, ws.application_state, ws.disconnected.is_set())


async def run_handler(ws: WebSocket, handler: Handler, log: Log) -> None:
    log.start_time = trio.current_time()
    if not handler.structured:
        with contextlib.suppress(Exception):  # a handler's own error ends it; nothing to check there
            await run_body(ws, handler, log)
        return
    if handler.accept_before_block:
        await run_call(ws, Call("accept", (None, None)), log)
    try:
        async with ws:
            await run_body(ws, handler, log)
    except BaseException as error:
        log.escaped = error
        if only_cancelled(error):
            raise
    finally:
        log.exit_time = trio.current_time()


def watchers() -> int:
    """How many watcher tasks (``_watcher.py``) this run has: 0 or 1."""
    stack, count = [trio.lowlevel.current_root_task()], 0
    while stack:
        task = stack.pop()
        assert task is not None
        count += task.name == "trio_asgi_ws watcher"
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


def connection(client: Client, handler: Handler) -> tuple[Server, WebSocket, Log]:
    server = Server(client)
    ws = WebSocket(
        server.scope,
        server.receive,
        server.send,
        max_buffered_messages=handler.max_buffered_messages,
        max_buffered_bytes=handler.max_buffered_bytes,
        takeover_delay=handler.takeover_delay,
        close_timeout=CLOSE_TIMEOUT,
    )
    log = Log()

    async def main() -> None:
        baseline = live_tasks()
        with trio.fail_after(RUN_BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.run_client)
                await trio.lowlevel.checkpoint()
                with trio.CancelScope() as outer:
                    if handler.outer_cancel_at is not None:
                        outer.deadline = trio.current_time() + handler.outer_cancel_at
                    await run_handler(ws, handler, log)
                watcher = _WATCHER.get(None)
                assert watcher is None or len(watcher) == 0, "the watcher still holds the connection"
                # Let go of, the run's watcher task ends at its next step: not the app's task.
                log.extra_tasks_after_app = live_tasks() - baseline - server.client_running - watchers()
                nursery.cancel_scope.cancel()
        assert live_tasks() == baseline

    try:
        run_on_mock_clock(main)
    except trio.TooSlowError:
        pytest.fail(f"the connection hung; server saw {server.violations}, handler {log.problems}")
    return server, ws, log


# -- what must hold afterwards ---------------------------------------------------------------


def sent_stream_state(sent: list[Message]) -> tuple[WebSocketState, list[str]]:
    """The application state the sent messages imply, and any break of the ASGI message order."""
    state, errors = CONNECTING, []
    allowed = {
        CONNECTING: {"websocket.accept", "websocket.close", "websocket.http.response.start"},
        CONNECTED: {"websocket.send", "websocket.close"},
        RESPONSE: {"websocket.http.response.body"},
        DISCONNECTED: set(),
    }
    for message in sent:
        kind = message["type"]
        if kind not in allowed[state]:
            errors.append(f"{kind} sent in state {state.name}")
            continue
        if kind == "websocket.accept":
            state = CONNECTED
        elif kind == "websocket.http.response.start":
            state = RESPONSE
        elif kind == "websocket.close" or (
            kind == "websocket.http.response.body" and not message.get("more_body", False)
        ):
            state = DISCONNECTED
    return state, errors


def sent_tag(message: Message) -> str:
    data = message.get("text")
    if data is None:
        data = message["bytes"].decode()
    return str(json.loads(data)["tag"]) if data.startswith("{") else str(data)


def check_connection(client: Client, handler: Handler, server: Server, ws: WebSocket, log: Log) -> None:
    # What the examples cover (pytest --hypothesis-show-statistics).
    event(f"states at the end: {ws.client_state.name}/{ws.application_state.name}")
    event(f"data frames read: {'none' if not log.received else 'some' if log.received else ''}")
    if log.state_at_body_end is not None and log.state_at_body_end[0] is DISCONNECTED:
        event("the handler read up to the disconnect")
    if handler.structured:
        event(f"body ended with {type(log.body_error).__name__}, block raised {type(log.escaped).__name__}")
    assert not server.violations, server.violations
    assert not log.problems, log.problems
    assert log.extra_tasks_after_app == 0, "a task outlived the handler"

    implied, order_errors = sent_stream_state(server.sent)
    assert not order_errors, order_errors
    gone = ws.disconnected.is_set()
    if implied is CONNECTED and gone:
        assert ws.application_state in (CONNECTED, DISCONNECTED)  # a close to nobody is not sent
    elif server.send_failures:  # a send that found the client gone ends our side too
        assert ws.application_state in (implied, DISCONNECTED), (ws.application_state, server.sent)
    else:
        assert ws.application_state is implied, (ws.application_state, server.sent)
    assert gone == (server.disconnect_delivered or server.send_failures > 0)
    assert (ws.client_state is not CONNECTING) == server.connect_delivered
    if handler.structured and log.body_end is not None:
        # After the block its record of the client; but as in plain mode, a client found gone only
        # by a failed send (1006 under spec 2.4) during the final close leaves client_state alone.
        assert ws.client_state is DISCONNECTED or not server.disconnect_delivered
        assert ws.client_state is not DISCONNECTED or gone
    else:  # the handler is the only reader
        assert (ws.client_state is DISCONNECTED) == server.disconnect_delivered

    # Data: in order, at most once each, and all of it for a handler that read to the disconnect.
    assert log.received == sorted(set(log.received)), log.received
    assert set(log.received) <= {data.seq for data in client.data}
    if log.state_at_body_end is None:  # cancelled from outside before the block was entered
        return
    read_to_the_end = log.state_at_body_end[0] is DISCONNECTED
    if read_to_the_end and not any(isinstance(event, Bogus) for event in client.events):
        assert log.consumed == server.data_sent, (log.consumed, log.received)
    if not handler.structured:  # the handler is the only reader: it took all the server gave
        assert log.consumed == server.data_delivered, (log.consumed, server.data_delivered)
    sent_data = [sent_tag(message) for message in server.sent if message["type"] == "websocket.send"]
    assert sent_data == log.sent_ok

    if handler.structured:
        check_block_exit(client, handler, server, ws, log)


def only_cancelled(error: BaseException | None) -> bool:
    """A ``Cancelled``, or a group (nested or not) of nothing else."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


def check_block_exit(client: Client, handler: Handler, server: Server, ws: WebSocket, log: Log) -> None:
    assert log.exit_time is not None and log.body_end is not None
    outer_cancelled = (
        handler.outer_cancel_at is not None and log.exit_time >= log.start_time + handler.outer_cancel_at
    )
    body_error, escaped = log.body_error, log.escaped
    assert not isinstance(escaped, BaseExceptionGroup), repr(escaped)
    quiet_end = body_error is None or only_cancelled(body_error)
    if quiet_end or isinstance(body_error, WebSocketDisconnect | WebSocketException):
        assert escaped is None or (outer_cancelled and only_cancelled(escaped)), repr(escaped)
    else:
        assert escaped is body_error, f"{escaped!r} escaped instead of {body_error!r}"

    # Leaving takes at most close_timeout (plus the server's own send time).
    assert log.exit_time - log.body_end <= CLOSE_TIMEOUT + 10 * client.send_delay + 1e-6

    # The close the block sends, if the socket was still open at the end of the body.
    assert log.state_at_body_end is not None
    _, app_state, gone_at_end = log.state_at_body_end
    if isinstance(body_error, WebSocketException):
        code, reason = body_error.code, body_error.reason
    elif isinstance(body_error, InvalidJSON):
        code, reason = 1007, "invalid JSON"
    elif quiet_end or isinstance(body_error, WebSocketDisconnect):
        code, reason = 1000, ""
    else:
        code, reason = 1011, ""
    closes = [message for message in server.sent if message["type"] == "websocket.close"]
    overflow_possible = len(client.data) > handler.max_buffered_messages or (
        len(client.data) > 1 and handler.max_buffered_bytes < 8
    )
    if app_state is CONNECTING:
        denials = [m for m in server.sent if m["type"] == "websocket.http.response.start"]
        if code == 1011 and server.send_failures == 0:
            assert [m["status"] for m in denials] == [500], server.sent
        elif server.send_failures == 0:
            assert closes and (closes[-1]["code"], closes[-1]["reason"]) == (code, reason), server.sent
    elif app_state is CONNECTED and not gone_at_end and not ws.disconnected.is_set():
        assert closes, f"the block left an open socket: {server.sent}"
        last = (closes[-1]["code"], closes[-1]["reason"])
        assert last == (code, reason) or (overflow_possible and last == (1008, "receive buffer full")), last


# -- the properties --------------------------------------------------------------------------


@property_settings(800)
@given(clients(), handlers(structured=False))
def test_plain_websocket_survives_any_client_and_handler(client: Client, handler: Handler) -> None:
    server, ws, log = connection(client, handler)
    check_connection(client, handler, server, ws, log)


@property_settings(1200)
@given(clients(), handlers(structured=True))
def test_structured_websocket_survives_any_client_and_handler(client: Client, handler: Handler) -> None:
    server, ws, log = connection(client, handler)
    check_connection(client, handler, server, ws, log)


# -- bugs these properties found, each pinned by a property of its own -------------------------


@property_settings(30)
@given(st.sampled_from(["accept", "close", "deny", "leave_block", "reject_in_block"]))
def test_send_failures_before_accept_are_a_disconnect_too(action: str) -> None:
    server = Server(Client((), 1001, None, False, True, True, 0.0, 10), strict_spec_24=True)
    server.client_gone = True  # the client left during the handshake
    ws = WebSocket(server.scope, server.receive, server.send, close_timeout=CLOSE_TIMEOUT)
    outcomes: list[Any] = []

    async def main() -> None:
        server._to_app.send_nowait({"type": "websocket.connect"})
        server._to_app.send_nowait({"type": "websocket.disconnect", "code": 1001})
        try:
            if action == "accept":
                await ws.accept()
            elif action == "close":
                await ws.close()
            elif action == "deny":
                await ws.send_denial_response(forbidden)
            else:
                async with ws:
                    if action == "reject_in_block":
                        await ws.close(4403)
        except WebSocketDisconnect as error:
            outcomes.append(error.code)
        except Exception as error:
            outcomes.append(error)

    run_on_mock_clock(main)
    assert outcomes in ([], [1006]), outcomes


@property_settings(30)
@given(
    accepted=st.booleans(),
    ending=st.sampled_from(["cancelled", "app_error", "websocket_exception", "inner_nursery"]),
)
def test_a_block_cancelled_from_outside_still_closes_and_raises_no_group(accepted: bool, ending: str) -> None:
    server = Server(Client((), 1000, None, True, True, False, 0.0, 10))
    ws = WebSocket(server.scope, server.receive, server.send, close_timeout=CLOSE_TIMEOUT)
    raised = AppError("handler bug") if ending == "app_error" else WebSocketException(4003)
    escaped: list[BaseException] = []

    async def main() -> None:
        server._to_app.send_nowait({"type": "websocket.connect"})
        with trio.CancelScope() as outer:  # server shutdown, or a move_on_after around the handler
            try:
                async with ws:
                    if accepted:
                        await ws.accept()
                    outer.cancel()
                    if ending in ("app_error", "websocket_exception"):
                        raise raised
                    if ending == "cancelled":
                        await trio.sleep_forever()
                    async with trio.open_nursery() as nursery:  # the usual shape of a handler
                        nursery.start_soon(trio.sleep_forever)
                        await trio.sleep_forever()
            except AppError as error:  # the outer scope does not absorb it: keep it here
                escaped.append(error)
            except BaseException as error:
                escaped.append(error)
                raise

    run_on_mock_clock(main)
    if ending == "app_error":
        assert escaped == [raised]
    else:  # the body's own nursery may wrap its Cancelled in a group: that is trio's business
        assert all(only_cancelled(error) for error in escaped), escaped
    code = {"app_error": 1011, "websocket_exception": 4003}.get(ending, 1000)
    last = server.sent[-1] if server.sent else {}
    if not accepted and code == 1011:
        assert last.get("type") == "websocket.http.response.body", server.sent
    else:
        assert (last.get("type"), last.get("code")) == ("websocket.close", code), server.sent


@property_settings(20)
@given(cancel_after=st.sampled_from([0.0, 0.001, 0.003]), structured=st.booleans())
def test_a_close_cancelled_in_the_send_queue_is_not_half_done(cancel_after: float, structured: bool) -> None:
    server = Server(Client((), 1000, None, True, True, False, 0.005, 10))
    ws = WebSocket(server.scope, server.receive, server.send, close_timeout=CLOSE_TIMEOUT)

    async def close_while_another_task_sends() -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.send_text, "slow")  # holds the send lock for 5 ms
            await trio.sleep(0.001)
            with trio.move_on_after(cancel_after):
                await ws.close(4000)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_client)
            if structured:
                async with ws:
                    await close_while_another_task_sends()
            else:
                await close_while_another_task_sends()
                if ws.application_state is CONNECTED:
                    await ws.close(4000)  # the handler tries again
            nursery.cancel_scope.cancel()

    run_on_mock_clock(main)
    assert [m["type"] for m in server.sent][-1] == "websocket.close", server.sent
    assert ws.application_state is DISCONNECTED


@property_settings(40)
@given(
    count=st.integers(0, 6),
    kind=st.sampled_from(["websocket.connect", "websocket.bogus"]),
    max_buffered_messages=st.sampled_from([1, 2, 64]),
)
def test_unexpected_server_messages_reach_the_handler_as_runtime_errors(
    count: int, kind: str, max_buffered_messages: int
) -> None:
    client = Client((Bogus(kind),) * count, 1000, None, False, True, False, 0.0, 10)
    handler = Handler(
        ops=(Call("accept", (None, None)), Call("sleep", (0.5,)), *[Call("receive_text")] * (count + 1)),
        structured=True,
        accept_before_block=False,
        outer_cancel_at=None,
        takeover_delay=0.01,
        max_buffered_messages=max_buffered_messages,
        max_buffered_bytes=1 << 20,
    )
    server, _, log = connection(client, handler)
    assert log.escaped is None, repr(log.escaped)
    assert not log.problems and not server.violations


@property_settings(20)
@given(st.sampled_from(["structured_before_accept", "routed_plain_after_accept"]))
def test_a_cancellation_through_a_nursery_closes_like_a_cancellation(where: str) -> None:
    server = Server(Client((), 1000, None, True, True, False, 0.0, 10))

    async def in_a_nursery(ws: WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await ws.receive()  # before accept: the connect; then the client's disconnect
            await ws.receive()
            await trio.sleep_forever()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    async def main() -> None:
        if where == "structured_before_accept":  # the client leaves during the handshake
            server._to_app.send_nowait({"type": "websocket.connect"})
            server._to_app.send_nowait({"type": "websocket.disconnect", "code": 1001})
            async with WebSocket(server.scope, server.receive, server.send) as ws:
                await in_a_nursery(ws)
            return
        route = WebSocketRoute("/", endpoint, structured=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run_client)
            with trio.move_on_after(1):  # the server shutting down, say
                await route.handle(server.scope, server.receive, server.send)
            nursery.cancel_scope.cancel()

    run_on_mock_clock(main)
    assert server.sent, "nothing sent"
    assert (server.sent[-1]["type"], server.sent[-1].get("code")) == ("websocket.close", 1000), server.sent


rejections = st.sampled_from(
    [
        (Call("close", (1000, None)),),
        (Call("close", (4403, "no")),),
        (Call("deny"),),
        (Call("send_raw", (_RAW_SENDS[0],)), Call("send_raw", (_RAW_SENDS[2],))),
    ]
)


@property_settings(40)
@given(rejection=rejections, read_connect=st.booleans(), takeover_delay=st.sampled_from([0.0, 0.05]))
def test_structured_rejection_ends_at_once(
    rejection: tuple[Op, ...], read_connect: bool, takeover_delay: float
) -> None:
    """A server that sends no disconnect after a rejection (Starlette's TestClient) does not hold it."""
    server = Server(Client((), 1000, None, False, True, False, 0.0, 10))
    ws = WebSocket(
        server.scope, server.receive, server.send, takeover_delay=takeover_delay, close_timeout=CLOSE_TIMEOUT
    )
    handler = Handler(
        ops=((Call("receive"),) if read_connect else ()) + rejection,
        structured=True,
        accept_before_block=False,
        outer_cancel_at=None,
        takeover_delay=takeover_delay,
        max_buffered_messages=64,
        max_buffered_bytes=1 << 20,
    )
    log = Log()

    async def main() -> None:
        await server._to_app.send({"type": "websocket.connect"})  # and then nothing, ever
        with trio.fail_after(RUN_BOUND):
            await run_handler(ws, handler, log)

    run_on_mock_clock(main)
    assert not log.problems and log.escaped is None
    assert log.exit_time is not None and log.body_end is not None
    assert log.exit_time - log.body_end == 0, f"the block waited {log.exit_time - log.body_end} s"


def _nested(depth: int, closed: bool) -> str:
    return "[" * depth + ("]" * depth if closed else "")


json_payloads: st.SearchStrategy[str | bytes] = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(['{"a": [1, 2]}', "null", "1e999", '"\\ud800"', "NaN"]),
    st.builds(_nested, st.sampled_from([1, 50, 5000, 100_000]), st.booleans()),
    st.builds(_nested, st.sampled_from([1, 50, 5000, 100_000]), st.booleans()).map(str.encode),
)


@property_settings(60)
@given(st.lists(json_payloads, min_size=1, max_size=4), st.booleans())
def test_any_client_json_gives_a_document_or_invalid_json_and_the_socket_stays_usable(
    payloads: list[str | bytes], iterate: bool
) -> None:
    failures: list[BaseException] = []

    async def main() -> None:
        to_app, inbox = trio.open_memory_channel[Message](math.inf)
        to_app.send_nowait({"type": "websocket.connect"})
        for payload in [*payloads, "0"]:
            key = "bytes" if isinstance(payload, bytes) else "text"
            to_app.send_nowait({"type": "websocket.receive", key: payload})

        async def send(message: Message) -> None:
            pass

        ws = WebSocket(websocket_scope(), inbox.receive, send)
        await ws.accept()
        for payload in payloads:
            try:
                if iterate and isinstance(payload, str):
                    document = await ws.iter_json().__anext__()
                else:
                    document = await ws.receive_json(mode="binary" if isinstance(payload, bytes) else "text")
            except InvalidJSON as error:
                if not error.msg:
                    failures.append(error)
            except Exception as error:
                failures.append(error)
            else:
                if repr(document) != repr(json.loads(payload)):  # what json itself makes of it
                    failures.append(AssertionError(f"{payload!r} gave {document!r}"))
        assert await ws.receive_json() == 0

    run_on_mock_clock(main)
    assert not failures, [type(error).__name__ for error in failures]
