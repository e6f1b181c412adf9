"""``HTTPConnection``: what a handler reads from the ASGI scope, shared by every connection type.

As in Starlette, a connection is a read-only ``Mapping`` over its scope (``conn["path"]``), with
parsed views of it computed on first use and kept: ``url``, ``base_url``, ``headers``,
``query_params``, ``cookies``, ``client``, ``path_params`` and ``state``.  ``url_for`` builds the
URL of a named route; ``session``, ``auth`` and ``user`` read what Starlette's middleware put in
the scope, failing with Starlette's assertion messages when it is not installed.  ``WebSocket``
builds on it; nothing here waits or does I/O, so none of it can be cancelled or see a disconnect.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._types import Scope
from .datastructures import URL, Address, Headers, QueryParams, State

__all__ = ["HTTPConnection"]


class HTTPConnection(Mapping[str, Any]):
    """The request side of an ``http`` or ``websocket`` scope (Starlette's ``HTTPConnection``)."""

    def __init__(self, scope: Scope) -> None:
        if scope.get("type") not in ("http", "websocket"):
            kind = scope.get("type")
            raise ValueError(f'HTTPConnection needs an "http" or "websocket" scope, got type {kind!r}')
        self.scope = scope

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def app(self) -> Any:
        """``scope["app"]``: the application the server called (set by routers and by Starlette)."""
        return self.scope["app"]

    @property
    def url(self) -> URL:
        """The request's full URL (``ws://`` or ``wss://`` for a WebSocket), a ``str`` subclass.

        Built once from the scope: its scheme, host (the ``Host`` header, else the server's
        address), ``root_path`` (unless the server's ``path`` already starts with it) plus
        ``path``, and the query string.
        """
        if not hasattr(self, "_url"):
            self._url = URL(scope=self.scope)
        return self._url

    @property
    def base_url(self) -> URL:
        """The application's root URL (``app_root_path``, else ``root_path``, with a final ``/``).

        ``url_for`` builds on it.  Inside a mount the root is still the top-level app's, as
        in Starlette; the query string is dropped.
        """
        if not hasattr(self, "_base_url"):
            app_root: str = self.scope.get("app_root_path", self.scope.get("root_path", ""))
            root_scope = {
                **self.scope,
                "path": app_root if app_root.endswith("/") else app_root + "/",
                "query_string": b"",
                "root_path": app_root,
            }
            self._base_url = URL(scope=root_scope)
        return self._base_url

    @property
    def headers(self) -> Headers:
        """The handshake's headers, case-insensitive; duplicates kept (``getlist``)."""
        if not hasattr(self, "_headers"):
            self._headers = Headers(scope=self.scope)
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        """The query string, parsed; plain lookup gives a key's last value."""
        if not hasattr(self, "_query_params"):
            self._query_params = QueryParams(self.scope["query_string"])
        return self._query_params

    @property
    def path_params(self) -> dict[str, Any]:
        """The values a route's path took (``{room}``), converted by its convertors; ``{}`` unrouted."""
        return self.scope.get("path_params", {})  # type: ignore[no-any-return]

    @property
    def cookies(self) -> dict[str, str]:
        """The ``Cookie`` headers parsed into a dict, as Starlette parses them."""
        if not hasattr(self, "_cookies"):
            self._cookies = parse_cookies(self.headers.getlist("cookie"))
        return self._cookies

    @property
    def client(self) -> Address | None:
        """The client's ``(host, port)``, or ``None`` when the server does not say."""
        host_port = self.scope.get("client")
        return Address(*host_port) if host_port is not None else None

    @property
    def session(self) -> dict[str, Any]:
        """``scope["session"]``, set by Starlette's ``SessionMiddleware`` (marked as accessed)."""
        assert "session" in self.scope, "SessionMiddleware must be installed to access request.session"
        session = self.scope["session"]
        if hasattr(session, "mark_accessed"):  # a session from another middleware may lack it
            session.mark_accessed()
        return session  # type: ignore[no-any-return]

    @property
    def auth(self) -> Any:
        """``scope["auth"]``, set by Starlette's ``AuthenticationMiddleware``."""
        assert "auth" in self.scope, "AuthenticationMiddleware must be installed to access request.auth"
        return self.scope["auth"]

    @property
    def user(self) -> Any:
        """``scope["user"]``, set by Starlette's ``AuthenticationMiddleware``."""
        assert "user" in self.scope, "AuthenticationMiddleware must be installed to access request.user"
        return self.scope["user"]

    @property
    def state(self) -> State:
        """``scope["state"]`` as attributes: what the lifespan yielded, shared by every connection.

        It wraps the scope's dict: what a handler sets here is seen by everything holding the
        same scope (ASGI servers give each connection a shallow copy of the lifespan's state).
        """
        if not hasattr(self, "_state"):
            self._state = State(self.scope.setdefault("state", {}))
        return self._state

    def url_for(self, name: str, /, **path_params: Any) -> URL:
        """The absolute URL of the route called ``name``, below ``base_url``.

        The routes come from ``scope["router"]`` (set by ``Router`` and by Starlette's routers),
        else ``scope["app"]``; either may be ours or Starlette's.  A WebSocket route gets a
        ``ws``/``wss`` URL, an HTTP one ``http``/``https``.  Without either key it raises
        ``RuntimeError``; a name or parameters no route takes raise the provider's
        ``NoMatchFound``.
        """
        provider: Any = self.scope.get("router") or self.scope.get("app")
        if provider is None:
            raise RuntimeError(
                "The `url_for` method can only be used inside a Starlette application or with a router."
            )
        url = provider.url_path_for(name, **path_params).make_absolute_url(base_url=self.base_url)
        return url if isinstance(url, URL) else URL(str(url))


def parse_cookies(cookie_headers: list[str]) -> dict[str, str]:
    """The ``Cookie`` headers' pairs, as browsers send them (Starlette's lenient parsing)."""
    cookies: dict[str, str] = {}
    for header in cookie_headers:
        for chunk in header.split(";"):
            key, _, value = chunk.partition("=") if "=" in chunk else ("", "", chunk)
            key, value = key.strip(), value.strip()
            if key or value:
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                cookies[key] = value
    return cookies
