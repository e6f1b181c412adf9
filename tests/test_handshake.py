"""``accept()``'s argument checks (``_handshake``) on their own, with their exact messages.

``test_websockets.py`` checks that ``accept()`` raises them before anything reaches the server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.driver import websocket_scope
from trio_asgi_ws._handshake import check_subprotocol, checked_accept_headers

# -- the subprotocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", [None, "chat", "v2.json"])
def test_none_or_an_offered_subprotocol_passes(subprotocol: str | None) -> None:
    check_subprotocol(websocket_scope(subprotocols=["chat", "v2.json"]), subprotocol)


@pytest.mark.parametrize(
    ("offered", "subprotocol", "error", "words"),
    [
        (["chat"], b"chat", TypeError, "subprotocol must be a str or None, got bytes"),
        (["chat"], 1, TypeError, "subprotocol must be a str or None, got int"),
        (
            ["chat", "v2"],
            "graphql",
            ValueError,
            "subprotocol 'graphql' was not offered by the client (it offered ['chat', 'v2'])",
        ),
        ([], "chat", ValueError, "subprotocol 'chat' was not offered by the client (it offered [])"),
        # A scope without the key (it is optional in ASGI): the client offered nothing.
        (None, "chat", ValueError, "subprotocol 'chat' was not offered by the client (it offered [])"),
    ],
)
def test_a_bad_subprotocol_is_refused_with_what_the_client_offered(
    offered: list[str] | None, subprotocol: Any, error: type[Exception], words: str
) -> None:
    scope = websocket_scope(subprotocols=offered)
    if offered is None:
        del scope["subprotocols"]
    with pytest.raises(error) as info:
        check_subprotocol(scope, subprotocol)
    assert type(info.value) is error
    assert str(info.value) == words


# -- the headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "checked"),
    [
        (None, []),
        ([], []),
        (
            [(b"X-Extra", b"1"), [b"set-cookie", b"a=b; Path=/"]],
            [(b"x-extra", b"1"), (b"set-cookie", b"a=b; Path=/")],
        ),
        (((b"x-a", b""),), [(b"x-a", b"")]),  # any iterable of pairs
    ],
)
def test_good_headers_come_back_as_lower_cased_byte_pairs(
    headers: Any, checked: list[tuple[bytes, bytes]]
) -> None:
    assert checked_accept_headers(headers) == checked


ENCODE_THEM = 'encode them, e.g. (b"x-name", b"value")'


@pytest.mark.parametrize(
    ("header", "error", "words"),
    [
        ((b"x-name",), TypeError, "accept headers must be (name, value) pairs, got (b'x-name',)"),
        (b"x-name", TypeError, "accept headers must be (name, value) pairs, got b'x-name'"),
        (
            ("x-name", "value"),
            TypeError,
            f"accept header names and values must be bytes, got ('x-name', 'value'); {ENCODE_THEM}",
        ),
        (
            (b"x-name", "value"),
            TypeError,
            f"accept header names and values must be bytes, got (b'x-name', 'value'); {ENCODE_THEM}",
        ),
        (
            ("x-name", b"value"),
            TypeError,
            f"accept header names and values must be bytes, got ('x-name', b'value'); {ENCODE_THEM}",
        ),
        ((b":status", b"200"), ValueError, "invalid header name b':status': not an HTTP token"),
        ((b"", b"x"), ValueError, "invalid header name b'': not an HTTP token"),
        ((b"x-evil", b"a\r\nb"), ValueError, "invalid value for header b'x-evil': contains CR, LF or NUL"),
        ((b"x-evil", b"a\x00"), ValueError, "invalid value for header b'x-evil': contains CR, LF or NUL"),
        (
            (b"Sec-WebSocket-Protocol", b"chat"),
            ValueError,
            "accept header b'Sec-WebSocket-Protocol' is not allowed: "
            "pass the subprotocol as accept(subprotocol=...) instead",
        ),
        (
            (b"sec-websocket-accept", b"x"),
            ValueError,
            "accept header b'sec-websocket-accept' is not allowed: "
            "the server computes it from the client's key",
        ),
    ],
)
def test_a_bad_header_is_refused_with_what_is_wrong_with_it(
    header: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        checked_accept_headers([(b"x-fine", b"1"), header])
    assert type(info.value) is error
    assert str(info.value) == words
