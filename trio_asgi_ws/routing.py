"""Routing: WebSocket paths with typed parameters, the lifespan, and what unmatched requests get.

A ``Router`` is an ASGI app.  For a ``websocket`` scope it finds the first ``WebSocketRoute``
whose path matches, fills ``websocket.path_params`` with converted values and runs the endpoint
(in structured mode unless the route opts out).  An unmatched WebSocket is rejected before accept
(HTTP 403 under hypercorn); an HTTP request goes to ``default`` or gets a plain 404.  The
``lifespan`` scope is always answered, since hypercorn's ``serve()`` crashes on apps that ignore it.

Endpoint errors: ``WebSocketException(code, reason)`` closes with that code (before accept it
rejects the handshake); ``InvalidJSON`` (the client sent a frame that is not JSON to
``receive_json``) closes with 1007 and is logged on one line at INFO, without a traceback, since
it is the client's fault; any other exception closes with 1011 after accept or answers HTTP 500
before it, and is logged once, with its traceback, at ERROR on the ``trio_asgi_ws`` logger.
Nothing is re-raised to the server, so it never sees an ``ExceptionGroup`` from us.

Origins: a browser sends ``Origin`` with every WebSocket handshake, and cookies with it, so a page
on any site could open a socket to this app as its logged-in visitor (cross-site WebSocket
hijacking).  By default the router admits requests without ``Origin`` (not browsers) and
same-origin ones (``Origin`` names the scheme, host and port the request was sent to); others are
rejected before accept with HTTP 403.  ``allowed_origins=[...]`` admits more, ``"*"`` any.
"""

from __future__ import annotations

import inspect
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from ._types import ASGIApp, Receive, Scope, Send
from .datastructures import Headers, split_root_path
from .endpoints import WebSocketEndpoint
from .websockets import InvalidJSON, WebSocket, WebSocketClose, lifecycle

__all__ = [
    "Convertor",
    "Lifespan",
    "NoMatchFound",
    "Router",
    "WebSocketRoute",
]

logger = logging.getLogger("trio_asgi_ws")

_T = TypeVar("_T")
Endpoint = Callable[[WebSocket], Awaitable[None]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]
"""A factory taking the app and returning an async context manager; what it yields is state."""


class NoMatchFound(Exception):
    """``url_path_for`` found no route with that name taking exactly those parameters."""

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        listed = ", ".join(sorted(params))
        super().__init__(f'No route exists for name "{name}" and params "{listed}".')


class Convertor(Generic[_T]):
    """Turns one path segment into a value and back; ``regex`` says what it matches."""

    def __init__(self, regex: str, convert: Callable[[str], _T], to_string: Callable[[_T], str]) -> None:
        self.regex = regex
        self.convert = convert
        self.to_string = to_string


def _float_to_string(value: float) -> str:
    if value < 0 or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"float path parameters must be finite and non-negative, got {value!r}")
    return f"{value:0.20f}".rstrip("0").rstrip(".")


def _int_to_string(value: int) -> str:
    if value < 0:
        raise ValueError(f"int path parameters must be non-negative, got {value!r}")
    return str(value)


CONVERTORS: dict[str, Convertor[Any]] = {
    "str": Convertor("[^/]+", str, str),
    "path": Convertor(".*", str, str),
    "int": Convertor("[0-9]+", int, _int_to_string),
    "float": Convertor(r"[0-9]+(?:\.[0-9]+)?", float, _float_to_string),
    "uuid": Convertor(
        "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
        uuid.UUID,
        str,
    ),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


def compile_path(path: str) -> tuple[re.Pattern[str], str, dict[str, Convertor[Any]]]:
    """Compile ``/chat/{room}/{id:int}`` into a regex, a format string and the convertors."""
    if not path.startswith("/"):
        raise ValueError(f"route paths must start with '/', got {path!r}")
    regex, template, convertors = "^", "", {}
    position = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        if kind not in CONVERTORS:
            raise ValueError(f"unknown path convertor {kind!r} in {path!r}; known: {sorted(CONVERTORS)}")
        if name in convertors:
            raise ValueError(f"duplicated path parameter {name!r} in {path!r}")
        literal = path[position : match.start()]
        regex += re.escape(literal) + f"(?P<{name}>{CONVERTORS[kind].regex})"
        template += literal + "{" + name + "}"
        convertors[name] = CONVERTORS[kind]
        position = match.end()
    regex += re.escape(path[position:]) + "$"
    template += path[position:]
    return re.compile(regex), template, convertors


class OriginPolicy:
    """Which ``Origin`` headers may open a WebSocket: the defence against cross-site hijacking.

    Admitted: a request without ``Origin`` (browsers always send one, so this is not a browser,
    and cannot be riding on a visitor's cookies); a same-origin request, whose ``Origin`` is the
    scheme (``http`` for ``ws``, ``https`` for ``wss``), host and port of its own ``Host`` header;
    and the origins in ``allowed`` (``"*"``: any).  Comparison is case-insensitive, with default
    ports made explicit.  ``None`` in the list is accepted and changes nothing (a request without
    ``Origin`` is always admitted).  Behind a proxy that rewrites ``Host``, list the public origin.
    """

    def __init__(self, allowed: Sequence[str | None] = ()) -> None:
        if isinstance(allowed, str):
            raise TypeError("allowed_origins must be a list of origins, not a single string")
        self._any = "*" in allowed
        self._allowed = {_canonical_origin(origin) for origin in allowed if origin not in (None, "*")}

    def allows(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or self._any:
            return True
        canonical = _canonical_origin(origin)
        if canonical in self._allowed:
            return True
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        host = headers.get("host")
        return host is not None and canonical == _canonical_origin(f"{scheme}://{host}")


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _canonical_origin(origin: str) -> str:
    """``scheme://host:port`` in lower case with the port explicit; unparsable input as given."""
    text = origin.strip().lower().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not parts.hostname:
        return text
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


class WebSocketRoute:
    """A WebSocket endpoint at a path such as ``/chat/{room}`` or ``/item/{id:int}``.

    ``endpoint`` is ``async def endpoint(websocket)`` or a ``WebSocketEndpoint`` subclass.  With
    ``structured=True`` (the default) the endpoint runs inside ``async with websocket:``.
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint | type[WebSocketEndpoint],
        *,
        name: str | None = None,
        allowed_origins: Sequence[str | None] | None = None,
        structured: bool = True,
        websocket_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._endpoint_class: type[WebSocketEndpoint] | None = None
        self._endpoint_function: Endpoint | None = None
        if inspect.isclass(endpoint) and issubclass(endpoint, WebSocketEndpoint):
            self._endpoint_class = endpoint
        elif callable(endpoint) and not inspect.isclass(endpoint):
            self._endpoint_function = endpoint
        else:
            raise TypeError(f"endpoint must be an async function or a WebSocketEndpoint, got {endpoint!r}")
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", path)
        self.structured = structured
        self.websocket_options = dict(websocket_options or {})
        self.origins = OriginPolicy(allowed_origins) if allowed_origins is not None else None
        self.path_regex, self.path_format, self.convertors = compile_path(path)

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if ``path`` matches this route, else None."""
        found = self.path_regex.match(path)
        if found is None:
            return None
        return {key: self.convertors[key].convert(value) for key, value in found.groupdict().items()}

    def url_path_for(self, name: str, /, **params: Any) -> str:
        if name != self.name or set(params) != set(self.convertors):
            raise NoMatchFound(name, params)
        segments = {key: self.convertors[key].to_string(value) for key, value in params.items()}
        for key, text in segments.items():
            if "/" in text and self.convertors[key] is not CONVERTORS["path"]:
                raise ValueError(f"path parameter {key!r} may not contain '/', got {text!r}")
        return self.path_format.format(**segments)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send, **self.websocket_options)
        ending = lifecycle(websocket)
        try:
            async with websocket if self.structured else ending.plain_block():
                await self._call_endpoint(websocket)
        except Exception as error:
            if isinstance(error, InvalidJSON):
                logger.info(
                    "Closed WebSocket %s with 1007: the client sent invalid JSON (%s)",
                    scope.get("path"),
                    error,
                )
            elif ending.close_for(error)[0] == 1011:
                logger.error(
                    "Error in WebSocket endpoint %s for %s\n%s",
                    self.name,
                    scope.get("path"),
                    "".join(traceback.format_exception(error)),
                )

    async def _call_endpoint(self, websocket: WebSocket) -> None:
        if self._endpoint_class is not None:
            await self._endpoint_class(websocket.scope, websocket.receive, websocket.send).dispatch(websocket)
        elif self._endpoint_function is not None:
            await self._endpoint_function(websocket)


class Router:
    """An ASGI app routing WebSockets by path, answering the lifespan, and passing HTTP on."""

    def __init__(
        self,
        routes: Sequence[WebSocketRoute] = (),
        *,
        lifespan: Lifespan | None = None,
        default: ASGIApp | None = None,
        allowed_origins: Sequence[str | None] | None = None,
    ) -> None:
        self.routes = list(routes)
        self.lifespan_context: Lifespan = lifespan if lifespan is not None else _no_lifespan
        self.default = default
        self.origins = OriginPolicy(allowed_origins or ())

    def add_websocket_route(
        self, path: str, endpoint: Endpoint | type[WebSocketEndpoint], **options: Any
    ) -> WebSocketRoute:
        route = WebSocketRoute(path, endpoint, **options)
        self.routes.append(route)
        return route

    def websocket(self, path: str, **options: Any) -> Callable[[_E], _E]:
        """Decorator form: ``@router.websocket("/chat/{room}")`` above ``async def chat(ws)``."""

        def register(endpoint: _E) -> _E:
            self.add_websocket_route(path, endpoint, **options)
            return endpoint

        return register

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called ``name`` with ``params`` filled in."""
        for route in self.routes:
            try:
                return route.url_path_for(name, **params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, params)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("router", self)
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.default is not None:
            await self.default(scope, receive, send)
        else:
            await _not_found(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = split_root_path(scope)[1] or "/"
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            scope["path_params"] = {**scope.get("path_params", {}), **params}
            origins = route.origins or self.origins
            if not origins.allows(scope):
                logger.info("Rejected WebSocket %s from origin %r", path, Headers(scope=scope).get("origin"))
                await WebSocketClose()(scope, receive, send)
                return
            await route.handle(scope, receive, send)
            return
        await WebSocketClose()(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app", self)
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.lifespan_context(app) as state:
                if state:
                    if "state" not in scope:
                        raise RuntimeError('The server does not support "state" in the lifespan scope.')
                    scope["state"].update(state)
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except Exception as error:
            text = "".join(traceback.format_exception(error))
            logger.error("Lifespan %s failed\n%s", "shutdown" if started else "startup", text)
            kind = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": kind, "message": text})
            return
        await send({"type": "lifespan.shutdown.complete"})


_E = TypeVar("_E", bound=Callable[..., Any])


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield None


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    body = b"Not Found"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
