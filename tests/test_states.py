"""The state table (``_states.ConnectionState``) on its own: every move, every refusal, every record.

``test_websockets.py`` checks the same rules through the ``WebSocket`` API and against
Starlette's class; here the table is pinned step by step, with both sides' states, whether the
handshake was refused, and the one record of how the client left.
"""

from __future__ import annotations

from typing import Any

import pytest

from trio_asgi_ws._states import (
    RECEIVE_AFTER_DISCONNECT,
    SEND_AFTER_CLOSE,
    ConnectionState,
    WebSocketState,
)
from trio_asgi_ws._types import Message
from trio_asgi_ws.exceptions import WebSocketDisconnect, WebSocketDisconnected

CONNECTING, CONNECTED, DISCONNECTED, RESPONSE = WebSocketState

CONNECT: Message = {"type": "websocket.connect"}
DATA_IN: Message = {"type": "websocket.receive", "text": "hi"}
ACCEPT: Message = {"type": "websocket.accept"}
DATA_OUT: Message = {"type": "websocket.send", "text": "hello"}
CLOSE: Message = {"type": "websocket.close", "code": 1000}
START: Message = {"type": "websocket.http.response.start", "status": 403}
PART: Message = {"type": "websocket.http.response.body", "body": b"no", "more_body": True}
LAST_PART: Message = {"type": "websocket.http.response.body", "body": b"."}
LAST_PART_SAID: Message = {"type": "websocket.http.response.body", "body": b".", "more_body": False}


def send(states: ConnectionState, message: Message) -> None:
    """What ``WebSocket.send`` does around the server's ``send()``: check, then commit."""
    states.sent(states.check_send(message))


def step(states: ConnectionState, direction: str, message: Message) -> None:
    if direction == "in":
        states.received(message)
    else:
        send(states, message)


def snapshot(states: ConnectionState) -> tuple[WebSocketState, WebSocketState, bool]:
    return states.client, states.application, states.rejected


def test_a_new_connection_is_connecting_on_both_sides_and_knows_of_no_disconnect() -> None:
    states = ConnectionState()
    assert snapshot(states) == (CONNECTING, CONNECTING, False)
    assert states.disconnect is None
    assert not states.disconnected.is_set()


# (direction, message) and the (client, application, rejected) it leads to.
Steps = list[tuple[str, Message, tuple[WebSocketState, WebSocketState, bool]]]
SESSIONS: dict[str, Steps] = {
    "accepted, then closed by the application": [
        ("in", CONNECT, (CONNECTED, CONNECTING, False)),
        ("out", ACCEPT, (CONNECTED, CONNECTED, False)),
        ("in", DATA_IN, (CONNECTED, CONNECTED, False)),
        ("out", DATA_OUT, (CONNECTED, CONNECTED, False)),
        ("out", CLOSE, (CONNECTED, DISCONNECTED, False)),
    ],
    "accepted, then left by the client": [
        ("in", CONNECT, (CONNECTED, CONNECTING, False)),
        ("out", ACCEPT, (CONNECTED, CONNECTED, False)),
        ("in", {"type": "websocket.disconnect", "code": 1000}, (DISCONNECTED, CONNECTED, False)),
    ],
    "accepted before the connect was read": [
        ("out", ACCEPT, (CONNECTING, CONNECTED, False)),
        ("in", CONNECT, (CONNECTED, CONNECTED, False)),
    ],
    "rejected with a close": [
        ("in", CONNECT, (CONNECTED, CONNECTING, False)),
        ("out", CLOSE, (CONNECTED, DISCONNECTED, True)),
    ],
    "denied with a one-part response": [
        ("in", CONNECT, (CONNECTED, CONNECTING, False)),
        ("out", START, (CONNECTED, RESPONSE, True)),
        ("out", LAST_PART, (CONNECTED, DISCONNECTED, True)),
    ],
    "denied with a response in parts": [
        ("out", START, (CONNECTING, RESPONSE, True)),
        ("out", PART, (CONNECTING, RESPONSE, True)),
        ("out", PART, (CONNECTING, RESPONSE, True)),
        ("out", LAST_PART_SAID, (CONNECTING, DISCONNECTED, True)),
    ],
}


@pytest.mark.parametrize("name", list(SESSIONS))
def test_each_message_moves_its_side_as_the_table_says(name: str) -> None:
    states = ConnectionState()
    for direction, message, expected in SESSIONS[name]:
        step(states, direction, message)
        assert snapshot(states) == expected, (direction, message)


def test_check_send_changes_nothing_until_the_message_is_sent() -> None:
    states = ConnectionState()
    assert states.check_send(START) is RESPONSE
    assert snapshot(states) == (CONNECTING, CONNECTING, False)
    states.sent(RESPONSE)
    assert states.check_send(PART) is RESPONSE
    assert states.check_send(LAST_PART) is DISCONNECTED
    assert snapshot(states) == (CONNECTING, RESPONSE, True)


# Messages the application may not send now, and Starlette's words for it.
REFUSED_SENDS = [
    (
        [],
        DATA_OUT,
        RuntimeError,
        'Expected ASGI message "websocket.accept", "websocket.close" or '
        "\"websocket.http.response.start\", but got 'websocket.send'",
    ),
    (
        [ACCEPT],
        START,
        RuntimeError,
        'Expected ASGI message "websocket.send" or "websocket.close", '
        "but got 'websocket.http.response.start'",
    ),
    (
        [START],
        CLOSE,
        RuntimeError,
        "Expected ASGI message \"websocket.http.response.body\", but got 'websocket.close'",
    ),
    ([ACCEPT, CLOSE], DATA_OUT, WebSocketDisconnected, SEND_AFTER_CLOSE),
    ([ACCEPT, CLOSE], CLOSE, WebSocketDisconnected, SEND_AFTER_CLOSE),
    ([START, LAST_PART], LAST_PART, WebSocketDisconnected, SEND_AFTER_CLOSE),
]


@pytest.mark.parametrize(("before", "message", "error", "words"), REFUSED_SENDS)
def test_a_send_the_state_does_not_allow_raises_starlettes_error_and_changes_nothing(
    before: list[Message], message: Message, error: type[Exception], words: str
) -> None:
    states = ConnectionState()
    for sent in before:
        send(states, sent)
    was = snapshot(states)
    with pytest.raises(error) as info:
        states.check_send(message)
    assert type(info.value) is error
    assert str(info.value) == words
    assert snapshot(states) == was


def test_the_words_for_use_after_close_or_disconnect_are_starlettes() -> None:
    assert SEND_AFTER_CLOSE == 'Cannot call "send" once a close message has been sent.'
    assert RECEIVE_AFTER_DISCONNECT == 'Cannot call "receive" once a disconnect message has been received.'


@pytest.mark.parametrize(
    ("before", "message", "words"),
    [
        ([], DATA_IN, "Expected ASGI message \"websocket.connect\", but got 'websocket.receive'"),
        (
            [CONNECT],
            CONNECT,
            'Expected ASGI message "websocket.receive" or "websocket.disconnect", '
            "but got 'websocket.connect'",
        ),
    ],
)
def test_a_message_of_the_wrong_type_for_the_client_side_raises_starlettes_error(
    before: list[Message], message: Message, words: str
) -> None:
    states = ConnectionState()
    for received in before:
        states.received(received)
    was = snapshot(states)
    with pytest.raises(RuntimeError) as info:
        states.received(message)
    assert type(info.value) is RuntimeError
    assert str(info.value) == words
    assert snapshot(states) == was


@pytest.mark.parametrize("message", [DATA_IN, CONNECT, {"type": "websocket.disconnect", "code": 1000}])
def test_anything_received_after_the_disconnect_is_refused(message: Message) -> None:
    states = ConnectionState()
    states.received(CONNECT)
    states.received({"type": "websocket.disconnect", "code": 4000})
    with pytest.raises(WebSocketDisconnected) as info:
        states.received(message)
    assert str(info.value) == RECEIVE_AFTER_DISCONNECT
    with pytest.raises(WebSocketDisconnected) as info:
        states.check_receive()
    assert str(info.value) == RECEIVE_AFTER_DISCONNECT
    assert states.disconnect == {"type": "websocket.disconnect", "code": 4000}


def test_check_receive_allows_a_client_that_has_not_left() -> None:
    states = ConnectionState()
    states.check_receive()
    states.received(CONNECT)
    states.check_receive()


# -- the record of the client's disconnect -------------------------------------------------------


@pytest.mark.parametrize(
    ("disconnect", "code", "reason"),
    [
        ({"type": "websocket.disconnect", "code": 4001, "reason": "bye"}, 4001, "bye"),
        ({"type": "websocket.disconnect", "code": 1000}, 1000, ""),
        ({"type": "websocket.disconnect"}, 1005, ""),  # 1005: no status code was given
    ],
)
def test_the_disconnect_error_carries_the_clients_code_and_reason(
    disconnect: Message, code: int, reason: str
) -> None:
    states = ConnectionState()
    states.received(CONNECT)
    states.received(disconnect)
    assert states.disconnect is disconnect
    assert states.disconnected.is_set()
    error = states.disconnect_error()
    assert type(error) is WebSocketDisconnect
    assert (error.code, error.reason) == (code, reason)


def test_a_data_send_after_the_client_left_raises_its_disconnect_but_a_close_is_allowed() -> None:
    states = ConnectionState()
    for direction, message in [("in", CONNECT), ("out", ACCEPT)]:
        step(states, direction, message)
    states.received({"type": "websocket.disconnect", "code": 4002, "reason": "gone"})
    with pytest.raises(WebSocketDisconnect) as info:
        states.check_send(DATA_OUT)
    assert (info.value.code, info.value.reason) == (4002, "gone")
    assert states.check_send(CLOSE) is DISCONNECTED


def test_a_failed_server_send_records_an_abnormal_closure() -> None:
    states = ConnectionState()
    for direction, message in [("in", CONNECT), ("out", ACCEPT)]:
        step(states, direction, message)
    states.send_failed()
    assert snapshot(states) == (CONNECTED, DISCONNECTED, False)
    assert states.disconnect == {"type": "websocket.disconnect", "code": 1006}
    assert states.disconnected.is_set()
    assert states.disconnect_error().code == 1006


def test_only_the_first_disconnect_seen_is_kept() -> None:
    states = ConnectionState()
    first: dict[str, Any] = {"type": "websocket.disconnect", "code": 1001}
    states.record_disconnect(first)
    states.send_failed()
    states.record_disconnect({"type": "websocket.disconnect", "code": 4000})
    assert states.disconnect is first
    assert states.disconnect_error().code == 1001


@pytest.mark.parametrize(
    ("before", "recorded", "client_after"),
    [
        ([CONNECT], True, DISCONNECTED),  # seen by another task: the client's side ends
        ([CONNECT], False, CONNECTED),  # nothing recorded: nothing to end
        ([], True, CONNECTING),  # never connected: there is no connected side to end
    ],
)
def test_client_gone_ends_a_connected_client_side_once_its_disconnect_is_recorded(
    before: list[Message], recorded: bool, client_after: WebSocketState
) -> None:
    states = ConnectionState()
    for message in before:
        states.received(message)
    if recorded:
        states.record_disconnect({"type": "websocket.disconnect", "code": 1000})
    states.client_gone()
    assert states.client is client_after
