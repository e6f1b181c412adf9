from __future__ import annotations

from typing import Any

import pytest

from trio_asgi_ws.datastructures import URL, Address, Headers, QueryParams, State, URLPath


def make_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "scheme": "ws",
        "path": "/chat",
        "query_string": b"",
        "headers": [],
        "server": ("example.org", 80),
    }
    scope.update(overrides)
    return scope


# --- Address ---------------------------------------------------------------------------


def test_address_is_a_named_host_port_pair() -> None:
    address = Address("127.0.0.1", 8000)
    assert address.host == "127.0.0.1"
    assert address.port == 8000
    assert tuple(address) == ("127.0.0.1", 8000)


# --- URL: construction ----------------------------------------------------------------


def test_url_is_a_str_and_compares_and_hashes_like_one() -> None:
    url = URL("ws://example.org/chat")
    assert isinstance(url, str)
    assert url == "ws://example.org/chat"
    assert hash(url) == hash("ws://example.org/chat")
    assert {url: 1}["ws://example.org/chat"] == 1
    assert str(url) == "ws://example.org/chat"
    assert type(str(url)) is str


def test_url_defaults_to_empty_string() -> None:
    assert URL() == ""


def test_url_from_components() -> None:
    assert URL(scheme="ws", netloc="h", path="/p") == "ws://h/p"
    assert URL(scheme="wss", hostname="::1", port=9000, path="/x") == "wss://[::1]:9000/x"


def test_url_rejects_mixing_url_scope_and_components() -> None:
    with pytest.raises(TypeError):
        URL("ws://a/", scope=make_scope())
    with pytest.raises(TypeError):
        URL("ws://a/", path="/b")
    with pytest.raises(TypeError):
        URL(scope=make_scope(), path="/b")


def test_url_from_scope_uses_host_header() -> None:
    scope = make_scope(headers=[(b"host", b"chat.example.com:8080")])
    assert URL(scope=scope) == "ws://chat.example.com:8080/chat"


def test_url_from_scope_uses_first_host_header() -> None:
    scope = make_scope(headers=[(b"host", b"first.test"), (b"host", b"second.test")])
    assert URL(scope=scope) == "ws://first.test/chat"


def test_url_from_scope_falls_back_to_server_without_host_header() -> None:
    scope = make_scope(server=("10.0.0.1", 8000))
    assert URL(scope=scope) == "ws://10.0.0.1:8000/chat"


def test_url_from_scope_omits_default_ws_port() -> None:
    assert URL(scope=make_scope(server=("example.org", 80))) == "ws://example.org/chat"


def test_url_from_scope_omits_default_wss_port() -> None:
    scope = make_scope(scheme="wss", server=("example.org", 443))
    assert URL(scope=scope) == "wss://example.org/chat"


def test_url_from_scope_keeps_non_default_wss_port() -> None:
    scope = make_scope(scheme="wss", server=("example.org", 80))
    assert URL(scope=scope) == "wss://example.org:80/chat"


def test_url_from_scope_brackets_ipv6_server_host() -> None:
    assert URL(scope=make_scope(server=("::1", 8000))) == "ws://[::1]:8000/chat"
    assert URL(scope=make_scope(server=("::1", 80))) == "ws://[::1]/chat"


def test_url_from_scope_accepts_ipv6_host_header() -> None:
    scope = make_scope(headers=[(b"host", b"[2001:db8::1]:8443")])
    url = URL(scope=scope)
    assert url == "ws://[2001:db8::1]:8443/chat"
    assert url.hostname == "2001:db8::1"
    assert url.port == 8443


@pytest.mark.parametrize(
    "host",
    [
        b"evil.test/other",
        b"evil.test?x=1",
        b"evil.test#frag",
        b"user@evil.test",
        b"evil.test:99999",
        b"evil.test:",
        b"evil.test:8o",
        b":80",
        b"",
        b"[not-an-ip]",
        b"[::1",
        b"[fe80::1%25eth0]",
        b"[::1]x",
        b"ex ample.test",
    ],
)
def test_url_from_scope_ignores_invalid_host_header(host: bytes) -> None:
    scope = make_scope(headers=[(b"host", host)], server=("fallback.test", 8000))
    assert URL(scope=scope) == "ws://fallback.test:8000/chat"


def test_url_from_scope_without_netloc_is_path_and_query() -> None:
    scope = make_scope(server=None, query_string=b"a=1")
    assert URL(scope=scope) == "/chat?a=1"
    assert URL(scope=make_scope(server=None)) == "/chat"


def test_url_from_scope_without_netloc_escapes_double_slash_path() -> None:
    url = URL(scope=make_scope(server=None, path="//x/y"))
    assert url == "/%2Fx/y"
    assert url.netloc == ""
    assert url.path == "/%2Fx/y"


def test_url_from_scope_includes_query_string() -> None:
    scope = make_scope(query_string=b"token=abc&room=1")
    url = URL(scope=scope)
    assert url == "ws://example.org/chat?token=abc&room=1"
    assert url.query == "token=abc&room=1"


def test_url_from_scope_escapes_special_path_characters() -> None:
    url = URL(scope=make_scope(path="/a?b#c\\d"))
    assert url == "ws://example.org/a%3Fb%23c%5Cd"
    assert url.query == ""
    assert url.fragment == ""


def test_url_from_scope_defaults_scheme_to_http() -> None:
    scope = make_scope()
    del scope["scheme"]
    assert URL(scope=scope) == "http://example.org/chat"


def test_url_from_scope_prepends_root_path_missing_from_path() -> None:
    scope = make_scope(root_path="/api", path="/chat")
    assert URL(scope=scope) == "ws://example.org/api/chat"


def test_url_from_scope_does_not_repeat_root_path_already_in_path() -> None:
    scope = make_scope(root_path="/api", path="/api/chat")
    assert URL(scope=scope) == "ws://example.org/api/chat"
    assert URL(scope=make_scope(root_path="/api", path="/api")) == "ws://example.org/api"


def test_url_from_scope_root_path_prefix_must_match_whole_segment() -> None:
    scope = make_scope(root_path="/api", path="/apiary")
    assert URL(scope=scope) == "ws://example.org/api/apiary"


# --- URL: components and helpers --------------------------------------------------------


def test_url_exposes_every_component() -> None:
    url = URL("wss://alice:secret@Example.ORG:8443/room/1?x=1&y=2#top")
    assert url.scheme == "wss"
    assert url.netloc == "alice:secret@Example.ORG:8443"
    assert url.path == "/room/1"
    assert url.query == "x=1&y=2"
    assert url.fragment == "top"
    assert url.username == "alice"
    assert url.password == "secret"
    assert url.hostname == "example.org"
    assert url.port == 8443
    assert url.is_secure is True
    assert url.components.geturl() == url


def test_url_components_are_cached() -> None:
    url = URL("ws://h/p")
    assert url.components is url.components


def test_url_missing_components_are_none_or_empty() -> None:
    url = URL("/only/path")
    assert (url.scheme, url.netloc, url.query, url.fragment) == ("", "", "", "")
    assert (url.username, url.password, url.hostname, url.port) == (None, None, None, None)
    assert url.is_secure is False


@pytest.mark.parametrize(
    ("url", "secure"),
    [("ws://h/", False), ("http://h/", False), ("wss://h/", True), ("https://h/", True)],
)
def test_url_is_secure_for_tls_schemes(url: str, secure: bool) -> None:
    assert URL(url).is_secure is secure


def test_url_replace_port() -> None:
    url = URL("ws://user:pw@h:8000/p?q=1")
    assert url.replace(port=9000) == "ws://user:pw@h:9000/p?q=1"
    assert url.replace(port=None) == "ws://user:pw@h/p?q=1"
    assert isinstance(url.replace(port=1), URL)


def test_url_replace_hostname_keeps_port_and_brackets_ipv6() -> None:
    url = URL("ws://h:8000/p")
    assert url.replace(hostname="other.test") == "ws://other.test:8000/p"
    assert url.replace(hostname="::1") == "ws://[::1]:8000/p"
    assert url.replace(hostname="[::1]") == "ws://[::1]:8000/p"


def test_url_replace_port_keeps_bracketed_ipv6_host() -> None:
    assert URL("ws://[::1]:8000/p").replace(port=1) == "ws://[::1]:1/p"
    assert URL("ws://[::1]/p").replace(port=1) == "ws://[::1]:1/p"


def test_url_replace_username_and_password() -> None:
    url = URL("ws://h/p")
    assert url.replace(username="bob") == "ws://bob@h/p"
    assert url.replace(username="bob", password="pw") == "ws://bob:pw@h/p"
    with_user = URL("ws://bob:pw@h/p")
    assert with_user.replace(password="new") == "ws://bob:new@h/p"
    assert with_user.replace(password=None) == "ws://bob@h/p"
    assert with_user.replace(username=None) == "ws://h/p"


def test_url_replace_scheme_and_other_split_fields() -> None:
    url = URL("ws://h/p?q=1#f")
    assert url.replace(scheme="wss") == "wss://h/p?q=1#f"
    assert url.replace(path="/other", query="", fragment="") == "ws://h/other"
    assert url.replace(netloc="n:1") == "ws://n:1/p?q=1#f"


def test_url_replace_positional_is_plain_str_replace() -> None:
    url = URL("ws://h/ws/ws")
    result = url.replace("ws", "x", 2)
    assert result == "x://h/x/ws"
    assert type(result) is str
    with pytest.raises(TypeError):
        url.replace("ws", "x", scheme="wss")


def test_url_include_query_params_overrides_and_appends() -> None:
    url = URL("ws://h/p?a=1&b=2&a=3")
    assert url.include_query_params(a=9, c="x y") == "ws://h/p?b=2&a=9&c=x+y"
    assert URL("ws://h/p").include_query_params(a=1) == "ws://h/p?a=1"


def test_url_replace_query_params_discards_old_query() -> None:
    url = URL("ws://h/p?a=1&b=2")
    assert url.replace_query_params(c=3) == "ws://h/p?c=3"
    assert url.replace_query_params() == "ws://h/p"


def test_url_remove_query_params_single_key_and_sequence() -> None:
    url = URL("ws://h/p?a=1&b=2&a=3&c=")
    assert url.remove_query_params("a") == "ws://h/p?b=2&c="
    assert url.remove_query_params(["a", "c"]) == "ws://h/p?b=2"
    assert url.remove_query_params("missing") == "ws://h/p?a=1&b=2&a=3&c="


def test_url_repr_hides_password() -> None:
    url = URL("ws://user:secret@host/")
    assert repr(url) == "URL('ws://user:********@host/')"
    assert "secret" not in repr(url)
    assert url == "ws://user:secret@host/"
    assert repr(URL("ws://host/")) == "URL('ws://host/')"


# --- QueryParams ------------------------------------------------------------------------


def test_query_params_keeps_blank_values() -> None:
    params = QueryParams("a=&b=2&c")
    assert params["a"] == ""
    assert params["c"] == ""
    assert params.multi_items() == [("a", ""), ("b", "2"), ("c", "")]


def test_query_params_percent_decodes_and_plus_is_space() -> None:
    params = QueryParams("name=J%C3%BCrgen+M&sym=%26%3D")
    assert params["name"] == "Jürgen M"
    assert params["sym"] == "&="


def test_query_params_from_bytes() -> None:
    assert QueryParams(b"a=1&b=%20").multi_items() == [("a", "1"), ("b", " ")]


def test_query_params_getitem_returns_last_value() -> None:
    params = QueryParams("a=1&a=2&a=3")
    assert params["a"] == "3"
    assert params.get("a") == "3"


def test_query_params_getlist_preserves_order() -> None:
    params = QueryParams("a=2&b=x&a=1&a=3")
    assert params.getlist("a") == ["2", "1", "3"]
    assert params.getlist("missing") == []


def test_query_params_mapping_interface() -> None:
    params = QueryParams("a=1&b=2&a=3")
    assert list(params.keys()) == ["a", "b"]
    assert list(params.values()) == ["3", "2"]
    assert list(params.items()) == [("a", "3"), ("b", "2")]
    assert list(params) == ["a", "b"]
    assert len(params) == 2
    assert "a" in params
    assert "z" not in params
    assert params.get("z") is None
    assert params.get("z", "d") == "d"
    with pytest.raises(KeyError):
        params["z"]


def test_query_params_from_pairs_mapping_and_other_query_params() -> None:
    from_pairs = QueryParams([("a", 1), ("a", 2)])
    assert from_pairs.getlist("a") == ["1", "2"]
    assert QueryParams({"a": "1", "b": 2}).multi_items() == [("a", "1"), ("b", "2")]
    assert QueryParams(from_pairs).multi_items() == [("a", "1"), ("a", "2")]
    assert QueryParams("a=1", b=2).multi_items() == [("a", "1"), ("b", "2")]
    assert len(QueryParams()) == 0


def test_query_params_str_round_trips() -> None:
    text = "a=1&b=x+y&c=%26&a=2&d="
    params = QueryParams(text)
    assert str(params) == text
    assert QueryParams(str(params)) == params
    assert repr(params) == f"QueryParams({text!r})"


def test_query_params_equality_ignores_order() -> None:
    assert QueryParams("a=1&b=2") == QueryParams("b=2&a=1")
    assert QueryParams("a=1&a=2") == QueryParams("a=2&a=1")
    assert QueryParams("a=1&a=2") != QueryParams("a=2")
    assert QueryParams("a=1") != {"a": "1"}


# --- Headers ------------------------------------------------------------------------------


RAW_HEADERS = [
    (b"host", b"example.org"),
    (b"sec-websocket-protocol", b"chat"),
    (b"sec-websocket-protocol", b"superchat"),
]


def test_headers_lookup_is_case_insensitive() -> None:
    headers = Headers(raw=RAW_HEADERS)
    assert headers["Host"] == "example.org"
    assert headers["HOST"] == "example.org"
    assert headers.get("host") == "example.org"
    assert "Sec-WebSocket-Protocol" in headers


def test_headers_getitem_returns_first_duplicate() -> None:
    assert Headers(raw=RAW_HEADERS)["sec-websocket-protocol"] == "chat"


def test_headers_getlist_returns_all_duplicates_in_order() -> None:
    headers = Headers(raw=RAW_HEADERS)
    assert headers.getlist("Sec-WebSocket-Protocol") == ["chat", "superchat"]
    assert headers.getlist("missing") == []


def test_headers_keys_values_items_are_decoded_lists() -> None:
    headers = Headers(raw=[(b"x-name", b"caf\xe9"), (b"x-name", b"b")])
    assert headers.keys() == ["x-name", "x-name"]
    assert headers.values() == ["café", "b"]
    assert headers.items() == [("x-name", "café"), ("x-name", "b")]
    assert list(headers) == ["x-name", "x-name"]


def test_headers_raw_returns_a_copy() -> None:
    source = list(RAW_HEADERS)
    headers = Headers(raw=source)
    copy = headers.raw
    copy.append((b"x-extra", b"1"))
    source.append((b"x-other", b"1"))
    assert headers.raw == RAW_HEADERS
    assert "x-extra" not in headers
    assert "x-other" not in headers


def test_headers_missing_key_raises_key_error() -> None:
    headers = Headers(raw=RAW_HEADERS)
    with pytest.raises(KeyError):
        headers["missing"]
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"


def test_headers_contains_and_len() -> None:
    headers = Headers(raw=RAW_HEADERS)
    assert len(headers) == 3
    assert "host" in headers
    assert "missing" not in headers
    assert 42 not in headers
    assert b"host" not in headers
    assert "€" not in headers
    assert len(Headers()) == 0


def test_headers_equality_ignores_order_and_needs_headers() -> None:
    forward = Headers(raw=RAW_HEADERS)
    backward = Headers(raw=list(reversed(RAW_HEADERS)))
    assert forward == backward
    assert forward != Headers(raw=RAW_HEADERS[:2])
    assert forward != dict(forward.items())


def test_headers_from_mapping_lowercases_names() -> None:
    headers = Headers(headers={"X-Token": "abc", "Host": "h"})
    assert headers.raw == [(b"x-token", b"abc"), (b"host", b"h")]
    assert headers["x-token"] == "abc"


def test_headers_from_scope() -> None:
    scope = make_scope(headers=tuple(RAW_HEADERS))
    headers = Headers(scope=scope)
    assert headers.raw == RAW_HEADERS
    assert headers["host"] == "example.org"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"a": "b"}, "raw": []},
        {"headers": {}, "scope": {"headers": []}},
        {"raw": [], "scope": {"headers": []}},
        {"headers": {}, "raw": [], "scope": {"headers": []}},
    ],
)
def test_headers_rejects_conflicting_constructor_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="at most one"):
        Headers(**kwargs)


def test_headers_repr() -> None:
    assert repr(Headers(raw=[(b"a", b"1")])) == "Headers({'a': '1'})"
    assert repr(Headers(raw=RAW_HEADERS)) == f"Headers(raw={RAW_HEADERS!r})"


# --- State ----------------------------------------------------------------------------------


def test_state_attribute_and_item_access_share_storage() -> None:
    state = State()
    state.user = "alice"
    assert state["user"] == "alice"
    state["room"] = 7
    assert state.room == 7
    assert "room" in state
    assert "missing" not in state
    assert sorted(state) == ["room", "user"]
    assert len(state) == 2
    del state.user
    del state["room"]
    assert len(state) == 0


def test_state_missing_attribute_error_names_class_and_key() -> None:
    state = State()
    with pytest.raises(AttributeError, match="'State' object has no attribute 'nope'"):
        _ = state.nope
    with pytest.raises(AttributeError, match="'nope'"):
        del state.nope
    with pytest.raises(KeyError):
        state["nope"]


def test_state_wraps_dict_so_writes_are_visible_in_scope() -> None:
    scope = make_scope(state={"db": "conn"})
    state = State(scope["state"])
    assert state.db == "conn"
    state.cache = {}
    assert scope["state"]["cache"] == {}
    scope["state"]["late"] = True
    assert state.late is True


def test_state_repr_and_copy() -> None:
    import copy

    state = State({"a": 1})
    assert repr(state) == "State({'a': 1})"
    assert copy.copy(state).a == 1


# --- Behavioural parity with Starlette (reference only; never imported by the library) ---

starlette_datastructures = pytest.importorskip("starlette.datastructures")

PARITY_SCOPES = [
    make_scope(),
    make_scope(headers=[(b"host", b"chat.example.com")]),
    make_scope(headers=[(b"host", b"chat.example.com:8080")]),
    make_scope(headers=[(b"host", b"[::1]:9000")]),
    make_scope(headers=[(b"host", b"bad/host")], server=("10.1.1.1", 8000)),
    make_scope(headers=[(b"host", b"h:70000")]),
    make_scope(headers=[(b"host", b"h:000080")]),
    make_scope(headers=[(b"host", b"[v1.fe]")]),
    make_scope(server=("::1", 8000)),
    make_scope(scheme="wss", server=("example.org", 443)),
    make_scope(scheme="wss", server=("example.org", 8443)),
    make_scope(scheme="https", server=("example.org", 443), path="/a b"),
    make_scope(scheme="http", server=("example.org", 80), query_string=b"x=1&y="),
    make_scope(server=None, path="//evil.test/x", query_string=b"q=1"),
    make_scope(server=None),
    make_scope(path="/a?b#c\\d", query_string=b"k=%20"),
    make_scope(path="", server=("h", 1234)),
]


@pytest.mark.parametrize("scope", PARITY_SCOPES)
def test_url_from_scope_matches_starlette(scope: dict[str, Any]) -> None:
    ours = URL(scope=scope)
    theirs = starlette_datastructures.URL(scope=scope)
    assert str(ours) == str(theirs)
    for name in ("scheme", "netloc", "path", "query", "hostname", "port", "is_secure"):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize(
    ("url", "changes"),
    [
        ("ws://u:p@h:1/p?q#f", {"port": 2}),
        ("ws://u:p@h:1/p", {"hostname": "::1"}),
        ("ws://[::1]:1/p", {"username": "x"}),
        ("ws://h/p", {"username": "x", "password": "y", "scheme": "wss"}),
        ("ws://u:p@h/p", {"password": None}),
    ],
)
def test_url_replace_matches_starlette(url: str, changes: dict[str, Any]) -> None:
    theirs = starlette_datastructures.URL(url).replace(**changes)
    assert URL(url).replace(**changes) == str(theirs)


@pytest.mark.parametrize("query", ["", "a=1&b=2&a=3", "x=&y", "s=a+b%2Bc", b"z=%FF&z=1"])
def test_query_params_match_starlette(query: str | bytes) -> None:
    ours = QueryParams(query)
    theirs = starlette_datastructures.QueryParams(query)
    assert ours.multi_items() == theirs.multi_items()
    assert dict(ours) == dict(theirs)
    assert str(ours) == str(theirs)
    assert repr(ours) == repr(theirs)
    for key in ours:
        assert ours.getlist(key) == theirs.getlist(key)


@pytest.mark.parametrize(
    "raw",
    [[], RAW_HEADERS, [(b"a", b"1"), (b"b", b"\xff")], [(b"x", b"1"), (b"x", b"2")]],
)
def test_headers_match_starlette(raw: list[tuple[bytes, bytes]]) -> None:
    ours = Headers(raw=raw)
    theirs = starlette_datastructures.Headers(raw=raw)
    assert ours.items() == theirs.items()
    assert ours.raw == theirs.raw
    assert len(ours) == len(theirs)
    assert repr(ours) == repr(theirs)
    for key in {"a", "X", "host", "Sec-WebSocket-Protocol", "missing"}:
        assert (key in ours) == (key in theirs)
        assert ours.getlist(key) == theirs.getlist(key)
        assert ours.get(key) == theirs.get(key)


def test_url_include_and_remove_query_params_match_starlette() -> None:
    url = "ws://h/p?a=1&b=2&a=3&c="
    theirs = starlette_datastructures.URL(url)
    assert URL(url).include_query_params(a=9, d=4) == str(theirs.include_query_params(a=9, d=4))
    assert URL(url).remove_query_params(["a", "c"]) == str(theirs.remove_query_params(["a", "c"]))
    assert URL(url).replace_query_params(z=1) == str(theirs.replace_query_params(z=1))


URL_PATHS = [
    ("/chat/a", "websocket", ""),
    ("/chat/a", "http", ""),
    ("/chat/a", "", ""),
    ("/chat/a", "websocket", "other.example:9000"),
    ("//example.org/a", "websocket", ""),
    ("///a", "", ""),
    ("/\\example.org/a", "websocket", ""),
    ("\\\\example.org", "http", ""),
    ("/a\\b/c d?e#f", "websocket", ""),
    ("", "websocket", ""),
]
BASES = ["http://example.org", "https://example.org:8443/api/", "wss://u:p@h/r?q=1#f", "ws://h"]


@pytest.mark.parametrize(("path", "protocol", "host"), URL_PATHS)
@pytest.mark.parametrize("base", BASES)
def test_urlpath_matches_starlette(path: str, protocol: Any, host: str, base: str) -> None:
    ours = URLPath(path, protocol, host)
    theirs = starlette_datastructures.URLPath(path, protocol, host)
    assert (str(ours), repr(ours), ours.protocol, ours.host) == (
        str(theirs),
        repr(theirs),
        theirs.protocol,
        theirs.host,
    )
    expected = str(theirs.make_absolute_url(base))
    assert ours.make_absolute_url(base) == expected
    assert ours.make_absolute_url(URL(base)) == expected
    made = ours.make_absolute_url(starlette_datastructures.URL(base))  # what Starlette's url_for passes
    assert isinstance(made, URL) and made == expected


def test_urlpath_is_a_str_and_never_scheme_relative() -> None:
    for path in ["//evil.example", "/\\evil.example", "/\\/evil.example", "/\t/evil.example", "/\r\n/x"]:
        built = URLPath(path)
        assert isinstance(built, str)
        assert not built.startswith("//") and "\\" not in built
        assert not any(c in built for c in "\t\r\n")
        assert URL(f"http://good.example{built}").hostname == "good.example"
