"""Small immutable helpers for reading ASGI scopes: URLs, query strings, headers and state."""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, Literal, NamedTuple, SupportsIndex, overload
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from trio_asgi_ws._types import Scope

__all__ = ["URL", "Address", "Headers", "QueryParams", "State", "URLPath"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_PATH_ESCAPES = str.maketrans({"?": "%3F", "#": "%23", "\\": "%5C"})
# Browsers read "\" as "/" and drop tabs and newlines anywhere in a URL: escaped in built paths.
_URL_PATH_ESCAPES = str.maketrans({"\\": "%5C", "\t": "%09", "\n": "%0A", "\r": "%0D"})
# RFC 3986 reg-name: unreserved, percent-encoded and sub-delimiter characters.
_REG_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=")
_MISSING = object()
_IP_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")


class Address(NamedTuple):
    """A ``(host, port)`` pair, as found in ``scope["client"]`` or ``scope["server"]``."""

    host: str
    port: int


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_ip_literal(text: str) -> bool:
    """Tell whether ``text`` (the inside of ``[...]``) is an IPv6 or IPvFuture literal."""
    # Zone ids ("%eth0") are valid for ipaddress but not inside a URL's host.
    return bool(_IP_FUTURE.fullmatch(text)) or ("%" not in text and _is_ipv6(text))


def _valid_host_header(value: str) -> bool:
    """Tell whether ``value`` is a plain ``host[:port]`` that cannot alter the URL's shape."""
    if value.startswith("["):
        literal, closed, rest = value[1:].partition("]")
        if not closed or not _is_ip_literal(literal):
            return False
    else:
        host = value.partition(":")[0]
        rest = value[len(host) :]
        if not host or not _REG_NAME_CHARS.issuperset(host):
            return False
    if not rest:
        return True
    port = rest[1:]
    if rest[0] != ":" or not port.isascii() or not port.isdigit():
        return False
    significant = port.lstrip("0")
    return len(significant) <= 5 and int(significant or "0") <= 65535


def _scope_netloc(scope: Scope, scheme: str) -> str | None:
    """Pick the authority from the first ``host`` header, falling back to ``scope["server"]``."""
    for name, value in scope.get("headers", ()):
        if bytes(name).lower() == b"host":
            host_header = bytes(value).decode("latin-1")
            if _valid_host_header(host_header):
                return host_header
            break
    server = scope.get("server")
    if server is None:
        return None
    host, port = server
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return str(host)
    return f"{host}:{port}"


def split_root_path(scope: Scope) -> tuple[str, str]:
    """``(root, below)``: the app's mount point and the request's path below it.

    ASGI servers differ on whether ``path`` already includes ``root_path``: a path that starts
    with the root (at a segment boundary) is taken to include it, any other is taken to be
    below it.  Either way the full path is ``root + below`` and the app's own path is
    ``below or "/"``.  The root never ends with ``/``.
    """
    path: str = scope["path"]
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return root, path[len(root) :]
    return root, path


def _url_from_scope(scope: Scope) -> str:
    scheme: str = scope.get("scheme", "http")
    root, below = split_root_path(scope)
    path = (root + below).translate(_PATH_ESCAPES)
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    netloc = _scope_netloc(scope, scheme)
    if netloc is not None:
        return SplitResult(scheme, netloc, path, query, "").geturl()
    if path.startswith("//"):  # without an authority, "//x" would be read as host "x"
        path = "/%2F" + path[2:]
    elif urlsplit(path).scheme:  # and a first segment "a:b" as scheme "a"
        first, slash, rest = path.partition("/")
        path = first.replace(":", "%3A") + slash + rest
    return f"{path}?{query}" if query else path


class URL(str):
    """A URL that *is* a ``str``, with parsed components and copy-with-changes helpers.

    Being a ``str`` lets it flow into any API expecting text while still offering
    structured access to the parts of a WebSocket or HTTP request URL.
    """

    def __new__(cls, url: str = "", *, scope: Scope | None = None, **components: Any) -> URL:
        if sum((bool(url), scope is not None, bool(components))) > 1:
            raise TypeError("URL() takes only one of a url string, scope= or component keywords")
        if scope is not None:
            url = _url_from_scope(scope)
        elif components:
            url = URL().replace(**components)
        return super().__new__(cls, url)

    @cached_property
    def components(self) -> SplitResult:
        """The parsed URL (``urllib.parse.urlsplit``), computed once."""
        return urlsplit(str(self))

    @property
    def scheme(self) -> str:
        """``ws``, ``wss``, ``http`` or ``https`` (empty for a relative URL)."""
        return self.components.scheme

    @property
    def netloc(self) -> str:
        """``host:port`` as written, with user information if any."""
        return self.components.netloc

    @property
    def path(self) -> str:
        """The path, percent-encoded as it was received."""
        return self.components.path

    @property
    def query(self) -> str:
        """The query string without ``?`` (empty when there is none)."""
        return self.components.query

    @property
    def fragment(self) -> str:
        """The fragment without ``#`` (browsers never send one to a server)."""
        return self.components.fragment

    @property
    def username(self) -> str | None:
        """The user name of ``user:password@host``, or ``None``."""
        return self.components.username

    @property
    def password(self) -> str | None:
        """The password of ``user:password@host``, or ``None``."""
        return self.components.password

    @property
    def hostname(self) -> str | None:
        """The host, lowercased, without brackets around an IPv6 address; ``None`` if absent."""
        return self.components.hostname

    @property
    def port(self) -> int | None:
        """The port written in the URL, or ``None`` when none is (the scheme's default applies)."""
        return self.components.port

    @property
    def is_secure(self) -> bool:
        """True for ``https`` and ``wss`` (TLS), as Starlette's ``URL.is_secure``."""
        return self.scheme in ("https", "wss")

    def _rebuild_netloc(self, changes: dict[str, Any]) -> str:
        host = changes.get("hostname")
        if host is None:  # keep the current host exactly as written, brackets included
            host = self.netloc.rpartition("@")[2]
            if not host.endswith("]"):
                host = host.rpartition(":")[0] or host
        elif ":" in host and not host.startswith("[") and _is_ipv6(host):
            host = f"[{host}]"
        port = changes.get("port", self.port)
        username = changes.get("username", self.username)
        password = changes.get("password", self.password)
        netloc = host if port is None else f"{host}:{port}"
        if username is None:
            return netloc
        userinfo = username if password is None else f"{username}:{password}"
        return f"{userinfo}@{netloc}"

    @overload
    def replace(self, old: str, new: str, count: SupportsIndex = -1, /) -> str: ...
    @overload
    def replace(self, **kwargs: Any) -> URL: ...
    def replace(self, *args: Any, **kwargs: Any) -> str:
        """Return a copy with SplitResult fields or username/password/hostname/port changed.

        Called positionally it is plain ``str.replace``, so a URL still works as a ``str``.
        """
        if args:
            if kwargs:
                raise TypeError("URL.replace() takes str.replace arguments or keywords, not both")
            return str(self).replace(*args)
        authority: dict[str, Any] = {
            key: kwargs.pop(key) for key in ("username", "password", "hostname", "port") if key in kwargs
        }
        if authority:
            kwargs["netloc"] = self._rebuild_netloc(authority)
        return URL(self.components._replace(**kwargs).geturl())

    def include_query_params(self, **kwargs: Any) -> URL:
        """Set the given parameters (replacing any existing values) and keep the others."""
        updates = {str(key): str(value) for key, value in kwargs.items()}
        pairs = parse_qsl(self.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k not in updates]
        return self.replace(query=urlencode(kept + list(updates.items())))

    def replace_query_params(self, **kwargs: Any) -> URL:
        """Discard the whole query and use the given parameters instead."""
        return self.replace(query=urlencode([(str(k), str(v)) for k, v in kwargs.items()]))

    def remove_query_params(self, keys: str | Sequence[str]) -> URL:
        """Drop every value of the given parameter name(s)."""
        unwanted = {keys} if isinstance(keys, str) else set(keys)
        pairs = parse_qsl(self.query, keep_blank_values=True)
        return self.replace(query=urlencode([(k, v) for k, v in pairs if k not in unwanted]))

    def __repr__(self) -> str:
        shown = self.replace(password="********") if self.password else self
        return f"{type(self).__name__}({str(shown)!r})"


class URLPath(str):
    """A path built by ``url_path_for``: a ``str`` that knows its protocol and can become a URL.

    ``protocol`` is ``"websocket"``, ``"http"`` or ``""`` (keep the base URL's scheme); ``host``,
    when set, replaces the base URL's host.  The path is made safe to use as a link: ``\\`` becomes
    ``%5C`` (browsers read it as ``/``), a leading ``//`` becomes ``/%2F`` (``//host/...`` is a
    scheme-relative URL, which a browser resolves to another host), and tabs and newlines, which
    browsers drop, are percent-encoded too, so no path made here names a host.  An unknown
    ``protocol`` raises ``ValueError``.
    """

    protocol: Literal["http", "websocket", ""]
    host: str

    def __new__(cls, path: str, protocol: Literal["http", "websocket", ""] = "", host: str = "") -> URLPath:
        if protocol not in ("http", "websocket", ""):
            raise ValueError(f"protocol must be 'http', 'websocket' or '', got {protocol!r}")
        path = path.translate(_URL_PATH_ESCAPES)
        if path.startswith("//"):
            path = "/%2F" + path[2:]
        self = super().__new__(cls, path)
        self.protocol = protocol
        self.host = host
        return self

    def make_absolute_url(self, base_url: str | object) -> URL:
        """This path below ``base_url`` (a ``URL``, a string, or any URL whose ``str`` is one).

        The scheme follows the protocol and whether the base is secure (``wss``/``ws`` for a
        WebSocket route, ``https``/``http`` for HTTP); the base's own path is kept as a prefix.
        """
        base = base_url if isinstance(base_url, URL) else URL(str(base_url))
        if self.protocol == "websocket":
            scheme = "wss" if base.is_secure else "ws"
        elif self.protocol == "http":
            scheme = "https" if base.is_secure else "http"
        else:
            scheme = base.scheme
        path = base.path.rstrip("/") + str(self)
        return URL(scheme=scheme, netloc=self.host or base.netloc, path=path)


_QuerySource = Mapping[Any, Any] | Iterable[tuple[Any, Any]] | str | bytes


class QueryParams(Mapping[str, str]):
    """An immutable multi-dict of query parameters; plain lookup gives the last value of a key.

    It keeps every value in order (for ``getlist``/``multi_items``) while behaving like a
    read-only ``dict`` for the common single-value case.
    """

    def __init__(self, source: _QuerySource | None = None, /, **extra: Any) -> None:
        if isinstance(source, bytes):
            source = source.decode("latin-1")
        pairs: list[tuple[Any, Any]]
        if isinstance(source, str):
            pairs = parse_qsl(source, keep_blank_values=True)
        elif isinstance(source, QueryParams):
            pairs = source.multi_items()
        elif isinstance(source, Mapping):
            pairs = list(source.items())
        else:
            pairs = list(source or ())
        pairs.extend(extra.items())
        self._pairs = [(str(key), str(value)) for key, value in pairs]
        self._last = dict(self._pairs)

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in order (``[]`` when it is absent)."""
        return [value for name, value in self._pairs if name == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every ``(key, value)`` pair, repeated keys included, in the order received."""
        return list(self._pairs)

    def __getitem__(self, key: str) -> str:
        return self._last[key]

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryParams):
            return NotImplemented
        return sorted(self._pairs) == sorted(other._pairs)

    def __str__(self) -> str:
        return urlencode(self._pairs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


def _header_key(key: object) -> bytes | None:
    """Normalise a lookup key to lowercase latin-1 bytes, or None if it cannot be a header."""
    if not isinstance(key, str):
        return None
    try:
        return key.lower().encode("latin-1")
    except UnicodeEncodeError:
        return None


class Headers(Mapping[str, str]):
    """An immutable, case-insensitive view of raw ASGI headers; lookup gives the first match.

    It wraps the ``(bytes, bytes)`` list an ASGI server provides so headers can be read
    as text without losing duplicates or their order.
    """

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        raw: Iterable[tuple[bytes, bytes]] | None = None,
        scope: Scope | None = None,
    ) -> None:
        if sum(arg is not None for arg in (headers, raw, scope)) > 1:
            raise TypeError("Headers() takes at most one of headers=, raw= or scope=")
        self._raw: list[tuple[bytes, bytes]]
        if headers is not None:
            self._raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        elif raw is not None:
            self._raw = list(raw)
        elif scope is not None:
            self._raw = list(scope["headers"])
        else:
            self._raw = []

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """A copy of the ASGI ``(name, value)`` byte pairs, duplicates and order kept."""
        return list(self._raw)

    def keys(self) -> list[str]:  # type: ignore[override]
        """Every header name as received (latin-1), one per header, duplicates included."""
        return [key.decode("latin-1") for key, _ in self._raw]

    def values(self) -> list[str]:  # type: ignore[override]
        """Every header value (latin-1), one per header, in order."""
        return [value.decode("latin-1") for _, value in self._raw]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every ``(name, value)`` pair as text, duplicates included, in order."""
        return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in self._raw]

    def getlist(self, key: str) -> list[str]:
        """Every value of the header ``key`` (case-insensitive), in order (``[]`` when absent)."""
        wanted = _header_key(key)
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == wanted]

    def __getitem__(self, key: str) -> str:
        wanted = _header_key(key)
        for name, value in self._raw:
            if name.lower() == wanted:
                return value.decode("latin-1")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        wanted = _header_key(key)
        return wanted is not None and any(name.lower() == wanted for name, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return sorted(self._raw) == sorted(other._raw)

    def __repr__(self) -> str:
        as_dict = dict(self.items())
        if len(as_dict) == len(self._raw):
            return f"{type(self).__name__}({as_dict!r})"
        return f"{type(self).__name__}(raw={self._raw!r})"


class State:
    """Attribute-style access to a plain dict, such as ``scope["state"]``.

    The dict is wrapped, not copied, so values set here are seen by everything else
    holding the same scope (lifespan handlers, middleware, the application).
    """

    _state: dict[str, Any]

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", {} if state is None else state)

    def _no_attribute(self, name: str) -> AttributeError:
        return AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getattr__(self, name: str) -> Any:
        if name == "_state":  # only on a half-built instance, e.g. inside copy.copy()
            raise self._no_attribute(name)
        try:
            return self._state[name]
        except KeyError:
            raise self._no_attribute(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __delattr__(self, name: str) -> None:
        if self._state.pop(name, _MISSING) is _MISSING:
            raise self._no_attribute(name)

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state!r})"
